"""What a model server needs from the stack besides its Plan, and where its pods are placed
(node selector, tolerations, the workload identity label), shared by its workloads."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.core.v1 import TolerationArgs

from slm_deploy.environment import AutoscalingSpec
from slm_deploy.stacks.k8s.common import GPU_TOLERATION, tolerations_for
from slm_deploy.stacks.k8s.namespace import ServingNamespace
from slm_deploy.stacks.placement import POOL_LABEL


@dataclass(frozen=True)
class ServerSettings:
    """What a server needs from the stack besides its Plan."""

    namespace: ServingNamespace
    pool: str | None  # node selector value for slm.dev/pool; None on existing clusters
    storage_class: str
    autoscaling: AutoscalingSpec
    keda: bool
    monitoring: bool
    has_hf_token: bool
    workload_identity: bool  # Key Vault secrets through Azure workload identity (aks mode)
    # The monitoring release (installs the PodMonitor CRD); None when monitoring is off.
    monitoring_release: pulumi.Resource | None = None
    # Taints the pool carries besides the GPU taint (AKS's spot taint on spot pools; a CPU pool's own taint).
    pool_taints: tuple[str, ...] = ()
    # A CPU pool: pods tolerate only pool_taints, not the GPU taint.
    gpu_pool: bool = True
    # Existing clusters: the nodeSelector of the pool's nodes (from cpuPools), instead of slm.dev/pool.
    node_selector: dict[str, str] | None = None
    # PromQL for the demand the gateway sees for this model: what wakes it from zero replicas,
    # when no vllm:* series exists. Set only where the gateway serves this model alone.
    activation_query: str | None = None
    # vCPUs of one node of the pool (the VM size the model is planned on): the CPU limit's ceiling.
    node_vcpus: int | None = None


def identity_label(settings: ServerSettings) -> dict[str, str]:
    # Workload identity projects a token only into pods that ask for it (Key Vault mode).
    return {"azure.workload.identity/use": "true"} if settings.workload_identity else {}


def node_selector(settings: ServerSettings) -> dict[str, str] | None:
    if settings.node_selector is not None:
        return settings.node_selector or None
    return {POOL_LABEL: settings.pool} if settings.pool else None


def tolerations(settings: ServerSettings, gpu: bool) -> list[TolerationArgs] | None:
    # GPU pods tolerate the GPU taint and the pool's; pods on a CPU pool only that pool's own taints.
    if gpu:
        return [GPU_TOLERATION, *tolerations_for(settings.pool_taints)]
    return None if settings.gpu_pool else (tolerations_for(settings.pool_taints) or None)
