"""The cloud environment of one Pulumi stack: cluster, GPU and CPU pools and the models they serve.

A stack file's structured config is validated against the model in slm_deploy.environment_spec,
checked against the AKS facts of the catalog (versions, pools, disks, placeholders), and every
model is planned on its pool's VM size here, once: sizing is the planner's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from slm_deploy.catalog import Catalog, load_catalog
from slm_deploy.catalog.platform import AksFacts, load_aks_facts, today
from slm_deploy.environment_spec import (
    ACR_ID,
    DNS_LABEL,
    GUID,
    IMAGE_REF,
    POOL_NAME,
    TAINT,
    ApiServerAccess,
    AutoscalingSpec,
    Camel,
    ClusterMode,
    ClusterSpec,
    CpuPoolSpec,
    EnvironmentSpec,
    GpuDriver,
    GpuPoolSpec,
    IngressCertificate,
    IngressSpec,
    LogsSpec,
    ModelDeploymentSpec,
    MonitoringSpec,
)
from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.onnx_builds import onnx_box_problem
from slm_deploy.planner import Plan, hardware_for_vm, plan
from slm_deploy.runtimes import FETCH_JOB_CPU_MILLIS
from slm_deploy.spec import Hardware, Runtime, Serving

# The stack-file model (environment_spec) is named from here too.
__all__ = [
    "ACR_ID",
    "BASE_NAME_MAX",
    "DNS_LABEL",
    "GPU_POOL_MAX_SURGE",
    "GUID",
    "IMAGE_REF",
    "PLACEHOLDER_HINTS",
    "POOL_NAME",
    "PROJECT",
    "TAINT",
    "ApiServerAccess",
    "AutoscalingSpec",
    "Camel",
    "ClusterMode",
    "ClusterSpec",
    "CpuPoolSpec",
    "Environment",
    "EnvironmentSpec",
    "GpuDriver",
    "GpuPoolSpec",
    "IngressCertificate",
    "IngressSpec",
    "LogsSpec",
    "ModelDeploymentSpec",
    "MonitoringSpec",
    "PlannedModel",
    "derive_base_name",
    "find_placeholder",
    "plan_environment",
    "refuse_placeholders",
]


# A GPU pool's node-image or version upgrade takes one node down at a time instead of adding one
# (maxSurge 0): one more scarce GPU node may not exist in quota or capacity. The program sets it
# (stacks/azure/pools.py) and preflight counts no surge node for these pools.
GPU_POOL_MAX_SURGE = 0


@dataclass(frozen=True)
class PlannedModel:
    spec: ModelDeploymentSpec
    plan: Plan
    vm_size: str


@dataclass(frozen=True)
class Environment:
    """A validated stack: its spec, and every model planned on its pool's VM size."""

    stack: str
    spec: EnvironmentSpec
    models: tuple[PlannedModel, ...]
    pool_vm_sizes: dict[str, str]
    base_name: str  # `slm-<stack>`, sanitised and capped: the prefix of every name the program sets
    pool_os_disks: dict[str, int | None]  # GPU pool -> OS disk GB (None: the managed-disk default)


BASE_NAME_MAX = 30  # leaves room for suffixes such as `-gateway-metrics` in 63-character Kubernetes names


