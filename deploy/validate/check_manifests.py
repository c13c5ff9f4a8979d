#!/usr/bin/env python3
"""Offline checks of one rendered kustomize overlay (the output of `kubectl kustomize DIR`).

1. Every object is validated against the Kubernetes API schemas bundled with the PyPI package
   kubernetes-validate, in strict mode (unknown fields are errors), for each version given.
   Custom resources without a bundled schema (ServiceMonitor) are checked by cross-reference.
2. Cross-references a schema cannot see: Service/PDB/NetworkPolicy/ServiceMonitor selectors
   match pods, named ports exist, the HPA's target exists, and every eam-proxy container agrees
   with the eam-proxy.toml it is given (ports, probes on the admin listener, writable pid/upgrade
   directories on a read-only root, TLS files from a Secret directory, termination grace period
   longer than the drain) and is hardened (non-root, read-only root, no privilege escalation,
   ALL capabilities dropped, RuntimeDefault seccomp, requests and limits).

Each eam-proxy configuration found is written to --configs-out, for `eam-proxy --check`.
Prints one `PASS name` or `FAIL name: reason` line per check; exits 1 when any check failed.
"""

import argparse
import ipaddress
import os
import posixpath
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import yaml

import kubernetes_validate

PROXY_IMAGE = "eam-proxy"
# Custom resources: no schema is bundled; their references are checked below instead.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
PINGORA_RUNTIME_SHUTDOWN_SECONDS = 1  # graceful_shutdown_timeout_seconds in proxy/src/main.rs

failures = 0


def report(ok, name, reason=""):
    global failures
    if ok:
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}: {reason}")


