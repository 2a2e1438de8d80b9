"""Scheduling: the node pools as AKS creates them, every pod template the stack creates (its own
workloads and each Helm release's components, from the chart profiles), and where each can run.

A pool's taints and labels are the program's plus those AKS puts on its kind of pool; its
allocatable CPU and memory are the VM size's less AKS's reservations and its own DaemonSets' requests; it advertises
`nvidia.com/gpu` only when a device plugin runs. A pod fits a pool when it tolerates every
NoSchedule/NoExecute taint, its nodeSelector matches the labels and its requests fit one node;
its replicas must then fit the pool's nodes at the pool's maximum count (first-fit, largest first).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from slm_deploy.catalog import load_catalog
from slm_deploy.catalog.platform import AksFacts
from slm_deploy.simulator.model import Finding, SimResource, Stack, chart_profile, cpu_millis, dig, label, memory_mib

GPU = "nvidia.com/gpu"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


@dataclass
class Pool:
    name: str
    vm_size: str
    max_nodes: int
    taints: list[dict[str, str]]
    labels: dict[str, str]
    cpu: int  # allocatable millicores per node
    memory: int  # allocatable MiB per node
    gpus: int  # advertised nvidia.com/gpu per node
    nodes: list[list[int]] = field(default_factory=list)  # remaining (cpu, memory, gpu) per node while packing


@dataclass
class Pod:
    owner: str
    tolerations: list[dict[str, Any]]
    node_selector: dict[str, str]
    cpu: int
    memory: int
    gpus: int
    replicas: int
    daemon: bool = False
    needs_gpu: bool = False
    surge: int = 0  # extra pods a RollingUpdate starts at the largest replica count


def parse_taint(taint: str) -> dict[str, str]:
    key_value, effect = taint.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect}


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        operator = t.get("operator", "Equal")
        if operator == "Exists" and not t.get("key"):
            return True
        if t.get("key") != taint["key"]:
            continue
        if operator == "Exists" or str(t.get("value", "")) == taint["value"]:
            return True
    return False


def _device_plugin(stack: Stack) -> bool:
    for release in stack.releases():
        if (
            release.inputs.get("chart") == "gpu-operator"
            and dig(release.inputs, "values.devicePlugin.enabled", True) is not False
        ):
            return True
    return False


def pools(stack: Stack, facts: AksFacts) -> list[Pool]:
    cluster = stack.cluster
    if cluster is None:
        return []
    catalog = load_catalog()
    profiles = [dict(p, mode=p.get("mode", "System")) for p in cluster.inputs.get("agentPoolProfiles") or []]
    for r in stack.of_type("azure-native:containerservice:AgentPool"):
        profiles.append({**r.inputs, "name": r.inputs.get("agentPoolName", r.name)})
    plugin = _device_plugin(stack)
    out = []
    for p in profiles:
        size = facts.node_size(p["vmSize"])
        if size is None:
            continue  # the platform check reports sizes without facts
        kind = "spot" if p.get("scaleSetPriority") == "Spot" else ("system" if p.get("mode") == "System" else "user")
        kinds = [kind, "user"] if kind == "spot" else [kind]
        taints = [parse_taint(t) for t in p.get("nodeTaints") or []]
        labels = {"kubernetes.azure.com/agentpool": p["name"], "agentpool": p["name"], "kubernetes.io/os": "linux"}
        for k in kinds:
            taints += [parse_taint(t) for t in facts.pool_kinds[k].taints]  # type: ignore[index]
            labels |= facts.pool_kinds[k].labels  # type: ignore[index]
        labels |= p.get("nodeLabels") or {}
        cpu, memory = facts.pod_room(size.vcpus, size.memory_gib)
        vm = catalog.vm_sizes.get(p["vmSize"])
        gpus = vm.gpu_count if vm and plugin else 0
        max_nodes = int((p.get("maxCount") if p.get("enableAutoScaling") else p.get("count")) or 0)
        out.append(Pool(p["name"], p["vmSize"], max_nodes, taints, labels, cpu, memory, gpus))
    return out


def _requests(spec: dict[str, Any]) -> tuple[int, int, int]:
    def total(containers: list[dict[str, Any]]) -> tuple[int, int, int]:
        cpu = memory = gpus = 0
        for c in containers:
            req = dig(c, "resources.requests", {}) or {}
            lim = dig(c, "resources.limits", {}) or {}
            cpu += cpu_millis(req.get("cpu", 0))
            memory += memory_mib(req.get("memory", 0))
            gpus += int(req.get(GPU, lim.get(GPU, 0)) or 0)
        return cpu, memory, gpus

    main = total(spec.get("containers") or [])
    inits = [total([c]) for c in spec.get("initContainers") or []]
    return tuple(max([main[i], *(x[i] for x in inits)]) for i in range(3))  # type: ignore[return-value]


def _replicas(stack: Stack, workload: SimResource) -> int:
    manifest = workload.inputs
    name = manifest["metadata"]["name"]
    ns = manifest["metadata"].get("namespace")
    for scaler in stack.manifests("ScaledObject", "HorizontalPodAutoscaler"):
        spec = scaler.inputs.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        if target.get("name") == name and scaler.inputs["metadata"].get("namespace") == ns:
            return int(spec.get("maxReplicaCount", spec.get("maxReplicas", 1)))
    return (
        int(dig(manifest, "spec.replicas", 1) or 1)
        if manifest["kind"] != "Job"
        else int(dig(manifest, "spec.parallelism", 1) or 1)
    )


def _surge(manifest: dict[str, Any], replicas: int) -> int:
    """Pods a Deployment's RollingUpdate adds above `replicas` (maxSurge; Kubernetes' default 25%,
    a percentage rounded up: kubernetes.io/docs/concepts/workloads/controllers/deployment/#max-surge)."""
    if manifest["kind"] != "Deployment":
        return 0
    strategy = dig(manifest, "spec.strategy", {}) or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    value = str(dig(strategy, "rollingUpdate.maxSurge", "25%"))
    if value.endswith("%"):
        return math.ceil(replicas * float(value[:-1]) / 100)
    return int(value)


