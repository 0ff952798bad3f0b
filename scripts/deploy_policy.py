"""What a production deployment of the hub must get right, checked on plain data: rendered
Kubernetes objects (from the chart or a kustomize build), the Dockerfile, the compose file and the
nginx configuration. Used by scripts/validate_deploy.py; standard library and PyYAML only.

Each `check_*` function returns a list of problems (empty: fine). The rules, and why:

- Rollouts that do not stampede: maxUnavailable 0; either minReadySeconds covers an old pod's
  preStop sleep and drain window (so two old pods never drain at once: Kubernetes does not count
  terminating pods against maxSurge), or maxSurge replaces every pod at once (each client moves
  once). terminationGracePeriodSeconds exceeds preStop + drain + the hub's own shutdown grace
  (after the drain it waits that long for the last connections, then publishes the end of its
  subscriptions), so SIGKILL never cuts that short.
- A Deployment an HPA scales has no `replicas` (every apply would reset the fleet).
- Internal endpoints stay internal: probes use the metrics listener (its accept queue is not
  the one a reconnection storm fills); no Ingress or HTTPRoute path reaches /metrics, /healthz,
  /readyz or the debug page at /; a Service that is not a ClusterIP does not expose the metrics
  port.
- Streams survive the path: HTTPRoute rules have `timeouts.request: 0s`; ingress-nginx gets the
  SSE annotations and a body limit equal to the hub's.
- Hub pods do not get Service links (QUICKSILVER_* variables injected by Kubernetes).
- Redis: a pinned image, probes that require PONG, maxmemory under the memory limit.
- Containers: the image's HEALTHCHECK runs the binary, not a shell; compose has no fallback key,
  checks health with the binary and PONG, and stops later than the hub's drain; nginx routes the
  hub's public paths only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# The hub's public paths: the Mercure endpoint (the subscription API lives under it) and its
# protected resource metadata document.
HUB_PATH = "/.well-known/mercure"
METADATA_PATH = "/.well-known/oauth-protected-resource/.well-known/mercure"
# What must never be routed from outside: metrics, health, and the debug page at "/".
INTERNAL_PATHS = ("/metrics", "/healthz", "/readyz", "/")

SSE_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "86400",
    "nginx.ingress.kubernetes.io/proxy-http-version": "1.1",
}
NGINX_BODY_SIZE = "nginx.ingress.kubernetes.io/proxy-body-size"


def hub_shutdown_grace(root: Path) -> int:
    """The hub's SHUTDOWN_GRACE in seconds, read from the server crate's source (so the rule
    follows the code). Raises when it cannot be found: this check must then be updated."""
    pattern = re.compile(r"SHUTDOWN_GRACE:\s*Duration\s*=\s*Duration::from_secs\((\d+)\)")
    for path in sorted((root / "crates" / "server" / "src").rglob("*.rs")):
        m = pattern.search(path.read_text())
        if m:
            return int(m.group(1))
    raise ValueError("SHUTDOWN_GRACE not found in crates/server/src: update deploy_policy.hub_shutdown_grace")


def duration_seconds(text: Any) -> float:
    """`30s`, `1m`, `1h 30m`, `250ms`, or a bare number of seconds."""
    total, rest = 0.0, str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", rest):
        if unit not in units:
            raise ValueError(f"cannot read duration {text!r}")
        total += float(number) * units[unit]
    return total


def memory_bytes(text: Any) -> int:
    """A Kubernetes memory quantity (`512Mi`, `1G`, `1048576`) or a Redis size (`256mb`, `1gb`)."""
    m = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", str(text).strip())
    if not m:
        raise ValueError(f"cannot read memory size {text!r}")
    units = {"": 1, "k": 1000, "Ki": 1024, "M": 10**6, "Mi": 2**20, "G": 10**9, "Gi": 2**30,
             "T": 10**12, "Ti": 2**40, "kb": 1024, "mb": 2**20, "gb": 2**30}
    unit = m.group(2)
    if unit not in units and unit.lower() in units:
        unit = unit.lower()
    if unit not in units:
        raise ValueError(f"unknown unit in {text!r}")
    return int(m.group(1)) * units[unit]


def ident(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def selects(selector: dict | None, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def hub_deployment(docs: list[dict]) -> dict | None:
    return next((d for d in by_kind(docs, "Deployment")
                 if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "hub"),
                None)


def container_env(docs: list[dict], container: dict) -> dict[str, Any]:
    """The container's environment: its ConfigMaps (envFrom) and its own `env` (values, or a
    marker for values from Secrets)."""
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind(docs, "ConfigMap")}
    env: dict[str, Any] = {}
    for src in container.get("envFrom") or []:
        env.update(configmaps.get((src.get("configMapRef") or {}).get("name"), {}))
    env.update({e["name"]: e.get("value", "<from a Secret>") for e in container.get("env") or []})
    return env


def pre_stop_seconds(container: dict) -> int | None:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = (pre_stop.get("exec") or {}).get("command") or []
    if command[:1] == ["/bin/sleep"] and len(command) == 2:
        return int(command[1])
    return None


def port_reached(path: str, match_type: str, target: str) -> bool:
    """Whether a route path of the given type would send a request for `target` to the hub."""
    if match_type in ("Exact",):
        return path == target
    # Prefix / PathPrefix / ImplementationSpecific: element-wise prefix (`/` matches everything).
    prefix = path.rstrip("/")
    return prefix == "" or target == prefix or target.startswith(prefix + "/")


# --------------------------------------------------------------------------------------------
# The hub's Deployment and what routes to it
# --------------------------------------------------------------------------------------------

def check_hub(docs: list[dict], shutdown_grace: int) -> list[str]:
    """Rollout, stopping, probes, Service links and exposure of the hub's pods."""
    hub = hub_deployment(docs)
    if hub is None:
        return ["no hub Deployment (label app.kubernetes.io/component=hub)"]
    problems = []
    name = ident(hub)
    spec = hub["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = container_env(docs, container)

    hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == hub["metadata"]["name"]]
    if hpas and "replicas" in spec:
        problems.append(f"{name}: sets replicas while {ident(hpas[0])} scales it: every apply resets the fleet")

    # Stopping: preStop, drain window, the hub's own shutdown grace, then SIGKILL.
    pre_stop = pre_stop_seconds(container)
    drain = duration_seconds(env.get("QUICKSILVER_DRAIN_WINDOW", "30s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if pre_stop is None:
        problems.append(f"{name}: no preStop sleep (proxies keep routing to a stopping pod)")
        pre_stop = 0
    if grace <= pre_stop + drain + shutdown_grace:
        problems.append(f"{name}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop}s + drain "
                        f"{drain:g}s + the hub's shutdown grace {shutdown_grace}s: SIGKILL can cut "
                        "the end of the subscriptions short")

    # Rollouts: new pods first, and old pods never draining onto each other.
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        if str(rolling.get("maxUnavailable", "25%")) not in ("0", "0%"):
            problems.append(f"{name}: maxUnavailable must be 0 (a pod drains only once its "
                            "replacement is ready)")
        surge = str(rolling.get("maxSurge", "25%"))
        pods = max([spec.get("replicas", 1)] + [h["spec"].get("minReplicas", 1) for h in hpas])
        all_at_once = surge == "100%" or (surge.isdigit() and int(surge) >= pods and not hpas)
        min_ready = spec.get("minReadySeconds", 0)
        if not all_at_once and min_ready < pre_stop + drain:
            problems.append(f"{name}: minReadySeconds {min_ready} < preStop {pre_stop}s + drain "
                            f"{drain:g}s with maxSurge {surge}: old pods drain at the same time "
                            "and their clients land on pods about to drain")

    # Probes on the metrics listener.
    metrics_addr = env.get("QUICKSILVER_METRICS_ADDR")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    if not metrics_addr:
        problems.append(f"{name}: no QUICKSILVER_METRICS_ADDR (probes and scrapes need their own listener)")
    else:
        metrics_port = int(str(metrics_addr).rsplit(":", 1)[1])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = (container.get(probe) or {}).get("httpGet")
            if not get:
                continue
            port = ports.get(get["port"], get["port"])
            if port != metrics_port:
                problems.append(f"{name}: {probe} on port {get['port']}, not the metrics port "
                                f"{metrics_port} (the main port's accept queue fills in a storm)")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if ((container.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                problems.append(f"{name}: {probe} is not GET {path}")
        # Only ClusterIP Services may expose the metrics port.
        for svc in by_kind(docs, "Service"):
            if svc["spec"].get("type", "ClusterIP") == "ClusterIP":
                continue
            if not selects(svc["spec"].get("selector"), spec["template"]["metadata"]["labels"]):
                continue
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if ports.get(target, target) == metrics_port:
                    problems.append(f"{ident(svc)}: a {svc['spec']['type']} Service exposes the metrics port")

    if pod.get("enableServiceLinks", True):
        problems.append(f"{name}: enableServiceLinks must be false (Kubernetes would inject "
                        "QUICKSILVER_* variables for the release's Services)")
    return problems


def check_routes(docs: list[dict]) -> list[str]:
    """Ingress and HTTPRoute objects: hub paths only, stream-friendly settings."""
    problems = []
    hub = hub_deployment(docs)
    env = container_env(docs, hub["spec"]["template"]["spec"]["containers"][0]) if hub else {}
    body_limit = str(env.get("QUICKSILVER_MAX_BODY_SIZE", 1024 * 1024))
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}

    def internal(path: str, match_type: str, where: str) -> None:
        for target in INTERNAL_PATHS:
            if port_reached(path, match_type, target):
                problems.append(f"{where}: path {path} ({match_type}) routes {target} from outside")

    for ing in by_kind(docs, "Ingress"):
        annotations = ing["metadata"].get("annotations") or {}
        nginx = any(k.startswith("nginx.ingress.kubernetes.io/") for k in annotations)
        if nginx:
            for k, v in SSE_ANNOTATIONS.items():
                if annotations.get(k) != v:
                    problems.append(f"{ident(ing)}: annotation {k}: {v!r} expected for SSE")
            if annotations.get(NGINX_BODY_SIZE) != body_limit:
                problems.append(f"{ident(ing)}: {NGINX_BODY_SIZE} {annotations.get(NGINX_BODY_SIZE)!r}, "
                                f"the hub accepts {body_limit} bytes")
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                internal(p["path"], p.get("pathType", "Prefix"), ident(ing))
                svc = p["backend"]["service"]
                if svc["name"] not in services:
                    problems.append(f"{ident(ing)}: backend Service {svc['name']} not defined")
                elif svc["port"].get("name") not in {x.get("name") for x in services[svc["name"]]["spec"]["ports"]}:
                    problems.append(f"{ident(ing)}: backend port {svc['port']} not on the Service")

    for route in by_kind(docs, "HTTPRoute"):
        spec = route.get("spec") or {}
        if not spec.get("parentRefs"):
            problems.append(f"{ident(route)}: no parentRefs")
        for rule in spec.get("rules") or []:
            if (rule.get("timeouts") or {}).get("request") != "0s":
                problems.append(f"{ident(route)}: timeouts.request must be 0s (gateways cut streams "
                                "at their default request timeout)")
            for match in rule.get("matches") or [{}]:
                path = (match.get("path") or {"type": "PathPrefix", "value": "/"})
                internal(path["value"], path.get("type", "PathPrefix"), ident(route))
            for ref in rule.get("backendRefs") or []:
                svc = services.get(ref["name"])
                if svc is None:
                    problems.append(f"{ident(route)}: backend Service {ref['name']} not defined")
                elif ref.get("port") not in {p["port"] for p in svc["spec"]["ports"]}:
                    problems.append(f"{ident(route)}: backend port {ref.get('port')} not on {ident(svc)}")
    return problems


def check_redis(docs: list[dict]) -> list[str]:
    """The bundled Redis, when there is one."""
    problems = []
    for sts in by_kind(docs, "StatefulSet"):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") != "redis":
            continue
        name = ident(sts)
        pod = sts["spec"]["template"]["spec"]
        c = pod["containers"][0]
        image, _, tag = c["image"].rpartition(":")
        if not re.match(r"^\d+\.\d+\.\d+", tag) and "@sha256:" not in c["image"]:
            problems.append(f"{name}: image {c['image']} is not pinned to a patch release")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = " ".join(((c.get(probe) or {}).get("exec") or {}).get("command") or [])
            if "PONG" not in command:
                problems.append(f"{name}: {probe} does not check for PONG (redis-cli exits 0 on "
                                "LOADING and NOAUTH)")
        args = c.get("args") or []
        limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        maxmemory = args[args.index("--maxmemory") + 1] if "--maxmemory" in args else None
        if limit and maxmemory is None:
            problems.append(f"{name}: memory limit {limit} but no --maxmemory: the kernel kills Redis "
                            "instead of Redis refusing writes")
        if limit and maxmemory is not None and memory_bytes(maxmemory) >= memory_bytes(limit):
            problems.append(f"{name}: --maxmemory {maxmemory} not under the memory limit {limit}")
        if "--maxmemory-policy" not in args or args[args.index("--maxmemory-policy") + 1] != "noeviction":
            problems.append(f"{name}: maxmemory-policy must be noeviction (evicted streams lose history silently)")
        if pod.get("enableServiceLinks", True):
            problems.append(f"{name}: enableServiceLinks must be false")
    return problems


# --------------------------------------------------------------------------------------------
# Containers outside Kubernetes
# --------------------------------------------------------------------------------------------

def dockerfile_runtime(text: str) -> tuple[dict[str, str], list[str] | None, list[str]]:
    """(ENV of the last stage, HEALTHCHECK command in exec form or None, EXPOSEd ports)."""
    joined = text.replace("\\\n", " ")
    stage = re.split(r"(?m)^FROM\s", joined)[-1]
    env, healthcheck, exposed = {}, None, []
    for line in stage.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for pair in line[4:].split():
                k, _, v = pair.partition("=")
                env[k] = v
        elif line.startswith("EXPOSE "):
            exposed += line[7:].split()
        elif line.startswith("HEALTHCHECK "):
            _, _, cmd = line.partition(" CMD ")
            try:
                healthcheck = json.loads(cmd.strip())
            except json.JSONDecodeError:
                healthcheck = ["(shell form)", cmd.strip()]
    return env, healthcheck, exposed


def check_dockerfile(text: str) -> list[str]:
    env, healthcheck, exposed = dockerfile_runtime(text)
    problems = []
    if healthcheck is None:
        problems.append("Dockerfile: no HEALTHCHECK in the runtime stage")
    elif not (healthcheck[0].endswith("/quicksilver") and healthcheck[1:2] == ["healthcheck"]):
        problems.append(f"Dockerfile: HEALTHCHECK must run `quicksilver healthcheck` in exec form "
                        f"(no shell: dash has no /dev/tcp, distroless has no shell), not {healthcheck}")
    metrics = env.get("QUICKSILVER_METRICS_ADDR")
    if not metrics:
        problems.append("Dockerfile: QUICKSILVER_METRICS_ADDR not set (health checks need their own listener)")
    elif metrics.rsplit(":", 1)[1] not in exposed:
        problems.append(f"Dockerfile: the metrics port of {metrics} is not EXPOSEd")
    return problems


def check_compose(data: dict, drain_default: float, shutdown_grace: int) -> list[str]:
    problems = []
    services = data.get("services") or {}
    hubs = {n: s for n, s in services.items()
            if (s.get("environment") or {}).get("QUICKSILVER_TRANSPORT") == "redis"}
    if not hubs:
        return ["compose: no hub service (QUICKSILVER_TRANSPORT=redis)"]
    for n, s in hubs.items():
        env = s.get("environment") or {}
        for key in ("MERCURE_PUBLISHER_JWT_KEY", "MERCURE_SUBSCRIBER_JWT_KEY"):
            value = str(env.get(key, ""))
            if not re.fullmatch(r"\$\{" + key + r":\?[^}]*\}", value):
                problems.append(f"compose {n}: {key} must be required (${{{key}:?…}}), "
                                f"never a fallback: {value!r}")
        test = [str(t) for t in (s.get("healthcheck") or {}).get("test") or []]
        if not (len(test) >= 3 and test[0] == "CMD" and test[1].endswith("/quicksilver")
                and test[2] == "healthcheck"):
            problems.append(f"compose {n}: healthcheck must run the binary's `healthcheck`: {test}")
        drain = duration_seconds(env.get("QUICKSILVER_DRAIN_WINDOW", drain_default))
        stop = duration_seconds(s.get("stop_grace_period", "10s"))
        if stop <= drain + shutdown_grace:
            problems.append(f"compose {n}: stop_grace_period {stop:g}s <= drain {drain:g}s + "
                            f"shutdown grace {shutdown_grace}s")
    redis = services.get("redis") or {}
    tag = str(redis.get("image", "")).rpartition(":")[2]
    if not re.match(r"^\d+\.\d+\.\d+", tag):
        problems.append(f"compose redis: image {redis.get('image')} is not pinned to a patch release")
    if "PONG" not in " ".join(map(str, (redis.get("healthcheck") or {}).get("test") or [])):
        problems.append("compose redis: healthcheck does not check for PONG")
    for n, s in services.items():
        if "nginx" not in str(s.get("image", "")):
            continue
        deps = s.get("depends_on") or {}
        for hub in hubs:
            if not (isinstance(deps, dict) and (deps.get(hub) or {}).get("condition") == "service_healthy"):
                problems.append(f"compose {n}: must wait for {hub} to be healthy")
    return problems


LOCATION = re.compile(r"^\s*location\s+(=\s*|\^~\s*|~\*?\s*)?(\S+)\s*\{", re.M)


def check_nginx(configs: dict[str, str]) -> list[str]:
    """nginx locations: the hub path (prefix), the metadata document (exact), and `/` only to
    refuse everything else."""
    problems = []
    for name, text in configs.items():
        for m in LOCATION.finditer(text):
            modifier, path = (m.group(1) or "").strip(), m.group(2)
            block = text[m.end():text.index("}", m.end())]
            if (modifier, path) in (("", HUB_PATH), ("=", METADATA_PATH)):
                continue
            if (modifier, path) == ("", "/") and re.search(r"return\s+404\s*;", block):
                continue
            problems.append(f"{name}: location {modifier + ' ' if modifier else ''}{path} routes more "
                            "than the hub's public paths")
    return problems