def derive_base_name(stack: str, source: str) -> str:
    """`slm-<stack>` made a valid DNS label: lowercase, `_`/`.` to `-`, capped; refused if nothing is left."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")
    if not cleaned:
        raise InputError(source, "", f"stack name {stack!r} has no letters or digits to derive resource names from")
    return f"slm-{cleaned}"[:BASE_NAME_MAX].rstrip("-")


def _pool_vm(env: EnvironmentSpec, pool_name: str, existing: dict[str, str]) -> str | None:
    pool = next((p for p in env.gpu_pools if p.name == pool_name), None)
    return pool.vm_size if pool else existing.get(pool_name)


def plan_environment(
    stack: str, config: dict[str, Any], catalog: Catalog | None = None, source: str | None = None
) -> Environment:
    """Validate a stack's structured config and plan every model; errors name the key."""
    catalog = catalog or load_catalog()
    facts = load_aks_facts()
    source = source or f"Pulumi.{stack}.yaml"
    name = derive_base_name(stack, source)
    if not facts.placeholders.allowed():
        refuse_placeholders(config, source)
    try:
        spec = EnvironmentSpec.model_validate(config)
    except ValidationError as exc:
        raise _config_error(source, exc) from None
    if spec.cluster.mode is ClusterMode.AKS:
        _version_checks(source, spec.cluster, facts)
    models = []
    pool_sizes: dict[str, str] = {}
    for i, model in enumerate(spec.models):
        path = f"slm-deploy:models[{i}]"
        try:
            serving = model.serving()
        except ValidationError as exc:
            raise _config_error(source, exc, ["models", i]) from None
        _image_checks(source, path, model, serving)
        cpu_pool = next((p for p in spec.cpu_pools if p.name == model.pool), None)
        if cpu_pool is not None:
            on_cpu = _plan_on_cpu(source, path, model.name, spec, cpu_pool, serving, catalog)
            models.append(PlannedModel(model, on_cpu, cpu_pool.vm_size))
            continue
        vm_size = _pool_vm(spec, model.pool, pool_sizes)
        if vm_size is None:
            recommended = plan(serving, None, catalog=catalog, source=source, serving_path=path)
            if not recommended.fits:
                raise InputError(source, path, f"no catalog VM size fits: {recommended.reason}")
            vm_size = recommended.hardware.split(":", 1)[0]
        if vm_size not in catalog.vm_sizes:
            raise InputError(source, f"{path}.pool", f"pool {model.pool!r}: unknown VM size {vm_size!r}")
        pool_sizes.setdefault(model.pool, vm_size)
        hardware = hardware_for_vm(catalog.vm_sizes[vm_size])
        problem = onnx_box_problem(hardware) if serving.runtime is Runtime.ONNX else None
        if problem:
            why = f"pool {model.pool!r} is a GPU pool: {problem[1]}; put it on a cpuPools pool"
            raise InputError(source, f"{path}.pool", why)
        result = plan(serving, hardware, catalog=catalog, source=source, serving_path=path, hardware_path=path)
        if not result.fits:
            hints = "; ".join(s.change for s in result.suggestions) or "none in the catalog"
            raise InputError(source, path, f"{model.name} does not fit {vm_size}: {result.reason}; try: {hints}")
        models.append(PlannedModel(model, result, vm_size))
    for pool in spec.gpu_pools:
        if pool.vm_size:
            pool_sizes[pool.name] = pool.vm_size
    for cpu in spec.cpu_pools:
        pool_sizes[cpu.name] = cpu.vm_size
    os_disks: dict[str, int | None] = {}
    if spec.cluster.mode is ClusterMode.AKS:
        for key in ("system_vm_size", "platform_vm_size"):
            if facts.node_size(getattr(spec.cluster, key)) is None:
                field = f"{PROJECT}:cluster.{to_camel(key)}"
                raise InputError(source, field, f"{getattr(spec.cluster, key)!r} has no platform facts in catalog/aks.yaml")
        for i, pool in enumerate(spec.gpu_pools):
            if pool.name not in pool_sizes:
                raise InputError(
                    source, f"{PROJECT}:gpuPools[{i}].vmSize", f"pool {pool.name!r} has no vmSize and no model to size it"
                )
            os_disks[pool.name] = _pool_checks(source, i, pool, pool_sizes[pool.name], spec.gpu_driver, facts)
        for i, cpu in enumerate(spec.cpu_pools):
            if cpu.node_selector or cpu.tolerations:
                field = f"{PROJECT}:cpuPools[{i}].{'nodeSelector' if cpu.node_selector else 'tolerations'}"
                raise InputError(source, field, "for existing clusters only: on aks the program labels and taints the pool")
            where = f"{PROJECT}:cpuPools[{i}]"
            os_disks[cpu.name] = _os_disk(source, where, cpu.os_disk_type, cpu.os_disk_gb, cpu.vm_size, facts)
    return Environment(stack, spec, tuple(models), pool_sizes, name, os_disks)