def workload_pods(stack: Stack) -> list[Pod]:
    out = []
    for workload in stack.manifests(*WORKLOAD_KINDS):
        spec = dig(workload.inputs, "spec.template.spec", {}) or {}
        cpu, memory, gpus = _requests(spec)
        replicas = _replicas(stack, workload)
        out.append(
            Pod(
                label(workload),
                list(spec.get("tolerations") or []),
                dict(spec.get("nodeSelector") or {}),
                cpu,
                memory,
                gpus,
                replicas,
                daemon=workload.inputs["kind"] == "DaemonSet",
                surge=_surge(workload.inputs, replicas),
            )
        )
    return out


def chart_pods(stack: Stack, findings: list[Finding], rule: str = "SLM-SIM-001") -> list[Pod]:
    out = []
    for release in stack.releases():
        chart, version = release.inputs.get("chart"), release.inputs.get("version")
        profile = chart_profile(release)
        if profile is None:
            findings.append(Finding(rule, label(release), f"no chart profile for {chart} {version}: its pods cannot be checked"))
            continue
        values = release.inputs.get("values") or {}
        for rwo in profile.rwo_deployments:
            strategy = dig(values, rwo.strategy, rwo.default_strategy)
            if dig(values, rwo.persistence) is True and strategy != "Recreate":
                findings.append(
                    Finding(
                        rule, label(release), f"{rwo.strategy} {strategy} on a ReadWriteOnce disk: the new pod cannot attach it"
                    )
                )
        for component in profile.components:
            if component.enabled and dig(values, component.enabled, True) is False:
                continue
            tolerations = dig(values, component.tolerations, component.defaults.get("tolerations", []))
            selector = component.defaults.get("node_selector", {})
            if component.node_selector:
                selector = dig(values, component.node_selector, selector)
            resources = dig(values, component.resources, component.defaults.get("resources", {})) or {}
            requests = resources.get("requests") or {}
            out.append(
                Pod(
                    f"{label(release)} component {component.name} ({component.kind})",
                    list(tolerations or []),
                    dict(selector or {}),
                    cpu_millis(requests.get("cpu", 0)),
                    memory_mib(requests.get("memory", 0)),
                    0,
                    1,
                    daemon=component.kind == "DaemonSet",
                    needs_gpu=component.needs == "gpu",
                )
            )
    return out