def ident(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def matches(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a label map."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_templates(objects):
    """(workload, pod template) for every workload kind this project ships."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield obj, obj["spec"]["template"]


def image_name(image):
    """registry.example.com/eam-proxy:0.1.0 -> eam-proxy"""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def port_of(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def under(path, mount_path):
    path, mount_path = posixpath.normpath(path), posixpath.normpath(mount_path)
    return path == mount_path or path.startswith(mount_path.rstrip("/") + "/")


def mount_for(container, path):
    """The volumeMount whose mountPath holds path (the longest one)."""
    best = None
    for mount in container.get("volumeMounts") or []:
        if under(path, mount["mountPath"]):
            if best is None or len(mount["mountPath"]) > len(best["mountPath"]):
                best = mount
    return best


def volume(pod_spec, name):
    for vol in pod_spec.get("volumes") or []:
        if vol["name"] == name:
            return vol
    return None


def container_ports(container):
    return {p["containerPort"]: p for p in container.get("ports") or []}


def resolve_port(port, containers):
    """A named or numbered port of any of the containers -> number (None when unknown)."""
    for c in containers:
        for p in c.get("ports") or []:
            if port == p.get("name") or port == p["containerPort"]:
                return p["containerPort"]
    return None


def check_schemas(objects, versions):
    for obj in objects:
        if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
            continue  # cross-referenced in check_service_monitors
        for version in versions:
            name = f"schema {ident(obj)} k8s {version} strict"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                report(True, name)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                report(False, name, f"{path}: {e.message}")
            except Exception as e:  # SchemaNotFoundError and the like
                report(False, name, f"{type(e).__name__}: {e}")


def check_proxy_container(workload, template, container, objects, configs_out, overlay):
    """Everything an eam-proxy container must agree on with its configuration."""
    pod = template["spec"]
    who = f"{ident(workload)} container {container['name']}"

    # The configuration file: --config PATH, in a mounted ConfigMap that has that key.
    args = (container.get("command") or []) + (container.get("args") or [])
    config_path = None
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            config_path = args[i + 1]
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
    if config_path is None:
        for env in container.get("env") or []:
            if env["name"] == "EAM_PROXY_CONFIG":
                config_path = env.get("value")
    if config_path is None:
        report(False, f"{who}: --config given", "no --config argument nor EAM_PROXY_CONFIG")
        return
    mount = mount_for(container, config_path)
    vol = volume(pod, mount["name"]) if mount else None
    cm_name = (vol or {}).get("configMap", {}).get("name")
    key = (
        mount.get("subPath") if mount and mount.get("subPath")
        else posixpath.relpath(config_path, mount["mountPath"]) if mount else None
    )
    configmap = next(
        (o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name), None
    )
    text = (configmap or {}).get("data", {}).get(key)
    report(
        text is not None,
        f"{who}: {config_path} comes from a ConfigMap in the output",
        f"mount={mount and mount['mountPath']} configMap={cm_name} key={key}",
    )
    if text is None:
        return
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        report(False, f"{who}: configuration is TOML", str(e))
        return
    out = os.path.join(configs_out, f"{overlay}--{cm_name}--{key}")
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)

    server = config.get("server", {})
    upstream = config.get("upstream", {})
    listen = server.get("listen", ["0.0.0.0:8080"])
    tls_listen = server.get("tls_listen", [])
    admin_listen = server.get("admin_listen", "127.0.0.1:9090")
    admin_host, admin_port = port_of(admin_listen)
    serving = {port_of(a)[1] for a in listen + tls_listen}
    declared = container_ports(container)

    expected = serving | {admin_port}
    report(
        set(declared) == expected,
        f"{who}: container ports = listen + tls_listen + admin_listen ports",
        f"container {sorted(declared)} vs configuration {sorted(expected)}",
    )
    report(
        ipaddress.ip_address(admin_host).is_unspecified,
        f"{who}: admin_listen reachable by the kubelet's probes",
        f"admin_listen = {admin_listen}: bind 0.0.0.0 (or [::]) in a pod",
    )
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        port = resolve_port(get.get("port"), [container])
        report(
            get.get("path") == path and port == admin_port,
            f"{who}: {probe} GET {path} on the admin port {admin_port}",
            f"got {get.get('path')} on {get.get('port')} ({port})",
        )

    # Hardening: container settings, falling back to the pod's where Kubernetes does.
    sc = container.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    def effective(field):
        return sc.get(field, psc.get(field))
    hardening = {
        "runAsNonRoot": effective("runAsNonRoot") is True,
        "runAsUser != 0": effective("runAsUser") not in (0,),
        "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation: false": sc.get("allowPrivilegeEscalation") is False,
        "not privileged": sc.get("privileged") in (None, False),
        "capabilities drop ALL": "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
        "no added capabilities": not (sc.get("capabilities") or {}).get("add"),
        "seccomp RuntimeDefault": (effective("seccompProfile") or {}).get("type") == "RuntimeDefault",
    }
    bad = [k for k, ok in hardening.items() if not ok]
    report(not bad, f"{who}: securityContext hardened", "missing: " + ", ".join(bad))
    res = container.get("resources") or {}
    needed = [
        f"{kind}.{r}"
        for kind in ("requests", "limits")
        for r in ("cpu", "memory")
        if r not in (res.get(kind) or {})
    ]
    report(not needed, f"{who}: resource requests and limits", "missing: " + ", ".join(needed))

    # The root filesystem is read-only: pid file and upgrade socket need a writable volume.
    for field, default in (("pid_file", "/tmp/eam-proxy.pid"), ("upgrade_sock", "/tmp/eam-proxy-upgrade.sock")):
        path = server.get(field, default)
        m = mount_for(container, path)
        v = volume(pod, m["name"]) if m else None
        report(
            bool(m) and not m.get("readOnly") and v is not None and "emptyDir" in v,
            f"{who}: server.{field} ({path}) on a writable emptyDir",
            f"mount={m}",
        )

    # TLS files from a Secret mounted as a directory (a subPath mount never sees a renewal).
    if tls_listen:
        for field in ("tls_cert", "tls_key"):
            path = server.get(field)
            m = mount_for(container, path) if path else None
            v = volume(pod, m["name"]) if m else None
            report(
                bool(m) and v is not None and "secret" in v and not m.get("subPath"),
                f"{who}: server.{field} from a Secret directory (rotation without restart)",
                f"{path}: mount={m}",
            )
    if upstream.get("ca_file"):
        m = mount_for(container, upstream["ca_file"])
        report(bool(m), f"{who}: upstream.ca_file is mounted", upstream["ca_file"])

    # Termination: the kubelet must not SIGKILL before the drain is over.
    grace = server.get("grace_period_seconds", 10)
    pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    budget = pod.get("terminationGracePeriodSeconds", 30)
    needed_s = pre_stop + grace + PINGORA_RUNTIME_SHUTDOWN_SECONDS
    report(
        budget > needed_s,
        f"{who}: terminationGracePeriodSeconds {budget} > preStop {pre_stop} + grace {grace} + {PINGORA_RUNTIME_SHUTDOWN_SECONDS}",
        f"needs more than {needed_s}",
    )

    # A loopback upstream (sidecar) must be a port of another container of the same pod.
    for addr in upstream.get("addresses", ["127.0.0.1:8081"]):
        host, port = port_of(addr)
        if host in ("127.0.0.1", "localhost", "::1"):
            others = [c for c in pod["containers"] if c is not container]
            report(
                any(port in container_ports(c) for c in others),
                f"{who}: loopback upstream {addr} is a port of a sibling container",
                "no container of the pod declares it",
            )

    # Prometheus scrape annotations point at the admin listener.
    ann = template.get("metadata", {}).get("annotations") or {}
    if "prometheus.io/port" in ann:
        report(
            ann["prometheus.io/port"] == str(admin_port) and ann.get("prometheus.io/path", "/metrics") == "/metrics",
            f"{who}: prometheus.io annotations point at the admin listener",
            f"port {ann['prometheus.io/port']} path {ann.get('prometheus.io/path')}",
        )

    # NetworkPolicies selecting this pod let the proxy ports in and, when they limit egress,
    # let DNS, HTTPS (Microsoft's key sets) and the upstream ports out.
    labels = template.get("metadata", {}).get("labels") or {}
    for np in (o for o in objects if o["kind"] == "NetworkPolicy"):
        if not matches(np["spec"].get("podSelector"), labels):
            continue
        types = np["spec"].get("policyTypes") or ["Ingress"]
        if "Ingress" in types:
            allowed = {
                resolve_port(p.get("port"), [container])
                for rule in np["spec"].get("ingress") or []
                for p in rule.get("ports") or []
            }
            missing = sorted(serving - allowed)
            report(not missing, f"{who}: {ident(np)} lets the proxy ports in", f"ports not allowed: {missing}")
        if "Egress" in types:
            allowed = {
                p.get("port")
                for rule in np["spec"].get("egress") or []
                for p in rule.get("ports") or []
            }
            wanted = {53, 443} | {port_of(a)[1] for a in upstream.get("addresses", [])}
            missing = sorted(wanted - allowed)
            report(not missing, f"{who}: {ident(np)} lets DNS, HTTPS and the upstream ports out", f"ports not allowed: {missing}")


def check_references(objects, configs_out, overlay):
    templates = list(pod_templates(objects))
    proxies = 0
    for workload, template in templates:
        for container in template["spec"]["containers"]:
            if image_name(container["image"]) == PROXY_IMAGE:
                proxies += 1
                check_proxy_container(workload, template, container, objects, configs_out, overlay)
    report(proxies > 0, "renders an eam-proxy container", "none found")

    def selected(selector):
        return [(w, t) for w, t in templates if matches(selector, t["metadata"].get("labels") or {})]

    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec") or {}
        if kind == "Service" and spec.get("selector"):
            pods = selected({"matchLabels": spec["selector"]})
            report(bool(pods), f"{ident(obj)}: selector matches pods", f"selector {spec['selector']}")
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port["port"])
                ok = all(resolve_port(target, t["spec"]["containers"]) is not None for _, t in pods)
                report(bool(pods) and ok, f"{ident(obj)}: port {port['port']} -> {target} exists in the pods", "no such container port")
        elif kind == "PodDisruptionBudget":
            report(bool(selected(spec.get("selector"))), f"{ident(obj)}: selector matches pods", str(spec.get("selector")))
        elif kind == "NetworkPolicy":
            pods = selected(spec.get("podSelector"))
            report(bool(pods), f"{ident(obj)}: podSelector matches pods", str(spec.get("podSelector")))
            named = [
                p["port"]
                for rule in spec.get("ingress") or []
                for p in rule.get("ports") or []
                if isinstance(p.get("port"), str)
            ]
            unknown = [n for n in named if not any(resolve_port(n, t["spec"]["containers"]) for _, t in pods)]
            report(not unknown, f"{ident(obj)}: named ingress ports exist in the pods", f"unknown: {unknown}")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            target = next((w for w, _ in templates if w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"]), None)
            report(target is not None, f"{ident(obj)}: scaleTargetRef {ref['kind']}/{ref['name']} exists", "not in the output")
            report(spec.get("minReplicas", 1) >= 2, f"{ident(obj)}: minReplicas >= 2", str(spec.get("minReplicas")))
            if target is not None:
                replicas = target["spec"].get("replicas", 1)
                report(
                    spec.get("minReplicas", 1) <= replicas <= spec["maxReplicas"],
                    f"{ident(obj)}: {ident(target)} replicas {replicas} within [minReplicas, maxReplicas]",
                    f"[{spec.get('minReplicas', 1)}, {spec['maxReplicas']}]",
                )
        elif (obj.get("apiVersion"), kind) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
            services = [
                o for o in objects
                if o["kind"] == "Service" and matches(spec.get("selector"), o["metadata"].get("labels") or {})
            ]
            report(bool(services), f"{ident(obj)}: selector matches a Service", str(spec.get("selector")))
            for ep in spec.get("endpoints") or []:
                ok = all(any(p.get("name") == ep.get("port") for p in s["spec"].get("ports") or []) for s in services)
                report(
                    bool(services) and ok and ep.get("path", "/metrics") == "/metrics",
                    f"{ident(obj)}: endpoint port {ep.get('port')} path {ep.get('path')} exists on the Services",
                    "no such Service port, or not /metrics",
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="overlay name, for messages and file names")
    parser.add_argument("--kubernetes-versions", default="1.30.0", help="comma-separated")
    parser.add_argument("--configs-out", required=True, help="directory for extracted configurations")
    parser.add_argument("rendered", help="YAML stream (kubectl kustomize output)")
    args = parser.parse_args()
    with open(args.rendered, encoding="utf-8") as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    report(bool(objects), "renders objects", "empty output")
    os.makedirs(args.configs_out, exist_ok=True)
    versions = [v.strip() for v in args.kubernetes_versions.split(",") if v.strip()]
    check_schemas(objects, versions)
    check_references(objects, args.configs_out, args.name)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