# What to put instead of an example value, by the key that holds it.
PLACEHOLDER_HINTS = {
    "authorizedIpRanges": "your runner's egress CIDRs (where `pulumi up` runs from)",
    "acrIds": "the resource id of your Azure Container Registry",
    "image": "your image (registry/path:tag) in your registry, locked in images.lock.yaml",
    "host": "the DNS name your clients use",
    "keyVaultId": "the resource id of the Key Vault that holds your certificate",
    "deployerObjectId": "the object id of the identity that runs `pulumi up`",
    "adminGroupObjectIds": "the object ids of your Entra ID admin groups",
}


def find_placeholder(value: Any, path: str = "") -> tuple[str, str, str] | None:
    """(config path, example value, the key) of the first example value in a stack's config."""
    facts = load_aks_facts()
    if isinstance(value, dict):
        for key in sorted(value):
            found = find_placeholder(value[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = find_placeholder(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, str):
        hit = facts.placeholders.in_text(value)
        if hit:
            key = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
            return path, hit, key
    return None


def refuse_placeholders(config: dict[str, Any], source: str) -> None:
    """An example value (documentation CIDR, all-zero id, example.* host) would fail the real `up`."""
    found = find_placeholder(config)
    if found is None:
        return
    path, hit, key = found
    hint = PLACEHOLDER_HINTS.get(key, "your own value")
    env = load_aks_facts().placeholders.env
    raise InputError(
        source,
        f"{PROJECT}:{path}",
        f"{hit} is an example value: put {hint} here (example stacks run only with {env}=1)",
    )


def _version_checks(source: str, cluster: ClusterSpec, facts: AksFacts) -> None:
    """AKS creates clusters only with a GA minor before its end of life (or LTS end of life on the
    LTS plan); the dates are in catalog/aks.yaml, judged against today (SLM_TODAY pins it)."""
    field = f"{PROJECT}:cluster.kubernetesVersion"
    calendar = facts.kubernetes_versions
    known = ", ".join(m.minor for m in calendar.minors)
    minor = calendar.minor(cluster.kubernetes_version)
    if minor is None:
        raise InputError(
            source, field, f"{cluster.kubernetes_version} is not in AKS's release calendar ({known}; catalog/aks.yaml)"
        )
    now = today()
    if now < minor.ga:
        raise InputError(source, field, f"{minor.minor} is not generally available on AKS before {minor.ga}")
    supported = [m.minor for m in calendar.minors if m.ga <= now <= m.end_of_life]
    if now > minor.end_of_life:
        if cluster.long_term_support and minor.lts_end_of_life and now <= minor.lts_end_of_life:
            return
        lts = (
            f", or longTermSupport: true (Premium tier) until {minor.lts_end_of_life}"
            if minor.lts_end_of_life and now <= minor.lts_end_of_life and not cluster.long_term_support
            else ""
        )
        raise InputError(
            source,
            field,
            f"{minor.minor} reached end of life on AKS on {minor.end_of_life}: AKS creates no cluster with it; "
            f"use {' or '.join(supported) or 'a supported minor'}{lts}",
        )


def _pool_checks(source: str, i: int, pool: GpuPoolSpec, vm_size: str, driver: GpuDriver, facts: AksFacts) -> int | None:
    """What AKS would reject or never bring up, from the size's platform facts; returns the OS disk GB."""
    path = f"{PROJECT}:gpuPools[{i}]"
    if pool.mig_profile is not None and pool.mig_profile not in facts.mig_profiles.values:
        allowed = ", ".join(facts.mig_profiles.values)
        raise InputError(source, f"{path}.migProfile", f"{pool.mig_profile!r} is not a profile AKS accepts ({allowed})")
    size = facts.node_size(vm_size)
    if size is None:
        raise InputError(source, f"{path}.vmSize", f"{vm_size!r} has no platform facts (temp disk, driver) in catalog/aks.yaml")
    if size.driver == "grid" and driver is GpuDriver.OPERATOR:
        raise InputError(
            source,
            f"{path}.vmSize",
            f"{vm_size} is a GRID (vGPU) family: the GPU Operator's datacenter driver does not bring it up; "
            "use an NC-family size or gpuDriver: aks",
        )
    return _os_disk(source, path, pool.os_disk_type, pool.os_disk_gb, vm_size, facts)


def _os_disk(source: str, path: str, disk_type: str, disk_gb: int | None, vm_size: str, facts: AksFacts) -> int | None:
    if disk_type == "Managed":
        return disk_gb
    size = facts.node_size(vm_size)
    assert size is not None  # checked by the caller
    disk = disk_gb if disk_gb is not None else min(128, size.temp_disk_gib)
    if disk > size.temp_disk_gib or disk == 0:
        raise InputError(
            source,
            f"{path}.osDiskGb",
            f"an ephemeral OS disk of {disk} GB does not fit {vm_size}'s {size.temp_disk_gib} GiB temp disk "
            "(AKS: VMCacheSizeTooSmall); use at most that, or osDiskType: Managed",
        )
    return disk


def _image_checks(source: str, path: str, model: ModelDeploymentSpec, serving: Serving) -> None:
    """runtime onnx runs the user's image (no registry publishes one); the others run the catalog's."""
    if serving.runtime is Runtime.ONNX and model.image is None:
        raise InputError(
            source,
            f"{path}.image",
            "runtime onnx needs image: no registry publishes a Foundry Local server; build it with "
            "`slm-deploy image onnx --out DIR`, push it and name it here (registry/path:tag), then lock it",
        )
    if serving.runtime is not Runtime.ONNX and model.image is not None:
        raise InputError(source, f"{path}.image", f"only runtime onnx takes image; {serving.runtime.value} runs the catalog's")


def _plan_on_cpu(
    source: str, path: str, name: str, spec: EnvironmentSpec, pool: CpuPoolSpec, serving: Serving, catalog: Catalog
) -> Plan:
    """A model on a CPU pool is planned on one node of the pool's size, with no GPU."""
    i = spec.cpu_pools.index(pool)
    size = load_aks_facts().node_size(pool.vm_size)
    if size is None or size.driver != "none":
        why = "has no platform facts in catalog/aks.yaml" if size is None else "is a GPU size; list it in gpuPools"
        raise InputError(source, f"{PROJECT}:cpuPools[{i}].vmSize", f"{pool.vm_size!r} {why}")
    hardware = Hardware(cpus=size.vcpus, memory_gib=size.memory_gib)
    result = plan(serving, hardware, catalog=catalog, source=source, serving_path=path, hardware_path=path)
    if not result.fits:
        hints = "; ".join(s.change for s in result.suggestions) or "none in the catalog"
        raise InputError(source, path, f"{name} does not fit {pool.vm_size}: {result.reason}; try: {hints}")
    # On a node the server gets what AKS leaves to pods (allocatable less its DaemonSets), less its
    # fetch Job's request, in steps of 100m; not the box's vCPUs less one.
    room, _ = load_aks_facts().pod_room(size.vcpus, size.memory_gib)
    cpu = max(100, (room - FETCH_JOB_CPU_MILLIS) // 100 * 100) / 1000
    return replace(result, resources=replace(result.resources, cpu_request=min(result.resources.cpu_request, cpu)))


def _config_error(source: str, exc: ValidationError, prefix: list[int | str] | None = None) -> InputError:
    """Pulumi config keys are namespaced: `slm-deploy:models[0].context`."""
    error = from_validation_error(source, exc, prefix or [])
    field = f"{PROJECT}:{error.field}" if error.field else PROJECT
    return InputError(source, field, error.message)


PROJECT = "slm-deploy"
