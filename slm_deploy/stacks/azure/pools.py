"""The AKS node pools beside the system pool: GPU and CPU pools for model servers, the platform
pool for everything else (separate AgentPool resources, never inline in the cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pulumi
from pulumi_azure_native import containerservice

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.environment import GPU_POOL_MAX_SURGE, ClusterSpec, CpuPoolSpec, Environment, GpuDriver, GpuPoolSpec
from slm_deploy.stacks.placement import ACCELERATOR_LABEL, CPU_MODELS_TAINT, GPU_TAINT, PLATFORM_POOL, POOL_LABEL


@dataclass(frozen=True)
class PoolPlace:
    """Where a pool joins the cluster: the cluster's resource group and name, and the nodes' subnet."""

    resource_group_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    subnet_id: pulumi.Input[str]


@dataclass(frozen=True)
class GpuNodes:
    """What a GPU pool's nodes get beyond a CPU pool's: drivers, MIG partitions, an upgrade without surge."""

    profile: containerservice.GPUProfileArgs | None = None
    instance_profile: str | None = None
    upgrade: containerservice.AgentPoolUpgradeSettingsArgs | None = None


def _os_disk(kind: str) -> containerservice.OSDiskType:
    return containerservice.OSDiskType.EPHEMERAL if kind == "Ephemeral" else containerservice.OSDiskType.MANAGED


def _user_pool(
    resource_name: str,
    place: PoolPlace,
    agent_pool_name: str,
    *,
    vm_size: str,
    os_disk: tuple[containerservice.OSDiskType, int | None],
    counts: tuple[int, int],
    node_labels: dict[str, str],
    node_taints: list[str] | None = None,
    gpu: GpuNodes = GpuNodes(),
    spot: bool = False,
    owner: pulumi.Resource,
) -> containerservice.AgentPool:
    """An Ubuntu User pool in PLACE, autoscaled between COUNTS (min, max); OS_DISK: its type and size."""
    return containerservice.AgentPool(
        resource_name,
        agent_pool_name=agent_pool_name,
        resource_group_name=place.resource_group_name,
        resource_name_=place.cluster_name,
        mode=containerservice.AgentPoolMode.USER,
        vm_size=vm_size,
        os_type=containerservice.OSType.LINUX,
        os_sku=containerservice.OSSKU.UBUNTU,
        os_disk_type=os_disk[0],
        os_disk_size_gb=os_disk[1],
        vnet_subnet_id=place.subnet_id,
        enable_auto_scaling=True,
        min_count=counts[0],
        max_count=counts[1],
        count=counts[0],
        node_taints=node_taints,
        node_labels=node_labels,
        gpu_profile=gpu.profile,
        gpu_instance_profile=gpu.instance_profile,
        upgrade_settings=gpu.upgrade,
        scale_set_priority=containerservice.ScaleSetPriority.SPOT if spot else None,
        scale_set_eviction_policy=containerservice.ScaleSetEvictionPolicy.DELETE if spot else None,
        spot_max_price=-1 if spot else None,
        # The cluster autoscaler owns the node count; Pulumi must not fight it.
        opts=pulumi.ResourceOptions(parent=owner, ignore_changes=["count"]),
    )


class ModelNodePool(pulumi.ComponentResource):
    """A User pool for model servers only: tainted for them, labelled with its name, autoscaled,
    optionally spot. A subclass names its type token (part of every URN under it), its taint and
    its accelerator label."""

    TYPE: ClassVar[str]
    TAINT: ClassVar[str]
    ACCELERATOR: ClassVar[str]
    name: pulumi.Output[str]
    pool_name: str
    # What its servers tolerate besides the GPU taint: its own taint (a CPU pool's) and AKS's spot taint.
    pool_taints: tuple[str, ...]

    def __init__(
        self,
        name: str,
        *,
        pool: GpuPoolSpec | CpuPoolSpec,
        vm_size: str,
        os_disk_gb: int | None,
        place: PoolPlace,
        gpu: GpuNodes = GpuNodes(),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        # AKS writes its spot taint and label into a spot pool's own nodeTaints/nodeLabels; declaring
        # them keeps a refresh from showing a diff on every `up` (AKS-11).
        spot = load_aks_facts().pool_kinds["spot"] if pool.spot else None
        taints = (self.TAINT, *(spot.taints if spot else ()))
        agent_pool = _user_pool(
            f"{name}-pool",
            place,
            pool.name,
            vm_size=vm_size,
            # Ephemeral OS disks live on the size's temp disk and must fit it (environment checks).
            os_disk=(_os_disk(pool.os_disk_type), os_disk_gb),
            counts=(pool.min_count, pool.max_count),
            node_labels={POOL_LABEL: pool.name, ACCELERATOR_LABEL: self.ACCELERATOR, **(spot.labels if spot else {})},
            node_taints=list(taints),
            gpu=gpu,
            spot=pool.spot,
            owner=self,
        )
        self.name = agent_pool.name
        self.pool_name = pool.name
        self.pool_taints = tuple(t for t in taints if t != GPU_TAINT)
        self.register_outputs({"name": agent_pool.name, "vmSize": vm_size})


class GpuNodePool(ModelNodePool):
    """One GPU pool: tainted for GPU workloads only, autoscaled, optionally spot or MIG-partitioned."""

    TYPE = "slm:azure:GpuNodePool"
    TAINT = GPU_TAINT
    ACCELERATOR = "nvidia"

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
        gpu = GpuNodes(
            # With the GPU Operator, AKS must not install drivers too ("None"); otherwise AKS installs
            # them and the device plugin DaemonSet advertises nvidia.com/gpu.
            profile=containerservice.GPUProfileArgs(
                driver=containerservice.GPUDriver.NONE if driver is GpuDriver.OPERATOR else containerservice.GPUDriver.INSTALL
            ),
            instance_profile=pool.mig_profile,
            # A node-image or version upgrade must not need one more scarce GPU node (quota, capacity):
            # take one node down at a time instead (upgrade-aks-node-pools-rolling.md:103-120).
            upgrade=containerservice.AgentPoolUpgradeSettingsArgs(max_surge=str(GPU_POOL_MAX_SURGE), max_unavailable="1"),
        )
        super().__init__(name, pool=pool, vm_size=vm_size, os_disk_gb=os_disk_gb, place=place, gpu=gpu, opts=opts)


class CpuNodePool(ModelNodePool):
    """One CPU pool for CPU model servers (runtime onnx): tainted and labelled so that only the
    servers placed on it land there, autoscaled, optionally spot. No GPU profile."""

    TYPE = "slm:azure:CpuNodePool"
    TAINT = CPU_MODELS_TAINT
    ACCELERATOR = "none"


def model_node_pools(base: str, env: Environment, place: PoolPlace, opts: pulumi.ResourceOptions) -> list[ModelNodePool]:
    """The GPU and CPU pools of ENV's cluster, each `<base>-<pool name>`."""
    spec = env.spec
    gpu_pools = [
        GpuNodePool(
            f"{base}-{pool.name}",
            pool=pool,
            vm_size=env.pool_vm_sizes[pool.name],
            os_disk_gb=env.pool_os_disks[pool.name],
            driver=spec.gpu_driver,
            place=place,
            opts=opts,
        )
        for pool in spec.gpu_pools
    ]
    cpu_pools = [
        CpuNodePool(
            f"{base}-{pool.name}",
            pool=pool,
            vm_size=pool.vm_size,
            os_disk_gb=env.pool_os_disks[pool.name],
            place=place,
            opts=opts,
        )
        for pool in spec.cpu_pools
    ]
    return [*gpu_pools, *cpu_pools]


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
        agent_pool = _user_pool(
            f"{name}-pool",
            place,
            PLATFORM_POOL,
            vm_size=cluster.platform_vm_size,
            os_disk=(containerservice.OSDiskType.EPHEMERAL, os_disk_gb),
            counts=(cluster.platform_min_count, cluster.platform_max_count),
            node_labels={POOL_LABEL: PLATFORM_POOL},
            owner=self,
        )
        self.pool = agent_pool
        self.register_outputs({"name": agent_pool.name})
