#!/usr/bin/env python3
"""Offline checks of the deployment files: the Helm chart (helm/quicksilver), the plain manifests
(k8s/), the Dockerfile, docker-compose.cluster.yml and the nginx configuration. No cluster, no
`helm` binary, no Docker engine, no network.

What runs, in order (each line of the summary is one check):
  1. values.yaml: every key documented by a `# --` comment (on itself or an ancestor), and every
     documented key listed in the chart README's values table.
  2. `helm lint` of the chart (Helm's own engine, from the helm-python-sdk wheel), strict.
  3. Renders with the default values and with the value sets below; each rendered document must
     parse (duplicate YAML keys refused), pass kubernetes-validate's strict schemas for the oldest
     Kubernetes the chart supports and the newest known, hang together (selectors match pod
     labels, references point at rendered objects) and follow the production policy of
     scripts/deploy_policy.py (rollouts, stopping, probes on the metrics port, internal endpoints
     never routed, stream-friendly routes, the bundled Redis). Each set has expectations of its own.
     Kinds from CRDs (ServiceMonitor, HTTPRoute) have no bundled schema: they are checked by hand.
  4. Invalid value sets: the render must fail (schema or the chart's own `fail` checks).
  5. k8s/base and k8s/redis are the chart rendered with k8s/values.yaml: they must be exactly what
     a fresh render gives (`--write-k8s` rewrites them). Then k8s/base alone, and
     k8s/overlays/example built as kustomize would (with `kustomize` or `kubectl kustomize` when
     one is installed, and always with the small builder below, which handles resources,
     namespace, images and strategic-merge patches; both outputs must agree), get the checks of 3.
  6. The Dockerfile, the compose file and the nginx location blocks against the same policy.
  7. When a quicksilver binary is at hand (target/release or target/debug, or $QUICKSILVER_BIN):
     every QUICKSILVER_*/MERCURE_* variable the files set is one it knows; every setting it has is
     reachable from the chart's values; the README's configuration table lists exactly its flags
     with their variables.

Exit status 0 when every check passed; the last line reads "N passed, N failed".
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

import helm_python as helm
import kubernetes_validate as kv
from kubernetes_validate.utils import SchemaNotFoundError

import deploy_policy as policy

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "quicksilver"
K8S = ROOT / "k8s"
RELEASE = "qs"
NAMESPACE = "mercure"

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBE_VERSIONS = ["1.27", kv.utils.major_minor(kv.utils.latest_version())]

# Variables the chart sets that are read by the OpenTelemetry SDK, not by a flag (step 7).
SDK_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}

# Settings of the binary the chart has no value for, on purpose (step 7): the chart always sets
# the publisher's and the subscriber's key separately, and the listen address from hub.port
# (SERVER_NAME is the reference hub's image's way of setting it).
# The admin key (and its algorithm) that turns revocation on is kept out of the chart's Secret on
# purpose: it must never sit beside the publisher and subscriber keys; the README says to give it
# from a Secret of its own through hub.extraEnvFrom.
NOT_IN_CHART = {"MERCURE_JWT_KEY", "MERCURE_JWT_ALG", "SERVER_NAME",
                "QUICKSILVER_ADMIN_JWT_KEY", "QUICKSILVER_ADMIN_JWT_ALG"}

# The hub's own grace after its drain (crates/server: SHUTDOWN_GRACE), for the stopping rules.
SHUTDOWN_GRACE = policy.hub_shutdown_grace(ROOT)


# --------------------------------------------------------------------------------------------
# Value sets
# --------------------------------------------------------------------------------------------

# Valid sets: name -> (values, kube versions to validate against, expectations on the output).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {"values": {}},
    # A: an external Redis whose URL lives in an existing Secret, three pods, keys given, one extra
    # pod at a time during rollouts (minReadySeconds then keeps drains apart).
    "A-external-redis": {
        "values": {
            "replicaCount": 3,
            "redis": {"enabled": False},
            "externalRedis": {"existingSecret": "my-redis", "existingSecretUrlKey": "url"},
            "auth": {"existingSecret": "my-jwt"},
            "hub": {"redisTransport": {"partitions": 4}, "corsOrigins": ["https://app.example.com"]},
            "podAntiAffinity": "hard",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        },
    },
    # B: Ingress (default paths on one host, own paths on another), HPA on CPU and subscribers,
    # ServiceMonitor, bundled Redis with an explicit maxmemory and no PVC, OTLP, a TOML file, a
    # bigger body limit, the built-in preStop sleep action (Kubernetes 1.30+).
    "B-ingress-hpa-monitor": {
        "values": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "hosts": [{"host": "mercure.example.com"},
                          {"host": "hub.example.org",
                           "paths": [{"path": "/.well-known/mercure", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "mercure-tls", "hosts": ["mercure.example.com"]}],
            },
            "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                            "targetMemoryUtilizationPercentage": 80, "targetSubscribersPerPod": 5000},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "redis": {"enabled": True, "persistence": {"enabled": False}, "maxmemory": "256mb"},
            "hub": {"metrics": {"port": 9100}, "otel": {"endpoint": "http://otel-collector:4317"},
                    "maxConnections": 50000, "maxSubscribers": 40000,
                    "publicUrls": ["https://mercure.example.com"],
                    "configFile": "# quicksilver.toml\n",
                    "maxBodySize": 4194304, "historyCacheSize": 5000, "shards": 4,
                    "issuers": ["https://id.example.com jwks_uri=https://id.example.com/jwks.json"],
                    "resourceIdentifier": "https://mercure.example.com/.well-known/mercure",
                    "publishOrigins": ["https://app.example.com"]},
            "auth": {"publisherJwtKey": "publisher-secret", "subscriberJwtKey": "subscriber-secret"},
            "lifecycle": {"useSleepAction": True},
        },
        "kube_versions": ["1.30", kv.utils.major_minor(kv.utils.latest_version())],
    },
    # C: a single node, in-memory transport, no Redis at all.
    "C-single-memory": {
        "values": {"replicaCount": 1, "hub": {"transport": "memory"}, "redis": {"enabled": False},
                   "podDisruptionBudget": {"enabled": False}},
    },
    # D: Gateway API route, an external Redis over TLS with its CA mounted from a Secret, metrics
    # reachable from the monitoring namespace only, a LoadBalancer Service.
    "D-gateway-tls-redis": {
        "values": {
            "redis": {"enabled": False},
            "externalRedis": {"url": "rediss://:secret@redis.example.com:6380"},
            "hub": {"redisTransport": {"tlsCaFile": "/etc/redis-ca/ca.crt"}},
            "extraVolumes": [{"name": "redis-ca", "secret": {"secretName": "redis-ca"}}],
            "extraVolumeMounts": [{"name": "redis-ca", "mountPath": "/etc/redis-ca", "readOnly": True}],
            "httpRoute": {"enabled": True,
                          "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
                          "hostnames": ["mercure.example.com"]},
            "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "monitoring"}}}]},
            "service": {"type": "LoadBalancer"},
        },
    },
    # E: a values file written for the reference hub's chart (dunglas/mercure charts/mercure), its
    # names and its Caddy-specific keys as they come, on this chart's defaults otherwise.
    "E-reference-chart-values": {
        "values": {
            "publisherJwtKey": "publisher-secret", "publisherJwtAlg": "HS256",
            "subscriberJwtKey": "subscriber-secret", "subscriberJwtAlg": "HS256",
            "extraDirectives": "cors_origins https://app.example.com\nanonymous\ndebugger\nheartbeat 15s",
            "extraEnvs": [{"name": "TZ", "value": "UTC"}],
            "globalOptions": "", "caddyExtraConfig": "", "caddyExtraDirectives": "", "transportUrl": "",
            "license": "", "adminPort": 2019,
            "healthCheck": {"enabled": True, "readiness": {"periodSeconds": 5}},
            "metrics": {"enabled": False, "port": 2019, "serviceMonitor": {"enabled": True}},
            "terminationGracePeriodSeconds": 660, "progressDeadlineSeconds": 1800,
            "deployment": {"annotations": {"example.com/team": "realtime"}},
            "service": {"type": "NodePort", "port": 80, "targetPort": 80, "nodePort": 30080},
            "networkPolicy": {"enabled": True, "policyTypes": [], "ingress": [], "egress": []},
            "persistence": {"enabled": False, "size": "1Gi"},
            "ciliumNetworkPolicy": {"enabled": False},
            "topologySpreadConstraints": "",
        },
    },
    # F: every hub setting away from the binary's default (those are written only when they
    # differ, so that extraDirectives can set them), and the development playground.
    "F-non-default-settings": {
        "values": {
            "hub": {"anonymous": True, "subscriptions": True, "debugPage": True, "heartbeat": "15s",
                    "writeTimeout": "300s", "dispatchTimeout": "5s", "maxBodySize": 2097152,
                    "accessTokenCookie": "mercure_access_token", "ioUring": True},
            "dev": True,
            "existingSecret": "reference-style-secret",
        },
    },
    # G: the pods serve TLS themselves (a Secret from cert-manager) behind a TCP load balancer,
    # no Ingress or Gateway: HTTP/2 to browsers straight from the pods.
    "G-tls-on-the-pods": {
        "values": {
            "hub": {"tls": {"secretName": "mercure-tls"}},
            "service": {"type": "LoadBalancer"},
        },
    },
}

# Invalid sets: name -> (values, exception class the render must raise, text its message contains).
INVALID_SETS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("schema: replicaCount 0, unknown transport",
     {"replicaCount": 0, "hub": {"transport": "kafka"}}, helm.HelmValuesError, "/replicaCount"),
    ("schema: replicaCount as a string", {"replicaCount": "3"}, helm.HelmValuesError, "/replicaCount"),
    ("schema: unknown key (typo)", {"hub": {"heartbeats": "10s"}}, helm.HelmValuesError, "heartbeats"),
    ("schema: bundled and external Redis together",
     {"externalRedis": {"url": "redis://redis.example.com:6379"}}, helm.HelmValuesError, "externalRedis"),
    ("schema: redis transport without any Redis", {"redis": {"enabled": False}},
     helm.HelmValuesError, "anyOf"),
    ("schema: no metrics port", {"hub": {"metrics": {"port": None}}}, helm.HelmValuesError,
     "/hub/metrics"),
    ("fail: 3 pods on the memory transport",
     {"replicaCount": 3, "hub": {"transport": "memory"}, "redis": {"enabled": False}},
     helm.HelmRenderError, "hub.transport"),
    ("fail: TLS on the pods behind an Ingress",
     {"hub": {"tls": {"secretName": "mercure-tls"}}, "ingress": {"enabled": True,
      "hosts": [{"host": "mercure.example.com"}]}}, helm.HelmRenderError, "hub.tls.secretName"),
    ("fail: autoscaling on the memory transport",
     {"replicaCount": 1, "hub": {"transport": "memory"}, "redis": {"enabled": False},
      "autoscaling": {"enabled": True}}, helm.HelmRenderError, "hub.transport=redis"),
    ("fail: termination margin within the hub's shutdown grace",
     {"lifecycle": {"terminationMarginSeconds": 10}}, helm.HelmRenderError, "terminationMarginSeconds"),
    ("fail: HTTPRoute without a Gateway", {"httpRoute": {"enabled": True}}, helm.HelmRenderError,
     "parentRefs"),
    ("fail: autoscaling without a metric",
     {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
     helm.HelmRenderError, "at least one metric"),
    ("fail: a grace period shorter than preStop + drain + margin", {"terminationGracePeriodSeconds": 30},
     helm.HelmRenderError, "terminationGracePeriodSeconds=30"),
    ("schema: an unknown top-level key (neither ours nor the reference chart's)", {"extraDirective": "x"},
     helm.HelmValuesError, "extraDirective"),
    ("fail: maxmemory not derivable from the memory limit",
     {"redis": {"resources": {"limits": {"memory": "0.5Gi"}}}}, helm.HelmRenderError, "redis.maxmemory"),
]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

class Results:
    """Collects one line per check and the notes worth printing."""

    def __init__(self, verbose: bool) -> None:
        self.passed = 0
        self.failed = 0
        self.verbose = verbose

    def check(self, name: str, fn: Callable[[], str | None]) -> Any:
        try:
            detail = fn()
        except CheckFailed as e:
            self.failed += 1
            print(f"FAIL  {name}")
            for line in e.problems:
                print(f"        - {line}")
            return None
        except Exception as e:  # an unexpected crash is a failure too, with its traceback
            self.failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
            if self.verbose:
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"PASS  {name}" + (f": {detail}" if detail else ""))
        return True


class CheckFailed(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def require(problems: list[str]) -> None:
    if problems:
        raise CheckFailed(problems)


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------

class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (which Kubernetes' parser rejects)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_docs(text: str, source: str) -> list[tuple[str, dict]]:
    """Every non-empty document of a YAML stream, tagged with where it came from."""
    docs = []
    try:
        parsed = list(yaml.load_all(text, Loader=StrictLoader))
    except yaml.YAMLError as e:
        raise CheckFailed([f"{source}: invalid YAML: {' '.join(str(e).split())}"])
    for i, doc in enumerate(parsed):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise CheckFailed([f"{source} document {i}: not a mapping"])
        docs.append((source, doc))
    return docs


def ident(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{meta.get('name')}" + (f" (ns {ns})" if ns else "")


# --------------------------------------------------------------------------------------------
# Schema validation and consistency of a set of objects
# --------------------------------------------------------------------------------------------

# API groups under k8s.io that are CRDs, not built into Kubernetes (no bundled schema).
CRD_GROUPS = ("gateway.networking.k8s.io/",)
K8S_GROUP = re.compile(r"^([a-z0-9.]*\.k8s\.io/|v1$|apps/|batch/|autoscaling/|policy/)")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_objects(docs: list[tuple[str, dict]], versions: list[str], notes: list[str]) -> list[str]:
    """kubernetes-validate (strict) on each document; returns problems, appends notes."""
    problems = []
    seen: dict[tuple, str] = {}
    for source, doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{source}: {field} missing")
        if problems:
            continue
        name = doc["metadata"].get("name", "")
        pattern = DNS_LABEL if doc["kind"] in ("Service", "Namespace") else DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > (63 if pattern is DNS_LABEL else 253):
            problems.append(f"{source}: {ident(doc)}: invalid name {name!r}")
        key = (doc["apiVersion"].split("/")[0], doc["kind"], doc["metadata"].get("namespace"), name)
        if key in seen:
            problems.append(f"{source}: {ident(doc)} also defined in {seen[key]}")
        seen[key] = source
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except SchemaNotFoundError:
                if K8S_GROUP.match(doc["apiVersion"]) and not doc["apiVersion"].startswith(CRD_GROUPS):
                    problems.append(f"{source}: {ident(doc)}: no schema for {doc['apiVersion']} "
                                    f"in Kubernetes {version}")
                else:
                    note = f"{doc['kind']} ({doc['apiVersion']}) is a CRD kind: parsed and checked " \
                           f"by hand, no schema validation"
                    if note not in notes:
                        notes.append(note)
                    problems.extend(check_crd(source, doc))
                break
            except kv.utils.ValidationError as e:
                path = "/".join(str(p) for p in e.absolute_path)
                problems.append(f"{source}: {ident(doc)} (Kubernetes {e.version}) at /{path}: {e.message}")
    return problems


def check_crd(source: str, doc: dict) -> list[str]:
    """The few things a ServiceMonitor or an HTTPRoute must have (the policy checks the rest)."""
    problems = []
    if doc["kind"] == "HTTPRoute":
        spec = doc.get("spec") or {}
        if doc["apiVersion"] != "gateway.networking.k8s.io/v1":
            problems.append(f"{source}: {ident(doc)}: apiVersion gateway.networking.k8s.io/v1 expected")
        for rule in spec.get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if not isinstance(ref.get("port"), int):
                    problems.append(f"{source}: {ident(doc)}: backendRefs need a port number")
        if not spec.get("rules"):
            problems.append(f"{source}: {ident(doc)}: no rules")
    if doc["kind"] == "ServiceMonitor":
        spec = doc.get("spec") or {}
        if not (spec.get("selector") or {}).get("matchLabels"):
            problems.append(f"{source}: {ident(doc)}: spec.selector.matchLabels missing")
        endpoints = spec.get("endpoints") or []
        if not endpoints or not all(ep.get("port") for ep in endpoints):
            problems.append(f"{source}: {ident(doc)}: every endpoint needs a port name")
    return problems


def by_kind(docs: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [d for _, d in docs if d.get("kind") == kind]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def consistency(docs: list[tuple[str, dict]], external: set[str] = frozenset()) -> list[str]:
    """Cross-object checks. `external`: names of Secrets/ConfigMaps expected to exist already."""
    problems = []
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: set((d.get("data") or {}) | (d.get("stringData") or {}))
               for d in by_kind(docs, "Secret")}
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    hub = next((d for d in by_kind(docs, "Deployment")
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "hub"),
               None)
    if hub is None:
        return ["no hub Deployment (label app.kubernetes.io/component=hub)"]

    for w in workloads:
        w_id = ident(w)
        pod_labels = w["spec"]["template"]["metadata"].get("labels") or {}
        if not selects(w["spec"]["selector"].get("matchLabels"), pod_labels):
            problems.append(f"{w_id}: selector does not match its pod labels")
        pod = w["spec"]["template"]["spec"]
        if w["kind"] == "StatefulSet" and ("Service", w["spec"]["serviceName"]) not in names:
            problems.append(f"{w_id}: serviceName {w['spec']['serviceName']} not defined")
        if pod.get("serviceAccountName") and ("ServiceAccount", pod["serviceAccountName"]) not in names:
            problems.append(f"{w_id}: ServiceAccount {pod['serviceAccountName']} not defined")
        volumes = {v["name"] for v in pod.get("volumes") or []}
        volumes |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        for v in pod.get("volumes") or []:
            cm = (v.get("configMap") or {}).get("name")
            if cm and cm not in configmaps and cm not in external:
                problems.append(f"{w_id}: volume {v['name']}: ConfigMap {cm} not defined")
        for c in pod["containers"]:
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    problems.append(f"{w_id}: mount {m['name']} has no volume")
            port_names = {p.get("name") for p in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    problems.append(f"{w_id}: {probe} port {port} not a container port")
            for src in c.get("envFrom") or []:
                cm = (src.get("configMapRef") or {}).get("name")
                if cm and cm not in configmaps and cm not in external:
                    problems.append(f"{w_id}: envFrom ConfigMap {cm} not defined")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in external:
                    if ref["name"] not in secrets:
                        problems.append(f"{w_id}: env {env['name']}: Secret {ref['name']} not defined")
                    elif ref["key"] not in secrets[ref["name"]]:
                        problems.append(f"{w_id}: env {env['name']}: Secret {ref['name']} has no key {ref['key']}")

    pod_labels = hub["spec"]["template"]["metadata"]["labels"]
    hub_pod = hub["spec"]["template"]["spec"]
    container = hub_pod["containers"][0]
    env = {}
    for src in container.get("envFrom") or []:
        env.update(configmaps.get((src.get("configMapRef") or {}).get("name"), {}))
    env.update({e["name"]: e.get("value", "<from secret>") for e in container.get("env") or []})

    # Several pods only with a shared transport.
    hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == hub["metadata"]["name"]]
    max_pods = max([hub["spec"].get("replicas", 1)] + [h["spec"]["maxReplicas"] for h in hpas])
    if max_pods > 1 and env.get("QUICKSILVER_TRANSPORT") != "redis":
        problems.append(f"up to {max_pods} hub pods but QUICKSILVER_TRANSPORT={env.get('QUICKSILVER_TRANSPORT')}")
    if env.get("QUICKSILVER_TRANSPORT") == "redis" and "QUICKSILVER_REDIS_URL" not in env:
        problems.append("redis transport without QUICKSILVER_REDIS_URL")
    for h in by_kind(docs, "HorizontalPodAutoscaler"):
        if ("Deployment", h["spec"]["scaleTargetRef"]["name"]) not in names:
            problems.append(f"{ident(h)}: scale target not defined")

    sc = container.get("securityContext") or {}
    if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
        problems.append("hub container: read-only root filesystem and no privilege escalation expected")
    if not (hub_pod.get("securityContext") or {}).get("runAsNonRoot"):
        problems.append("hub pod: runAsNonRoot expected")

    # Services select pods; Ingress, ServiceMonitor and PDB find what they point at.
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    all_pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for s in services.values():
        if not any(selects(s["spec"].get("selector"), labels) for labels in all_pod_labels):
            problems.append(f"{ident(s)}: selector matches no pod template")
    for sm in by_kind(docs, "ServiceMonitor"):
        matched = [s for s in services.values()
                   if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels") or {})]
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        if not matched:
            problems.append(f"{ident(sm)}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports:
                problems.append(f"{ident(sm)}: port {ep['port']} not on the selected Service")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in all_pod_labels):
            problems.append(f"{ident(pdb)}: selector matches no pod template")
    for np in by_kind(docs, "NetworkPolicy"):
        selector = np["spec"]["podSelector"]["matchLabels"]
        if not any(selects(selector, labels) for labels in all_pod_labels):
            problems.append(f"{ident(np)}: podSelector matches no pod template")
        if selector.get("app.kubernetes.io/component") != "redis":
            continue
        # Redis lets the hub pods in, by their labels.
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                sel = (peer.get("podSelector") or {}).get("matchLabels")
                if sel and not selects(sel, pod_labels):
                    problems.append(f"{ident(np)}: ingress peer does not select the hub pods")
    return problems


def env_names(docs: list[tuple[str, dict]]) -> set[str]:
    """Every environment variable name the hub container gets (ConfigMap keys included)."""
    found = set()
    for d in by_kind(docs, "ConfigMap"):
        found |= {k for k in (d.get("data") or {}) if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)}
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            found |= {e["name"] for e in c.get("env") or []}
    return found


# --------------------------------------------------------------------------------------------
# values.yaml documentation
# --------------------------------------------------------------------------------------------

KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):(\s.*)?$")


def documented_keys() -> tuple[list[str], list[str]]:
    """(paths of keys documented with `# --`, problems: keys documented nowhere)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    entries = []  # (indent, key, line index, documented)
    list_indent = None  # inside a list value: skip keys until we dedent past it
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None:
            if indent > list_indent or (indent == list_indent and stripped.startswith("- ")):
                continue
            list_indent = None
        if stripped.startswith("- "):
            list_indent = indent
            continue
        m = KEY_LINE.match(line)
        if not m:
            continue
        # The comment block right above the key; documented when it opens with "# --".
        j, block = i - 1, []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.insert(0, lines[j].strip())
            j -= 1
        entries.append((indent, m.group(2), i, bool(block) and block[0].startswith("# --")))
    documented, problems, stack = [], [], []  # stack: (indent, key, covered)
    for n, (indent, key, i, doc) in enumerate(entries):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k, _ in stack] + [key])
        covered = doc or any(c for _, _, c in stack)
        if doc:
            documented.append(path)
        has_children = n + 1 < len(entries) and entries[n + 1][0] > indent
        value = (KEY_LINE.match(lines[i]).group(3) or "").strip()
        if not covered and (not has_children or value):
            problems.append(f"values.yaml line {i + 1}: {path} has no `# --` comment")
        stack.append((indent, key, covered))
    return documented, problems


