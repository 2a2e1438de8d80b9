"""The series Prometheus really holds for a stack, step by step: what the gateway's Caddy counts
(user requests, and the kubelet's probes and Prometheus's scrapes that reach the same servers) and
what the model server exports while a replica runs. KEDA triggers are evaluated over these
(slm_deploy.simulator.promql), so a query that counts probes never reads zero (AKS-07).

Derived from the rendered stack only:
- Caddy: one server per site of the mounted Caddyfile, named by the global `servers ADDR { name N }`
  option, else `srvN` in the order of the sites (caddyconfig/httpcaddyfile/httptype.go names them
  srv0, srv1, ...); every request a server handles is counted once in `caddy_http_requests_total`
  with labels server and handler (caddy v2.10.2 modules/caddyhttp/metrics.go, basicLabels; a request
  inside a `handle` block counts once under handler="subroute", routes.go wrapMiddleware); the same
  request is observed in `caddy_http_request_duration_seconds` with labels code and method as well
  (metrics.go, httpLabels; its `_count` series counts requests by status), which
  `caddy_http_requests_total` has not: a 401 for a missing key counts there like a served request;
- probes: the kubelet runs readiness and liveness probes every periodSeconds for the pod's whole
  life (startup probes stop at the first success, so they are left out);
- scrapes: each ServiceMonitor or PodMonitor endpoint every `interval`; the Prometheus Operator
  adds the namespace, service, pod, container, endpoint and job labels to every target;
- user requests: they enter through the Service ports that no monitor scrapes (502 while no model
  replica runs), beside requests the gateway refuses with 401 (REFUSED_RATE).

Not modelled: the request *rate* a given concurrency produces (one request per second per request
in flight; only zero and non-zero matter for activation), several Prometheus replicas, HPA-scaled
gateways (the Deployment's replicas are used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from slm_deploy.simulator.model import SimResource, Stack, dig
from slm_deploy.simulator.promql import Sample

# Kubernetes API defaults (k8s.io/api core/v1 types.go: Probe.PeriodSeconds "Defaults to 10
# seconds") and the Prometheus Operator's default scrape interval (prometheus-operator
# Documentation/api.md, PrometheusSpec.scrapeInterval: "Default: 30s").
PROBE_PERIOD_DEFAULT = 10
SCRAPE_INTERVAL_DEFAULT = 30
# Requests per second that reach the gateway's user port without a valid key, at every moment: only
# zero or not matters (activation thresholds are 0), and on a reachable endpoint it is never zero.
REFUSED_RATE = 1 / 60
_PLACEHOLDER = re.compile(r"\{\$([A-Za-z0-9_]+)(?::([^}]*))?\}")
_NAMED = re.compile(r"^\s*servers\s+(\S+)\s*\{\s*\n\s*name\s+(\S+)\s*\n\s*\}", re.M)
_SITE = re.compile(r"^(?:https?://)?(\S*:\S+)\s*\{\s*$", re.M)
_DURATION = re.compile(r"^(\d+)(s|m|h)$")
ScrapedPort = tuple[int, int, dict[str, str]]  # (container port, interval, target labels)


@dataclass(frozen=True)
class CaddyServer:
    name: str
    port: int
    handler: str  # the handler label its requests carry


@dataclass
class Gateway:
    deployment: SimResource
    replicas: int
    servers: list[CaddyServer]
    user_ports: set[int]
    probes: dict[int, float] = field(default_factory=dict)  # container port -> probes per second per pod
    scrapes: list[ScrapedPort] = field(default_factory=list)


@dataclass
class Exports:
    """Every series the stack's scaled deployment and its gateway export, per step."""

    namespace: str
    gateways: list[Gateway]
    model_monitors: list[ScrapedPort]  # the model pods' scrape targets
    model_name: str
    target: str

    def samples(self, load: float, running: float, waiting: float, replicas: int) -> list[Sample]:
        out = []
        for gw in self.gateways:
            for i in range(gw.replicas):
                pod = f"{gw.deployment.inputs['metadata']['name']}-{i}"
                for server in gw.servers:
                    by_status = _by_status(gw, server, load, replicas)
                    rate = sum(by_status.values())
                    for _, interval, target in gw.scrapes:
                        labels = {**target, "pod": pod, "server": server.name, "handler": server.handler}
                        out.append(_sample("caddy_http_requests_total", labels, rate, interval))
                        for (code, method), part in sorted(by_status.items()):
                            status = {**labels, "code": code, "method": method}
                            out.append(_sample("caddy_http_request_duration_seconds_count", status, part, interval))
        if replicas > 0:
            for i in range(replicas):
                for _, interval, target in self.model_monitors:
                    labels = {**target, "pod": f"{self.target}-{i}", "model_name": self.model_name}
                    out.append(_sample("vllm:num_requests_running", labels, running / replicas, interval))
                    out.append(_sample("vllm:num_requests_waiting", labels, waiting / replicas, interval))
        return out


