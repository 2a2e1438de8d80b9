"""Autoscaling: each KEDA ScaledObject and HPA, run over a load trace (idle, burst, sustained,
idle) in 15-second steps, with the metric each trigger reads computed from the load and the
replicas (so scaling feeds back into the metric, as on the cluster). Requests the gateway refuses
(no valid API key) arrive whatever the load (slm_deploy.simulator.series).

Load is in concurrent requests. A replica serves up to C at once (vLLM --max-num-seqs, Ollama
OLLAMA_NUM_PARALLEL); the rest wait. `vllm:num_requests_running` = min(load, replicas x C),
`vllm:num_requests_waiting` = the rest, and both are absent at zero replicas: no pod exports
them. The gateway's request counter (`caddy_http_requests_total`) sees the demand whatever the
replicas, and also the kubelet's probes and Prometheus's scrapes that reach the same Caddy servers.
A KEDA trigger's value is its PromQL query evaluated over those series the way Prometheus would
(slm_deploy.simulator.series, slm_deploy.simulator.promql); an empty result reads 0.
CPU utilisation = load / (replicas x C). The HPA rules:
desired = ceil(metric / target) for AverageValue (KEDA's Prometheus trigger), ceil(replicas x
utilisation / target) with a 10 % tolerance for CPU; scale up at once, scale down to the highest
recommendation of the scale-down stabilization window (an HPA's behavior, else the default) and up
to the lowest of the scale-up window; KEDA activates from zero on a non-zero metric at its
polling interval and returns to zero after cooldownPeriod without one.

Not modelled: pod start-up time (weights loading), node provisioning, metric scrape lag.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.simulator import promql
from slm_deploy.simulator.model import Finding, SimResource, Stack, dig, label
from slm_deploy.simulator.series import Exports, exports

STEP = 15
PHASES = (("idle", 600, 0.0), ("burst", 600, 2.0), ("sustained", 1800, 0.8), ("idle", 1800, 0.0))


@dataclass(frozen=True)
class Trigger:
    metric: str  # waiting | inflight | gateway | cpu | other
    target: float
    activation: float = 0.0
    query: str = ""


@dataclass(frozen=True)
class Scaler:
    resource: SimResource
    kind: str  # keda | hpa
    min_replicas: int
    max_replicas: int
    triggers: tuple[Trigger, ...]
    polling: int
    cooldown: int
    capacity: int
    down_window: int | None = None  # an HPA's behavior.scaleDown.stabilizationWindowSeconds (None: the default)
    up_window: int = 0  # behavior.scaleUp.stabilizationWindowSeconds (Kubernetes' default for resource metrics: 0)
    exports: Exports | None = None  # the series a KEDA trigger's query reads

    @property
    def serving(self) -> Trigger:
        """The trigger that sizes the deployment (the others only activate it)."""
        return min(self.triggers, key=lambda t: t.target)


GATEWAY_SERIES = {"caddy_http_requests_total", "caddy_http_request_duration_seconds_count"}
KNOWN_SERIES = {*GATEWAY_SERIES, "vllm:num_requests_running", "vllm:num_requests_waiting"}


def _metric(query: str) -> str:
    parsed = promql.parse(query)
    if parsed is None or any(term.metric not in KNOWN_SERIES for term in parsed.terms):
        return "other"
    if any(term.metric in GATEWAY_SERIES for term in parsed.terms):
        return "gateway"
    names = set(re.findall(r"vllm:num_requests_(waiting|running)", query))
    return "inflight" if names == {"waiting", "running"} else "waiting" if names == {"waiting"} else "other"


def _capacity(deployment: SimResource | None, facts: AksFacts) -> int:
    if deployment is None:
        return facts.autoscaling.vllm_default_max_num_seqs
    for container in dig(deployment.inputs, "spec.template.spec.containers", []) or []:
        args = [str(a) for a in (container.get("args") or []) + (container.get("command") or [])]
        for i, arg in enumerate(args):
            if arg == "--max-num-seqs" and i + 1 < len(args):
                return int(args[i + 1])
            if arg.startswith("--max-num-seqs="):
                return int(arg.split("=", 1)[1])
        for env in container.get("env") or []:
            if env.get("name") == "OLLAMA_NUM_PARALLEL":
                return int(env["value"])
    return facts.autoscaling.vllm_default_max_num_seqs


def _target(stack: Stack, scaler: SimResource, ref: dict[str, str]) -> SimResource | None:
    ns = scaler.inputs["metadata"].get("namespace")
    for d in stack.manifests(ref.get("kind", "Deployment")):
        if d.inputs["metadata"]["name"] == ref.get("name") and d.inputs["metadata"].get("namespace") == ns:
            return d
    return None


# Where a KEDA ScaledObject and an HPA state their replica bounds, and what an unset bound is read as.
REPLICA_BOUNDS = {"keda": ("minReplicaCount", 0, "maxReplicaCount", 100), "hpa": ("minReplicas", 1, "maxReplicas", 1)}


def _replicas(kind: str, spec: dict[str, Any]) -> tuple[int, int]:
    low, low_default, high, high_default = REPLICA_BOUNDS[kind]
    return int(spec.get(low, low_default)), int(spec.get(high, high_default))


def _keda(stack: Stack, so: SimResource, facts: AksFacts) -> Scaler:
    spec = so.inputs.get("spec", {})
    target = _target(stack, so, spec.get("scaleTargetRef", {}))
    triggers = tuple(
        Trigger(
            _metric(str(dig(t, "metadata.query", ""))),
            float(dig(t, "metadata.threshold", 1)),
            float(dig(t, "metadata.activationThreshold", 0)),
            str(dig(t, "metadata.query", "")),
        )
        for t in spec.get("triggers") or []
    )
    polling, cooldown = int(spec.get("pollingInterval", 30)), int(spec.get("cooldownPeriod", 300))
    return Scaler(
        so,
        "keda",
        *_replicas("keda", spec),
        triggers,
        polling,
        cooldown,
        _capacity(target, facts),
        exports=exports(stack, target),
    )


def _hpa(stack: Stack, hpa: SimResource, metric: dict[str, Any], facts: AksFacts) -> Scaler:
    """The HPA scaling on its CPU `metric`."""
    spec = hpa.inputs.get("spec", {})
    return Scaler(
        hpa,
        "hpa",
        *_replicas("hpa", spec),
        (Trigger("cpu", float(dig(metric, "resource.target.averageUtilization", 80))),),
        facts.autoscaling.hpa_sync_seconds,
        0,
        _capacity(_target(stack, hpa, spec.get("scaleTargetRef", {})), facts),
        dig(spec, "behavior.scaleDown.stabilizationWindowSeconds"),
        int(dig(spec, "behavior.scaleUp.stabilizationWindowSeconds", 0) or 0),
    )


def scalers(stack: Stack, facts: AksFacts) -> list[Scaler]:
    keda = [_keda(stack, so, facts) for so in stack.manifests("ScaledObject")]
    hpas = [
        _hpa(stack, hpa, metric, facts)
        for hpa in stack.manifests("HorizontalPodAutoscaler")
        for metric in hpa.inputs.get("spec", {}).get("metrics") or []
        if dig(metric, "resource.name") == "cpu"
    ]
    return keda + hpas


def simulate(s: Scaler, facts: AksFacts) -> list[tuple[str, int, float, int, float]]:
    """[(phase, t, load, replicas, waiting per replica)] every STEP seconds."""
    window = facts.autoscaling.hpa_scale_down_stabilization_seconds if s.down_window is None else int(s.down_window)
    floor = max(s.min_replicas, 1)
    replicas = s.min_replicas if s.kind == "keda" else floor
    recommendations: list[tuple[int, int]] = []
    last_active = -(10**9)  # never active yet
    queries = [promql.parse(trigger.query) for trigger in s.triggers]
    history: list[list[promql.Sample]] = []
    keep = max([term.window or 0 for q in queries if q for term in q.terms] or [0]) // STEP + 1
    trace = []
    t = 0
    for phase, duration, factor in PHASES:
        load = factor * s.max_replicas * s.capacity
        for _ in range(duration // STEP):
            serving = replicas * s.capacity
            waiting = max(0.0, load - serving)
            running = min(load, serving)
            if s.kind == "keda":
                history = [*history[-keep + 1 :], s.exports.samples(load, running, waiting, replicas)] if s.exports else []
                values = [
                    (trigger, _value(trigger, query, history, t, load, running, waiting, replicas))
                    for trigger, query in zip(s.triggers, queries, strict=True)
                ]
                if any(value > trigger.activation for trigger, value in values):
                    last_active = t
                if replicas == 0:
                    if last_active == t and t % s.polling == 0:
                        replicas = floor
                elif s.min_replicas == 0 and last_active != t and t - last_active >= s.cooldown:
                    replicas = 0
                    recommendations.clear()
                else:
                    desired = max(
                        math.ceil(value / trigger.target) if trigger.target else s.max_replicas for trigger, value in values
                    )
                    replicas = _stabilize(replicas, desired, floor, s.max_replicas, recommendations, t, window)
            else:
                utilisation = 100.0 * min(1.0, load / serving) if serving else 0.0
                ratio = utilisation / s.serving.target
                desired = replicas if abs(ratio - 1) <= 0.1 else math.ceil(replicas * ratio)
                replicas = _stabilize(replicas, desired, floor, s.max_replicas, recommendations, t, window, s.up_window)
            trace.append((phase, t, load, replicas, waiting / max(replicas, 1)))
            t += STEP
    return trace


def _value(
    trigger: Trigger,
    query: promql.Query | None,
    history: list[list[promql.Sample]],
    t: int,
    load: float,
    running: float,
    waiting: float,
    replicas: int,
) -> float:
    if query is not None and history:
        return promql.evaluate(query, history, t, STEP) or 0.0  # KEDA reads an empty result as 0
    metric = trigger.metric
    if metric == "gateway":
        return load  # requests reach the gateway whether or not a replica runs
    if replicas == 0:
        return 0.0  # no pod, no vllm:* series
    return {"waiting": waiting, "inflight": waiting + running, "other": load}.get(metric, 0.0)


def _stabilize(
    replicas: int, desired: int, low: int, high: int, history: list[tuple[int, int]], t: int, window: int, up_window: int = 0
) -> int:
    """Scale down to the highest recommendation of the scale-down window; scale up to the lowest of
    the scale-up window (only `desired` when that window is 0)."""
    desired = min(max(desired, low), high)
    history.append((t, desired))
    while history and history[0][0] <= t - max(window, up_window):
        history.pop(0)
    if desired >= replicas:
        recent = [d for at, d in history if at > t - up_window] if up_window else [desired]
        return max(replicas, min(recent))
    return min(replicas, max(d for at, d in history if at > t - window))


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings = []
    for s in scalers(stack, facts):
        where = label(s.resource)
        if any(t.metric == "other" for t in s.triggers):
            findings.append(Finding("SLM-SIM-008", where, "trigger reads a metric the simulation does not know; not simulated"))
            continue
        trace = simulate(s, facts)
        low = 0 if s.kind == "keda" and s.min_replicas == 0 else max(s.min_replicas, 1)
        if any(r < low or r > s.max_replicas for _, _, _, r, _ in trace):
            findings.append(Finding("SLM-SIM-008", where, f"replicas leave [{low}, {s.max_replicas}]"))
        woken = [t for phase, t, _, r, _ in trace if phase == "idle" and t < PHASES[0][1] and r > 0]
        if low == 0 and woken:
            findings.append(
                Finding(
                    "SLM-SIM-008",
                    where,
                    f"wakes from zero with no user request after {woken[0]} s: its activation query counts probes, scrapes "
                    "or requests the gateway refuses (401)",
                )
            )
        burst = [r for phase, _, _, r, _ in trace if phase == "burst"]
        if max(burst) == 0:
            findings.append(Finding("SLM-SIM-008", where, "never scales from zero: no trigger sees demand while no replica runs"))
        elif max(burst) < s.max_replicas:
            findings.append(
                Finding(
                    "SLM-SIM-008",
                    where,
                    f"a burst of {2 * s.max_replicas * s.capacity} requests reaches only {max(burst)} replicas",
                )
            )
        sustained = [(r, w) for phase, _, _, r, w in trace if phase == "sustained"]
        settled = sustained[len(sustained) // 2 :]
        changes = sum(1 for a, b in pairwise(settled) if a[0] != b[0])
        queue = max(w for _, w in settled)
        # What may wait per replica at steady state: the threshold for a queue metric; for in-flight
        # requests, what the target allows beyond the replica's own slots.
        metric, target = s.serving.metric, s.serving.target
        allowed = target if metric == "waiting" else max(target - s.capacity, 1)
        limit = allowed * 1.5
        if changes > 1:
            findings.append(
                Finding("SLM-SIM-008", where, f"under sustained load replicas oscillate ({changes} changes in 15 minutes)")
            )
        elif metric != "cpu" and queue > limit and settled[-1][0] < s.max_replicas:
            findings.append(
                Finding(
                    "SLM-SIM-008",
                    where,
                    f"under sustained load {queue:.0f} requests wait per replica at {settled[-1][0]} replicas",
                )
            )
        end = trace[-1][3]
        if end != low:
            findings.append(Finding("SLM-SIM-008", where, f"after 30 idle minutes still {end} replicas (minimum {low})"))
    return findings