def check_values_docs() -> str:
    documented, problems = documented_keys()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {}  # key -> default column of the README's values table
    for line in (CHART / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*?) \| ", line)
        if m:
            rows[m.group(1)] = m.group(2)
    for path in documented:
        if path not in rows:
            problems.append(f"README.md values table lacks `{path}`")
            continue
        default = values
        for part in path.split("."):
            default = default[part]
        shown = rows[path]
        if shown.startswith("`") and shown.strip("`") != json.dumps(default, ensure_ascii=False):
            problems.append(f"README.md: `{path}` default {shown} but values.yaml has "
                            f"{json.dumps(default, ensure_ascii=False)}")
    require(problems)
    return f"{len(documented)} keys documented in values.yaml and README.md"


# --------------------------------------------------------------------------------------------
# Chart checks
# --------------------------------------------------------------------------------------------

def render(values: dict, release: str = RELEASE) -> list[tuple[str, dict]]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            if not text.strip():
                raise CheckFailed(["NOTES.txt rendered empty"])
            continue
        docs.extend(load_docs(text, path.split("/", 1)[1]))
    return docs


def check_lint() -> str:
    problems, infos = [], 0
    for name, spec in VALUE_SETS.items():
        report = helm.lint(str(CHART), spec["values"], strict=True, namespace=NAMESPACE)
        problems += [f"{name}: {e}" for e in report.get("errors") or []]
        for m in report.get("messages") or []:
            if m["severity"] >= 2:
                problems.append(f"{name}: {m['path']}: {m['error']}")
            else:
                infos += 1
    require(problems)
    return f"{len(VALUE_SETS)} value sets, no warnings" + (f" ({infos} info messages)" if infos else "")