def _by_status(gw: Gateway, server: CaddyServer, load: float, replicas: int) -> dict[tuple[str, str], float]:
    """Requests per second one gateway pod's `server` answers, by (code, method): probes and scrapes
    (GET, 200); users' requests (POST: 200, or 502 while no model replica runs: the proxy has no
    upstream); and requests the gateway itself refuses with 401 (no or a wrong API key), which
    reach a user port whenever it is reachable at all (scanners behind the ingress, a client
    with a stale key), whatever the users do."""
    rates: dict[tuple[str, str], float] = {}

    def add(code: str, method: str, rate: float) -> None:
        rates[(code, method)] = rates.get((code, method), 0.0) + rate

    probes = gw.probes.get(server.port, 0.0) + sum(1 / interval for port, interval, _ in gw.scrapes if port == server.port)
    if probes:
        add("200", "GET", probes)
    if server.port in gw.user_ports:
        add("200", "POST", load / gw.replicas if replicas else 0.0)
        add("502", "POST", 0.0 if replicas else load / gw.replicas)
        add("401", "POST", REFUSED_RATE / gw.replicas)
    return rates


def _sample(metric: str, labels: dict[str, str], value: float, interval: int) -> Sample:
    return Sample(metric, tuple(sorted(labels.items())), value, interval)


def _seconds(value: Any, default: int) -> int:
    match = _DURATION.match(str(value or ""))
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)] if match else default


def _expand(text: str, env: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text)


def _port(address: str) -> int | None:
    tail = address.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def caddy_servers(caddyfile: str, env: dict[str, str]) -> list[CaddyServer]:
    """The servers Caddy builds from a Caddyfile: one per site address (`bind` does not split them)."""
    text = _expand(caddyfile, env)
    names = {_port(addr): name for addr, name in _NAMED.findall(text)}
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    sites: list[tuple[str, list[str]]] = []
    in_global = bool(lines) and next((ln.strip() for ln in lines if ln.strip()), "") == "{"
    for line in lines:
        if in_global:
            in_global = line != "}"
            continue
        head = _SITE.fullmatch(line)
        if head and not line.startswith(("\t", " ")):
            sites.append((head.group(1), []))
        elif sites:
            sites[-1][1].append(line)
    servers = []
    for i, (address, body) in enumerate(sites):
        port = _port(address)
        if port is not None:
            handler = "subroute" if any(ln.startswith("\thandle") for ln in body) else "metrics"
            servers.append(CaddyServer(names.get(port, f"srv{i}"), port, handler))
    return servers


def _pods_of(stack: Stack, ns: str, selector: dict[str, str]) -> list[SimResource]:
    return [
        d
        for d in stack.manifests("Deployment")
        if d.inputs["metadata"].get("namespace") == ns
        and selector
        and all(dig(d.inputs, "spec.template.metadata.labels", {}).get(k) == v for k, v in selector.items())
    ]


def _containers(deployment: SimResource) -> list[dict[str, Any]]:
    return list(dig(deployment.inputs, "spec.template.spec.containers", []) or [])


def _container_port(deployment: SimResource, port: Any) -> int | None:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for container in _containers(deployment):
        for p in container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    return None


def _caddyfile(stack: Stack, deployment: SimResource) -> str | None:
    ns = deployment.inputs["metadata"].get("namespace")
    for volume in dig(deployment.inputs, "spec.template.spec.volumes", []) or []:
        name = dig(volume, "configMap.name")
        for cm in stack.manifests("ConfigMap"):
            meta = cm.inputs["metadata"]
            if name and meta.get("name") == name and meta.get("namespace") == ns:
                text = (cm.inputs.get("data") or {}).get("Caddyfile")
                if isinstance(text, str):
                    return text
    return None


def _pod_labels(deployment: SimResource) -> dict[str, str]:
    return dig(deployment.inputs, "spec.template.metadata.labels", {}) or {}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _scrape(deployment: SimResource, endpoint: dict[str, Any], port: Any, labels: dict[str, str]) -> list[ScrapedPort]:
    """The target of one monitor endpoint, when `port` names or numbers a port of the deployment's pods."""
    number = _container_port(deployment, port)
    return [] if number is None else [(number, _seconds(endpoint.get("interval"), SCRAPE_INTERVAL_DEFAULT), labels)]