def _why_not(pod: Pod, pool: Pool) -> str | None:
    for taint in pool.taints:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, taint):
            value = f"={taint['value']}" if taint["value"] else ""
            return f"taint {taint['key']}{value}:{taint['effect']} not tolerated"
    for key, value in pod.node_selector.items():
        if pool.labels.get(key) != value:
            return f"nodeSelector {key}={value} does not match"
    if pool.max_nodes < 1:
        return "the pool has no nodes"
    if pod.gpus > pool.gpus:
        return f"needs {pod.gpus} GPU(s), a node offers {pool.gpus}"
    if pod.cpu > pool.cpu:
        return f"requests {pod.cpu}m CPU, a node offers {pool.cpu}m"
    if pod.memory > pool.memory:
        return f"requests {pod.memory} MiB, a node offers {pool.memory} MiB"
    return None


def _place(pod: Pod, pool: Pool) -> bool:
    if not pool.nodes:
        pool.nodes = [[pool.cpu, pool.memory, pool.gpus] for _ in range(pool.max_nodes)]
    for node in pool.nodes:
        if node[0] >= pod.cpu and node[1] >= pod.memory and node[2] >= pod.gpus:
            node[0] -= pod.cpu
            node[1] -= pod.memory
            node[2] -= pod.gpus
            return True
    return False


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings: list[Finding] = []
    node_pools = pools(stack, facts)
    if not node_pools:
        return findings  # existing clusters: their pools are not declared here
    pods = workload_pods(stack) + chart_pods(stack, findings)
    for pod in [p for p in pods if p.daemon]:
        if not pod.needs_gpu:
            continue
        for pool in node_pools:
            if pool.gpus or pool.labels.get("slm.dev/accelerator") == "nvidia":
                reason = _why_not(Pod(pod.owner, pod.tolerations, pod.node_selector, 0, 0, 0, 1), pool)
                if reason:
                    findings.append(Finding("SLM-SIM-002", pod.owner, f"does not run on GPU pool {pool.name}: {reason}"))
    placed: list[tuple[Pod, list[Pool]]] = []
    for pod in sorted((p for p in pods if not p.daemon), key=lambda p: (-p.gpus, -p.memory, -p.cpu, p.owner)):
        reasons = {pool.name: _why_not(pod, pool) for pool in node_pools}
        fitting = [pool for pool in node_pools if reasons[pool.name] is None]
        if not fitting:
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(reasons.items()))
            findings.append(Finding("SLM-SIM-001", pod.owner, f"fits no node pool ({detail})"))
            continue
        placed.append((pod, fitting))
        left_out = _first_left_out(pod, fitting, pod.replicas)
        if left_out is not None:
            names = ", ".join(p.name for p in fitting)
            message = f"replica {left_out} of {pod.replicas} does not fit pools {names} at their maximum node count"
            findings.append(Finding("SLM-SIM-001", pod.owner, message))
    findings += _rollouts(placed)
    return findings


def _first_left_out(pod: Pod, fitting: list[Pool], count: int) -> int | None:
    """Place `count` copies of `pod` (first fit); the 1-based number of the first that fits nowhere."""
    for i in range(count):
        if not any(_place(pod, pool) for pool in fitting):
            return i + 1
    return None


def _rollouts(placed: list[tuple[Pod, list[Pool]]]) -> list[Finding]:
    """Each Deployment's rollout on its own, beside everything else at its maximum: its surge pods
    must fit what the other pods leave free (two rollouts at once are not modelled)."""
    findings = []
    for pod, fitting in placed:
        left_out = _first_left_out(pod, copy.deepcopy(fitting), pod.surge) if pod.surge else None
        if left_out is not None:
            names = ", ".join(p.name for p in fitting)
            findings.append(
                Finding(
                    "SLM-SIM-018",
                    pod.owner,
                    f"RollingUpdate surge pod {left_out} of {pod.surge} does not fit pools {names} beside {pod.replicas} "
                    "replicas at their maximum node count: the rollout stalls (maxSurge 0 / maxUnavailable 1, or Recreate)",
                )
            )
    return findings