def production_policy(docs: list[tuple[str, dict]]) -> list[str]:
    """scripts/deploy_policy.py's rules for Kubernetes objects."""
    objects = [d for _, d in docs]
    return (policy.check_hub(objects, SHUTDOWN_GRACE) + policy.check_routes(objects)
            + policy.check_redis(objects))


def expectations(name: str, docs: list[tuple[str, dict]]) -> list[str]:
    """What each value set must produce beyond general validity and the policy."""
    kinds = [d["kind"] for _, d in docs]
    objects = [d for _, d in docs]
    hub = policy.hub_deployment(objects)
    pod = hub["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0].get("env") or []}
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == hub["metadata"]["name"])["data"]
    redis = next((d for d in by_kind(docs, "StatefulSet")), None)
    redis_args = redis["spec"]["template"]["spec"]["containers"][0]["args"] if redis else []
    p = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            p.append(f"{name}: {what}")

    if name == "default":
        expect(hub["spec"].get("replicas") == 2, "2 replicas expected")
        expect(redis is not None, "bundled Redis StatefulSet expected")
        expect(cm.get("QUICKSILVER_TRANSPORT") == "redis", "redis transport expected")
        # Internal endpoints kept inside, rollouts that move each client once.
        expect(cm.get("QUICKSILVER_DEBUG_PAGE") == "false", "debug page off by default")
        expect(cm.get("QUICKSILVER_METRICS_ADDR") == "0.0.0.0:9090", "metrics listener on 9090 by default")
        strategy = hub["spec"]["strategy"]["rollingUpdate"]
        expect(strategy == {"maxSurge": "100%", "maxUnavailable": 0}, f"maxSurge 100%, maxUnavailable 0; got {strategy}")
        expect(hub["spec"].get("minReadySeconds") == 40, "minReadySeconds = preStop 10 s + drain 30 s")
        expect(pod["terminationGracePeriodSeconds"] == 60, "grace = 10 + 30 + 20")
        pdb = by_kind(docs, "PodDisruptionBudget")[0]["spec"]
        expect(pdb.get("unhealthyPodEvictionPolicy") == "AlwaysAllow", "PDB unhealthyPodEvictionPolicy AlwaysAllow")
        policies = {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")}
        expect(policies == {"qs-quicksilver", "qs-quicksilver-redis"}, f"NetworkPolicies for hub and Redis; got {policies}")
        metrics_svc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "qs-quicksilver-metrics"]
        expect(bool(metrics_svc) and metrics_svc[0]["spec"]["type"] == "ClusterIP", "a ClusterIP metrics Service")
        main_svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "qs-quicksilver")
        expect([x["name"] for x in main_svc["spec"]["ports"]] == ["http"], "the hub Service carries the hub port only")
        # Bundled Redis: password, maxmemory from the 512Mi limit, pinned image.
        expect("--requirepass" in redis_args, "Redis password on by default")
        expect("REDIS_PASSWORD" in env, "the hub's Redis URL carries the password")
        expect(redis_args[redis_args.index("--maxmemory") + 1] == str(512 * 1048576 * 70 // 100)
               if "--maxmemory" in redis_args else False, "maxmemory = 70% of 512Mi")
    if name == "A-external-redis":
        expect(hub["spec"].get("replicas") == 3, "3 replicas expected")
        expect(redis is None, "no bundled Redis expected")
        ref = (env.get("QUICKSILVER_REDIS_URL") or {}).get("valueFrom", {}).get("secretKeyRef")
        expect(ref == {"name": "my-redis", "key": "url"}, f"Redis URL from my-redis/url expected, got {ref}")
        expect("Secret" not in kinds, "no chart Secret expected (all secrets existing)")
        expect(cm.get("QUICKSILVER_REDIS_PARTITIONS") == "4", "4 partitions expected")
        expect(hub["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1, "maxSurge 1 as set")
    if name == "B-ingress-hpa-monitor":
        for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "StatefulSet"):
            expect(kind in kinds, f"{kind} expected")
        ing = by_kind(docs, "Ingress")[0]
        annotations = ing["metadata"]["annotations"]
        expect("cert-manager.io/cluster-issuer" in annotations, "user annotations kept")
        expect(annotations.get(policy.NGINX_BODY_SIZE) == "4194304", "body size follows hub.maxBodySize")
        paths = {r["host"]: [x["path"] for x in r["http"]["paths"]] for r in ing["spec"]["rules"]}
        expect(paths == {"mercure.example.com": [policy.HUB_PATH, policy.METADATA_PATH],
                         "hub.example.org": [policy.HUB_PATH]}, f"default and own paths; got {paths}")
        expect(cm.get("QUICKSILVER_METRICS_ADDR") == "0.0.0.0:9100", "metrics address from hub.metrics.port")
        sm = by_kind(docs, "ServiceMonitor")[0]
        expect(sm["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor scrapes the metrics port")
        hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["metrics"]
        pods_metric = [m for m in hpa if m["type"] == "Pods"]
        expect(len(hpa) == 3 and pods_metric and pods_metric[0]["pods"]["metric"]["name"] == "quicksilver_subscribers"
               and pods_metric[0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "5000"},
               f"CPU, memory and subscribers per pod; got {hpa}")
        expect(redis_args[redis_args.index("--maxmemory") + 1] == "256mb", "explicit maxmemory kept")
    if name == "C-single-memory":
        expect(cm.get("QUICKSILVER_TRANSPORT") == "memory", "memory transport expected")
        expect("QUICKSILVER_REDIS_URL" not in cm and "QUICKSILVER_REDIS_URL" not in env, "no Redis URL expected")
        expect(redis is None, "no Redis expected")
    if name == "D-gateway-tls-redis":
        route = by_kind(docs, "HTTPRoute")
        expect(len(route) == 1, "an HTTPRoute expected")
        if route:
            rule = route[0]["spec"]["rules"][0]
            expect([m["path"]["value"] for m in rule["matches"]] == [policy.HUB_PATH, policy.METADATA_PATH],
                   "hub paths only")
            expect(route[0]["spec"]["hostnames"] == ["mercure.example.com"], "hostnames kept")
        expect(cm.get("QUICKSILVER_REDIS_TLS_CA") == "/etc/redis-ca/ca.crt", "Redis CA file set")
        mounts = pod["containers"][0]["volumeMounts"]
        expect(any(m["name"] == "redis-ca" for m in mounts) and any(v["name"] == "redis-ca" for v in pod["volumes"]),
               "the CA volume mounted")
        hub_np = next(d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "qs-quicksilver")
        metrics_rule = hub_np["spec"]["ingress"][1]
        expect(metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"},
               "metrics port limited to the monitoring namespace")
    if name == "G-tls-on-the-pods":
        expect(cm.get("QUICKSILVER_TLS_CERT") == "/etc/quicksilver-tls/tls.crt"
               and cm.get("QUICKSILVER_TLS_KEY") == "/etc/quicksilver-tls/tls.key", "certificate files set")
        mounts = pod["containers"][0]["volumeMounts"]
        expect(any(m["name"] == "tls" and m["mountPath"] == "/etc/quicksilver-tls" and m.get("readOnly")
                   for m in mounts), "the TLS Secret mounted read-only")
        expect(any(v["name"] == "tls" and v.get("secret", {}).get("secretName") == "mercure-tls"
                   for v in pod["volumes"]), "the TLS volume from hub.tls.secretName")
        expect("Ingress" not in kinds and "HTTPRoute" not in kinds, "nothing in front of the pods")
    if name == "default":
        expect("QUICKSILVER_TLS_CERT" not in cm, "plain HTTP by default")
    if name == "E-reference-chart-values":
        secret = next(d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "qs-quicksilver")["data"]
        expect("extra-directives" in secret, "extraDirectives kept in the Secret")
        ref = (env.get("MERCURE_EXTRA_DIRECTIVES") or {}).get("valueFrom", {}).get("secretKeyRef")
        expect(ref == {"name": "qs-quicksilver", "key": "extra-directives"}, f"directives from the Secret; got {ref}")
        # The directives set these; a variable of the chart would win over them.
        for variable in ("QUICKSILVER_ANONYMOUS", "QUICKSILVER_DEBUG_PAGE", "QUICKSILVER_HEARTBEAT",
                         "QUICKSILVER_CORS_ORIGINS"):
            expect(variable not in cm, f"{variable} left to the directives")
        expect(env.get("TZ", {}).get("value") == "UTC", "extraEnvs added")
        expect("ServiceMonitor" in kinds, "metrics.serviceMonitor.enabled turns the ServiceMonitor on")
        expect(pod["terminationGracePeriodSeconds"] == 660, "the grace period given")
        expect(hub["spec"].get("progressDeadlineSeconds") == 1800, "the progress deadline given")
        expect(hub["metadata"].get("annotations") == {"example.com/team": "realtime"}, "Deployment annotations")
        main_svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "qs-quicksilver")
        expect(main_svc["spec"]["ports"][0].get("nodePort") == 30080, "the node port given")
        expect(main_svc["spec"]["ports"][0]["targetPort"] == "http", "the container port stays hub.port")
    if name == "F-non-default-settings":
        for variable, value in (("QUICKSILVER_ANONYMOUS", "true"), ("QUICKSILVER_SUBSCRIPTIONS", "true"),
                                ("QUICKSILVER_DEBUG_PAGE", "true"), ("QUICKSILVER_HEARTBEAT", "15s"),
                                ("QUICKSILVER_WRITE_TIMEOUT", "300s"), ("QUICKSILVER_DISPATCH_TIMEOUT", "5s"),
                                ("QUICKSILVER_MAX_BODY_SIZE", "2097152"),
                                ("QUICKSILVER_ACCESS_TOKEN_COOKIE", "mercure_access_token"),
                                ("QUICKSILVER_IO_URING", "true")):
            expect(cm.get(variable) == value, f"{variable}={value} expected, got {cm.get(variable)}")
        expect(env.get("QUICKSILVER_PLAYGROUND", {}).get("value") == "true", "dev turns the playground on")
        ref = (env.get("MERCURE_EXTRA_DIRECTIVES") or {}).get("valueFrom", {}).get("secretKeyRef")
        expect(ref == {"name": "reference-style-secret", "key": "extra-directives", "optional": True},
               f"directives read from the existing Secret when it has them; got {ref}")
        keys = (env.get("MERCURE_PUBLISHER_JWT_KEY") or {}).get("valueFrom", {}).get("secretKeyRef", {})
        expect(keys.get("name") == "reference-style-secret", "keys from the existing Secret (reference name)")
    return p


def check_render(name: str, spec: dict, notes: list[str], envs: set[str]) -> str:
    docs = render(spec["values"])
    versions = spec.get("kube_versions", KUBE_VERSIONS)
    problems = validate_objects(docs, versions, notes)
    external = {v for v in (spec["values"].get("auth", {}).get("existingSecret"),
                            spec["values"].get("existingSecret"),
                            spec["values"].get("externalRedis", {}).get("existingSecret"),
                            spec["values"].get("hub", {}).get("tls", {}).get("secretName"),
                            "redis-ca") if v}
    if not problems:
        problems += consistency(docs, external)
        problems += production_policy(docs)
        problems += expectations(name, docs)
    require(problems)
    envs |= env_names(docs)
    kinds = sorted({d["kind"] for _, d in docs})
    return f"{len(docs)} objects ({', '.join(kinds)}), Kubernetes {' and '.join(versions)}"


def check_invalid(values: dict, error: type[Exception], text: str) -> str:
    try:
        render(values)
    except error as e:
        message = str(e)
        require([] if text in message else [f"failed, but the message lacks {text!r}: {message}"])
        message = message.split("in the following chart(s):")[-1]
        return "rejected: " + " ".join(message.split())[:120]
    except helm.HelmError as e:
        raise CheckFailed([f"failed with {type(e).__name__}, expected {error.__name__}: {e}"])
    raise CheckFailed(["the render succeeded; it must fail"])


# --------------------------------------------------------------------------------------------
# Kustomize
# --------------------------------------------------------------------------------------------

# Merge keys of the strategic-merge lists our patches touch (Kubernetes' patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name"}


def merge_key(field: str, items: list) -> str | None:
    """The merge key of a list field; ports merge by containerPort (pods) or port (Services)."""
    if field == "ports":
        return "containerPort" if any("containerPort" in i for i in items if isinstance(i, dict)) else "port"
    return MERGE_KEYS.get(field)
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass", "IngressClass"}


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch for plain data: maps merge, lists with a merge key merge by it
    (new items first, as kustomize does), other lists are replaced. `$patch` directives are not
    supported: the overlay does not use them."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if isinstance(k, str) and k.startswith("$"):
                raise CheckFailed([f"unsupported patch directive {k}"])
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and merge_key(field, base + patch):
        key = merge_key(field, base + patch)
        merged = [copy.deepcopy(b) for b in base]
        index = {b.get(key): i for i, b in enumerate(merged)}
        new = []
        for p in patch:
            if p.get(key) in index:
                merged[index[p[key]]] = strategic_merge(merged[index[p[key]]], p, field)
            else:
                new.append(copy.deepcopy(p))
        return new + merged
    return copy.deepcopy(patch)


def kustomize_build(directory: Path) -> list[dict]:
    """Builds a kustomization the way kustomize does for the features it supports."""
    kfile = directory / "kustomization.yaml"
    k = yaml.load(kfile.read_text(), Loader=StrictLoader) or {}
    supported = {"apiVersion", "kind", "resources", "namespace", "replicas", "images", "patches"}
    unknown = set(k) - supported
    if unknown:
        raise CheckFailed([f"{kfile}: fields the offline builder does not handle: {sorted(unknown)}"])
    objects: list[dict] = []
    for res in k.get("resources") or []:
        path = (directory / res).resolve()
        if path.is_dir():
            objects += kustomize_build(path)
        else:
            objects += [d for _, d in load_docs(path.read_text(), str(path))]
    for p in k.get("patches") or []:
        if set(p) != {"path"}:
            raise CheckFailed([f"{kfile}: only `patches: - path:` (strategic merge) is handled"])
        for _, patch in load_docs((directory / p["path"]).read_text(), p["path"]):
            targets = [o for o in objects if o["kind"] == patch["kind"]
                       and o["metadata"]["name"] == patch["metadata"]["name"]]
            if len(targets) != 1:
                raise CheckFailed([f"{p['path']}: {ident(patch)} matches {len(targets)} objects"])
            i = objects.index(targets[0])
            objects[i] = strategic_merge(objects[i], patch)
    for r in k.get("replicas") or []:
        for o in objects:
            if o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet") and o["metadata"]["name"] == r["name"]:
                o["spec"]["replicas"] = r["count"]
    for img in k.get("images") or []:
        for o in objects:
            pod = ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}" if (
                        img.get("newTag") or tag) else img.get("newName", name)
    if k.get("namespace"):
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objects