def _service_monitor_targets(stack: Stack, deployment: SimResource) -> list[ScrapedPort]:
    """Every ServiceMonitor endpoint reaching the pods, through a Service that selects them."""
    ns = deployment.inputs["metadata"].get("namespace", "")
    out = []
    for monitor in stack.manifests("ServiceMonitor"):
        wanted = dig(monitor.inputs, "spec.selector.matchLabels", {}) or {}
        namespaces = dig(monitor.inputs, "spec.namespaceSelector.matchNames") or [monitor.inputs["metadata"].get("namespace")]
        for svc in stack.manifests("Service"):
            meta = svc.inputs["metadata"]
            selector = dig(svc.inputs, "spec.selector", {}) or {}
            if meta.get("namespace") != ns or ns not in namespaces:
                continue
            if not _selects(wanted, meta.get("labels") or {}):
                continue
            if not selector or not _selects(selector, _pod_labels(deployment)):
                continue
            for endpoint in dig(monitor.inputs, "spec.endpoints", []) or []:
                for sp in dig(svc.inputs, "spec.ports", []) or []:
                    if sp.get("name") == endpoint.get("port"):
                        labels = {"namespace": ns, "service": meta["name"], "endpoint": str(endpoint.get("port"))}
                        out += _scrape(deployment, endpoint, sp.get("targetPort", sp.get("port")), labels)
    return out


def _pod_monitor_targets(stack: Stack, deployment: SimResource) -> list[ScrapedPort]:
    ns = deployment.inputs["metadata"].get("namespace", "")
    return [
        target
        for monitor in stack.manifests("PodMonitor")
        if monitor.inputs["metadata"].get("namespace") == ns
        and _selects(dig(monitor.inputs, "spec.selector.matchLabels", {}) or {}, _pod_labels(deployment))
        for endpoint in dig(monitor.inputs, "spec.podMetricsEndpoints", []) or []
        for target in _scrape(
            deployment, endpoint, endpoint.get("port"), {"namespace": ns, "endpoint": str(endpoint.get("port"))}
        )
    ]


def _gateway(stack: Stack, deployment: SimResource) -> Gateway | None:
    caddyfile = _caddyfile(stack, deployment)
    if caddyfile is None:
        return None
    env: dict[str, str] = {}
    probes: dict[int, float] = {}
    for container in _containers(deployment):
        env.update({e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e})
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind) or {}
            port = _container_port(deployment, dig(probe, "httpGet.port"))
            if port is not None:
                probes[port] = probes.get(port, 0.0) + 1 / int(probe.get("periodSeconds") or PROBE_PERIOD_DEFAULT)
    scrapes = _service_monitor_targets(stack, deployment)
    scraped = {port for port, _, _ in scrapes}
    ns = deployment.inputs["metadata"].get("namespace")
    user_ports = set()
    for svc in stack.manifests("Service"):
        selector = dig(svc.inputs, "spec.selector", {}) or {}
        if svc.inputs["metadata"].get("namespace") == ns and selector and _selects(selector, _pod_labels(deployment)):
            for sp in dig(svc.inputs, "spec.ports", []) or []:
                port = _container_port(deployment, sp.get("targetPort", sp.get("port")))
                if port is not None and port not in scraped:
                    user_ports.add(port)
    return Gateway(
        deployment,
        int(dig(deployment.inputs, "spec.replicas", 1) or 1),
        caddy_servers(caddyfile, env),
        user_ports,
        probes,
        scrapes,
    )


def _served_name(deployment: SimResource | None) -> str:
    for container in _containers(deployment) if deployment else []:
        args = [str(a) for a in container.get("args") or []]
        for i, arg in enumerate(args):
            if arg == "--served-model-name" and i + 1 < len(args):
                return args[i + 1]
        if args:
            return args[0]
    return ""


def exports(stack: Stack, scaled: SimResource | None) -> Exports:
    """What Prometheus scrapes that a trigger of `scaled`'s autoscaler could read."""
    ns = scaled.inputs["metadata"].get("namespace", "") if scaled else ""
    gateways = [g for d in stack.manifests("Deployment") if d is not scaled and (g := _gateway(stack, d)) is not None]
    return Exports(
        ns,
        gateways,
        _pod_monitor_targets(stack, scaled) if scaled else [],
        _served_name(scaled),
        scaled.inputs["metadata"]["name"] if scaled else "",
    )
