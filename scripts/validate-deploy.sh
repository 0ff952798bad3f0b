#!/usr/bin/env bash
# Offline checks of the Kubernetes deployment files (helm/quicksilver and k8s/): lint, renders,
# schema validation, rejected values, kustomize overlay. No cluster, no helm binary.
#
#   scripts/validate-deploy.sh            # all checks; exit status 0 when all pass
#   scripts/validate-deploy.sh --dump DIR # also write the rendered manifests to DIR
#
# Uses a virtualenv in .tmp/venv-deploy with the pinned packages of deploy/requirements.txt,
# created on first use (re-installed when that file changes). On a fresh Debian machine, run as
# root once so that python3-venv can be installed if the venv module is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=.tmp/venv-deploy
requirements=deploy/requirements.txt
python=${PYTHON:-python3}

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "validate-deploy: missing $*; install it (e.g. apt-get install $*) or run as root" >&2
        exit 1
    fi
    echo "validate-deploy: installing $* with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v "$python" >/dev/null; then
    apt_install python3 python3-venv
    python=python3
fi

# A complete venv has its own pip; a half-made one (venv module without ensurepip) is redone.
if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    # Debian splits ensurepip (which venv needs) into python3-venv.
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    mkdir -p .tmp
    "$python" -m venv "$venv"
fi

stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "validate-deploy: installing $requirements into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

exec "$venv/bin/python" scripts/validate_deploy.py "$@"