def real_kustomize(directory: Path) -> tuple[str, list[dict]] | None:
    """Output of an installed kustomize (or kubectl's), or None when there is none."""
    for cmd in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(cmd[0]):
            proc = subprocess.run(cmd + [str(directory)], capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise CheckFailed([f"{' '.join(cmd)} failed: {proc.stderr.strip()}"])
            return " ".join(cmd), [d for _, d in load_docs(proc.stdout, " ".join(cmd))]
    return None


def normalized(objects: list[dict]) -> dict[str, Any]:
    """Objects keyed by identity, with merge-keyed lists in a canonical order."""
    def norm(x: Any, field: str = "") -> Any:
        if isinstance(x, dict):
            return {k: norm(v, k) for k, v in x.items()}
        if isinstance(x, list):
            items = [norm(v) for v in x]
            key = merge_key(field, items)
            if key and all(isinstance(i, dict) and key in i for i in items):
                items.sort(key=lambda i: str(i[key]))
            return items
        return x
    return {ident(o): norm(o) for o in objects}


# --------------------------------------------------------------------------------------------
# k8s/ generated from the chart
# --------------------------------------------------------------------------------------------

K8S_VALUES = K8S / "values.yaml"
# Generated directories: name -> which objects of the render go there (by component label).
GENERATED_DIRS = {"base": lambda component: component != "redis",
                  "redis": lambda component: component == "redis"}
# Labels that say "Helm manages this": not true of objects applied with kubectl.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def without_release(doc: dict) -> dict:
    """A rendered object as a kustomize base holds it: no namespace (overlays set it), no labels
    claiming Helm manages it, no checksum annotations."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("namespace", None)
    metas = [doc["metadata"], ((doc.get("spec") or {}).get("template") or {}).get("metadata")]
    metas += [t.get("metadata") for t in (doc.get("spec") or {}).get("volumeClaimTemplates") or []]
    for meta in metas:
        for label in HELM_LABELS:
            ((meta or {}).get("labels") or {}).pop(label, None)
        # The chart rolls pods when its ConfigMap changes through checksum annotations; a patch
        # in an overlay would leave them stale, so the base has none (see k8s/README.md).
        annotations = (meta or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith("checksum/")]:
            del annotations[key]
        if meta is not None and "annotations" in meta and not meta["annotations"]:
            del meta["annotations"]
    return doc


def k8s_files() -> dict[str, str]:
    """Every generated file under k8s/ (relative path -> text): the chart rendered with
    k8s/values.yaml, the hub's objects into base/, and rendered once more with the bundled Redis on,
    its objects into redis/."""
    values = yaml.load(K8S_VALUES.read_text(), Loader=StrictLoader) or {}
    renders = {
        "base": render(values, release="quicksilver"),
        "redis": render(deep_merge(values, {"redis": {"enabled": True},
                                            "externalRedis": {"url": "", "existingSecret": ""}}),
                        release="quicksilver"),
    }
    files = {}
    for directory, keep in GENERATED_DIRS.items():
        by_template: dict[str, list[dict]] = {}
        for source, doc in renders[directory]:
            component = ((doc.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
            if keep(component):
                by_template.setdefault(Path(source).name, []).append(without_release(doc))
        for name, docs in sorted(by_template.items()):
            header = (f"# Generated from helm/quicksilver/templates/{name} with k8s/values.yaml by\n"
                      f"# `scripts/validate-deploy.sh --write-k8s`: change the chart or the values, not this file.\n")
            files[f"{directory}/{name}"] = header + yaml.safe_dump_all(docs, sort_keys=False, width=1000)
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": sorted(by_template)}
        files[f"{directory}/kustomization.yaml"] = (
            "# Generated by `scripts/validate-deploy.sh --write-k8s` (see k8s/README.md).\n"
            + yaml.safe_dump(kustomization, sort_keys=False))
    return files


def write_k8s() -> str:
    files = k8s_files()
    for directory in GENERATED_DIRS:
        d = K8S / directory
        d.mkdir(exist_ok=True)
        for old in d.glob("*.yaml"):
            if f"{directory}/{old.name}" not in files:
                old.unlink()
    for rel, text in files.items():
        (K8S / rel).write_text(text)
    return f"wrote {len(files)} files under k8s/ ({', '.join(GENERATED_DIRS)})"


def check_k8s_generated() -> str:
    """k8s/base and k8s/redis are exactly a fresh render of the chart with k8s/values.yaml."""
    files = k8s_files()
    problems = []
    on_disk = {f"{d}/{f.name}" for d in GENERATED_DIRS for f in (K8S / d).glob("*.yaml")}
    for rel in sorted(on_disk - set(files)):
        problems.append(f"k8s/{rel}: not generated from the chart (remove it, or add it to the chart)")
    for rel in sorted(files):
        path = K8S / rel
        current = path.read_text() if path.exists() else ""
        if current != files[rel]:
            diff = list(difflib.unified_diff(current.splitlines(), files[rel].splitlines(),
                                             f"k8s/{rel} (committed)", f"k8s/{rel} (chart)", lineterm="", n=1))
            shown = "\n          ".join(diff[:30]) + ("\n          …" if len(diff) > 30 else "")
            problems.append(f"k8s/{rel} differs from the chart's render:\n          {shown}")
    if problems:
        problems.append("regenerate with `scripts/validate-deploy.sh --write-k8s` and commit the result")
    require(problems)
    return f"{len(files)} files in k8s/{{{','.join(GENERATED_DIRS)}}} match the chart rendered with k8s/values.yaml"


# The Secret the generated manifests expect (created by the operator; see k8s/README.md).
K8S_SECRET = "quicksilver"


def check_base_files(notes: list[str]) -> str:
    docs = []
    files = sorted((K8S / "base").glob("*.yaml"))
    for f in files:
        if f.name != "kustomization.yaml":
            docs += load_docs(f.read_text(), f"k8s/base/{f.name}")
    problems = validate_objects(docs, KUBE_VERSIONS, notes)
    if not problems:
        problems += consistency(docs, {K8S_SECRET})
        problems += production_policy(docs)
    require(problems)
    return f"{len(docs)} objects in {len(files) - 1} files, Kubernetes {' and '.join(KUBE_VERSIONS)}"


def check_overlay(directory: Path, notes: list[str], envs: set[str], use_tool: bool) -> str:
    built = kustomize_build(directory)
    docs = [(f"{directory.relative_to(ROOT)} (built)", o) for o in built]
    problems = validate_objects(docs, KUBE_VERSIONS, notes)
    if not problems:
        problems += consistency(docs, {K8S_SECRET})
        problems += production_policy(docs)
    detail = f"{len(built)} objects, Kubernetes {' and '.join(KUBE_VERSIONS)}"
    real = real_kustomize(directory) if use_tool else None
    if real is None:
        note = "overlays built by the script's own builder only (no kustomize or kubectl, or --no-kustomize)"
        if note not in notes:
            notes.append(note)
    else:
        tool, objects = real
        ours, theirs = normalized(built), normalized(objects)
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name):
                problems.append(f"{name}: the offline builder and `{tool}` disagree:\n"
                                f"          ours:   {json.dumps(ours.get(name), sort_keys=True)[:400]}\n"
                                f"          theirs: {json.dumps(theirs.get(name), sort_keys=True)[:400]}")
        detail += f"; identical to `{tool}`"
    require(problems)
    envs |= env_names(docs)
    return detail


# --------------------------------------------------------------------------------------------
# Containers outside Kubernetes: Dockerfile, compose, nginx
# --------------------------------------------------------------------------------------------

def check_containers() -> str:
    compose = yaml.load((ROOT / "docker-compose.cluster.yml").read_text(), Loader=StrictLoader)
    nginx = {f"deploy/nginx/{n}": (ROOT / "deploy" / "nginx" / n).read_text()
             for n in ("mercure.conf", "compose.conf")}
    drain = yaml.safe_load((CHART / "values.yaml").read_text())["hub"]["drainWindowSeconds"]
    problems = (policy.check_dockerfile((ROOT / "Dockerfile").read_text())
                + policy.check_compose(compose, drain, SHUTDOWN_GRACE)
                + policy.check_nginx(nginx))
    require(problems)
    return "Dockerfile, docker-compose.cluster.yml, " + ", ".join(nginx)


# --------------------------------------------------------------------------------------------
# The binary's settings against the files and the README
# --------------------------------------------------------------------------------------------

def find_binary() -> Path | None:
    candidates = [os.environ.get("QUICKSILVER_BIN"), ROOT / "target/release/quicksilver",
                  ROOT / "target/debug/quicksilver"]
    if os.environ.get("CARGO_TARGET_DIR"):
        target = Path(os.environ["CARGO_TARGET_DIR"])
        candidates[1:1] = [target / "release/quicksilver", target / "debug/quicksilver"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def binary_settings(notes: list[str]) -> tuple[Path, dict[str, str]] | None:
    """(binary, {flag: env var}) from `--help`, or None (with a note) when there is no usable binary."""
    binary = find_binary()
    if binary is None:
        notes.append("no quicksilver binary built: settings not checked against --help")
        return None
    proc = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    settings = {}
    # Each option starts a line with its flags; its `[env: NAME=…]` follows, possibly wrapped.
    for block in re.split(r"\n(?=\s{2,6}(?:-\w, )?--)", proc.stdout):
        flag = re.match(r"\s*(?:-\w, )?(--[a-z0-9-]+)", block)
        env = re.search(r"\[env:\s*([A-Z0-9_]+)[=\]]", block)
        if flag and env:
            settings[flag.group(1)] = env.group(1)
    if proc.returncode != 0 or not settings:
        # Not this script's business (a binary being rebuilt, say): say so and move on.
        notes.append(f"{binary} --help failed or listed no variables: settings not checked")
        return None
    return binary, settings


def check_env_names(envs: set[str], notes: list[str]) -> str:
    found = binary_settings(notes)
    if found is None:
        return "skipped (no usable binary)"
    binary, settings = found
    known = set(settings.values())
    ours = {e for e in envs if re.match(r"(QUICKSILVER|MERCURE|OTEL)_", e)}
    name = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
    problems = [f"{e} is set by the deployment files but unknown to {name}"
                for e in sorted(ours - known - SDK_VARIABLES)]
    problems += [f"{e} (`{flag}`) has no chart value: add one to values.yaml (or to NOT_IN_CHART, saying why)"
                 for flag, e in sorted(settings.items()) if e not in envs and e not in NOT_IN_CHART]
    require(problems)
    return (f"{len(ours & known)} variables known to {binary.name} --help; all {len(known) - len(NOT_IN_CHART)} "
            f"of its settings reachable from the chart")


def check_readme_settings(notes: list[str]) -> str:
    """The README's configuration table lists exactly the binary's flags, each with its variable."""
    found = binary_settings(notes)
    if found is None:
        return "skipped (no usable binary)"
    _, settings = found
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(--[a-z0-9-]+)` \| `([A-Z0-9_]+)` \|", section, re.M))
    problems = [f"README configuration table lacks `{flag}` ({env})"
                for flag, env in sorted(settings.items()) if flag not in rows]
    problems += [f"README configuration table lists `{flag}`, which the binary does not have"
                 for flag in sorted(set(rows) - set(settings))]
    problems += [f"README: `{flag}` is `{rows[flag]}` in the table but `{env}` in --help"
                 for flag, env in sorted(settings.items()) if flag in rows and rows[flag] != env]
    require(problems)
    return f"{len(rows)} flags, the same as --help"


# --------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of crashes")
    parser.add_argument("--dump", metavar="DIR", help="write every rendered/built set to DIR")
    parser.add_argument("--no-kustomize", action="store_true",
                        help="build overlays with the script's builder only, even if kustomize is installed")
    parser.add_argument("--write-k8s", action="store_true",
                        help="regenerate k8s/base and k8s/redis from the chart, then check as usual")
    args = parser.parse_args()

    helm.disable_logging()
    results = Results(args.verbose)
    notes: list[str] = []
    envs: set[str] = set()
    print(f"Helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kv.__version__}, "
          f"schemas for Kubernetes {', '.join(sorted(set(KUBE_VERSIONS + ['1.30'])))}")
    if args.write_k8s:
        print(write_k8s())

    results.check("values.yaml documented key by key", check_values_docs)
    results.check("helm lint --strict", check_lint)
    for name, spec in VALUE_SETS.items():
        results.check(f"render {name}", lambda name=name, spec=spec: check_render(name, spec, notes, envs))
    for name, values, error, text in INVALID_SETS:
        results.check(f"reject {name}", lambda v=values, e=error, t=text: check_invalid(v, e, t))
    results.check("k8s/ generated from the chart", check_k8s_generated)
    results.check("k8s/base manifests", lambda: check_base_files(notes))
    for overlay in sorted((K8S / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            results.check(f"k8s/overlays/{overlay.name} build",
                          lambda o=overlay: check_overlay(o, notes, envs, not args.no_kustomize))
    results.check("Dockerfile, compose and nginx", check_containers)
    results.check("environment variable names and chart coverage", lambda: check_env_names(envs, notes))
    results.check("README configuration table", lambda: check_readme_settings(notes))

    if args.dump:
        out = Path(args.dump)
        out.mkdir(parents=True, exist_ok=True)
        for name, spec in VALUE_SETS.items():
            docs = render(spec["values"])
            (out / f"helm-{name}.yaml").write_text(yaml.safe_dump_all([d for _, d in docs], sort_keys=False))
        for overlay in sorted((K8S / "overlays").iterdir()):
            objs = kustomize_build(overlay)
            (out / f"kustomize-{overlay.name}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        print(f"wrote the rendered sets to {out}")

    for note in notes:
        print(f"note: {note}")
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
