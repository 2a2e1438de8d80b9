"""The AKS node pools beside the system pool: GPU and CPU pools for model servers, the platform
pool for everything else (separate AgentPool resources, never inline in the cluster)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import containerservice

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.environment import GPU_POOL_MAX_SURGE, ClusterSpec, CpuPoolSpec, GpuDriver, GpuPoolSpec

GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
# CPU model servers only: the gateway, monitoring and platform pods stay off these nodes.
CPU_MODELS_TAINT = "slm.dev/cpu-models=true:NoSchedule"
POOL_LABEL = "slm.dev/pool"
PLATFORM_POOL = "platform"


def _model_pool(
    owner: pulumi.Resource,
    name: str,
    *,
    pool: GpuPoolSpec | CpuPoolSpec,
    vm_size: str,
    os_disk_gb: int | None,
    taint: str,
    accelerator: str,
    place: PoolPlace,
    gpu_profile: containerservice.GPUProfileArgs | None = None,
    gpu_instance_profile: str | None = None,
    upgrade_settings: containerservice.AgentPoolUpgradeSettingsArgs | None = None,
) -> containerservice.AgentPool:
    """A User pool for model servers only: tainted for them, labelled with its name, autoscaled, optionally spot."""
    # AKS writes its spot taint and label into a spot pool's own nodeTaints/nodeLabels; declaring
    # them keeps a refresh from showing a diff on every `up` (AKS-11).
    spot = load_aks_facts().pool_kinds["spot"] if pool.spot else None
    return containerservice.AgentPool(
        f"{name}-pool",
        agent_pool_name=pool.name,
        resource_group_name=place.resource_group_name,
        resource_name_=place.cluster_name,
        mode=containerservice.AgentPoolMode.USER,
        vm_size=vm_size,
        os_type=containerservice.OSType.LINUX,
        os_sku=containerservice.OSSKU.UBUNTU,
        # Ephemeral OS disks live on the size's temp disk and must fit it (environment checks).
        os_disk_type=containerservice.OSDiskType.EPHEMERAL
        if pool.os_disk_type == "Ephemeral"
        else containerservice.OSDiskType.MANAGED,
        os_disk_size_gb=os_disk_gb,
        vnet_subnet_id=place.subnet_id,
        enable_auto_scaling=True,
        min_count=pool.min_count,
        max_count=pool.max_count,
        count=pool.min_count,
        node_taints=[taint, *(spot.taints if spot else ())],
        node_labels={POOL_LABEL: pool.name, "slm.dev/accelerator": accelerator, **(spot.labels if spot else {})},
        gpu_profile=gpu_profile,
        gpu_instance_profile=gpu_instance_profile,
        upgrade_settings=upgrade_settings,
        scale_set_priority=containerservice.ScaleSetPriority.SPOT if pool.spot else None,
        scale_set_eviction_policy=containerservice.ScaleSetEvictionPolicy.DELETE if pool.spot else None,
        spot_max_price=-1 if pool.spot else None,
        # The cluster autoscaler owns the node count; Pulumi must not fight it.
        opts=pulumi.ResourceOptions(parent=owner, ignore_changes=["count"]),
    )


@dataclass(frozen=True)
class PoolPlace:
    """Where a pool joins the cluster: the cluster's resource group and name, and the nodes' subnet."""

    resource_group_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    subnet_id: pulumi.Input[str]


class GpuNodePool(pulumi.ComponentResource):
    """One GPU pool: tainted for GPU workloads only, autoscaled, optionally spot or MIG-partitioned."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        pool: GpuPoolSpec,
        vm_size: str,
        os_disk_gb: int | None,
        driver: GpuDriver,
        place: PoolPlace,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:GpuNodePool", name, None, opts)
        agent_pool = _model_pool(
            self,
            name,
            pool=pool,
            vm_size=vm_size,
            os_disk_gb=os_disk_gb,
            taint=GPU_TAINT,
            accelerator="nvidia",
            place=place,
            # With the GPU Operator, AKS must not install drivers too ("None"); otherwise AKS installs
            # them and the device plugin DaemonSet advertises nvidia.com/gpu.
            gpu_profile=containerservice.GPUProfileArgs(
                driver=containerservice.GPUDriver.NONE if driver is GpuDriver.OPERATOR else containerservice.GPUDriver.INSTALL
            ),
            gpu_instance_profile=pool.mig_profile,
            # A node-image or version upgrade must not need one more scarce GPU node (quota, capacity):
            # take one node down at a time instead (upgrade-aks-node-pools-rolling.md:103-120).
            upgrade_settings=containerservice.AgentPoolUpgradeSettingsArgs(
                max_surge=str(GPU_POOL_MAX_SURGE), max_unavailable="1"
            ),
        )
        self.name = agent_pool.name
        self.register_outputs({"name": agent_pool.name, "vmSize": vm_size})


class CpuNodePool(pulumi.ComponentResource):
    """One CPU pool for CPU model servers (runtime onnx): tainted and labelled so that only the
    servers placed on it land there, autoscaled, optionally spot. No GPU profile."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        pool: CpuPoolSpec,
        os_disk_gb: int | None,
        place: PoolPlace,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:CpuNodePool", name, None, opts)
        agent_pool = _model_pool(
            self,
            name,
            pool=pool,
            vm_size=pool.vm_size,
            os_disk_gb=os_disk_gb,
            taint=CPU_MODELS_TAINT,
            accelerator="none",
            place=place,
        )
        self.name = agent_pool.name
        self.register_outputs({"name": agent_pool.name, "vmSize": pool.vm_size})


class PlatformNodePool(pulumi.ComponentResource):
    """The untainted, autoscaled User pool where everything that is not a model server runs: the
    gateway, kube-prometheus-stack, the GPU Operator's controllers, the app routing controller."""

    def __init__(
        self,
        name: str,
        *,
        cluster: ClusterSpec,
        os_disk_gb: int,
        place: PoolPlace,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:PlatformNodePool", name, None, opts)
        agent_pool = containerservice.AgentPool(
            f"{name}-pool",
            agent_pool_name=PLATFORM_POOL,
            resource_group_name=place.resource_group_name,
            resource_name_=place.cluster_name,
            mode=containerservice.AgentPoolMode.USER,
            vm_size=cluster.platform_vm_size,
            os_type=containerservice.OSType.LINUX,
            os_sku=containerservice.OSSKU.UBUNTU,
            os_disk_type=containerservice.OSDiskType.EPHEMERAL,
            os_disk_size_gb=os_disk_gb,
            vnet_subnet_id=place.subnet_id,
            enable_auto_scaling=True,
            min_count=cluster.platform_min_count,
            max_count=cluster.platform_max_count,
            count=cluster.platform_min_count,
            node_labels={POOL_LABEL: PLATFORM_POOL},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
        )
        self.pool = agent_pool
        self.register_outputs({"name": agent_pool.name})
