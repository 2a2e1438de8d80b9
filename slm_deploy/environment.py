"""The cloud environment of one Pulumi stack: cluster, GPU and CPU pools and the models they serve.

Read from `Pulumi.<stack>.yaml` (camelCase keys, the Pulumi convention) into frozen models that
reject unknown keys, so a typo in a stack file is a clear error instead of a silent default.
Sizing is the planner's: every model is planned on its pool's VM size here, once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from slm_deploy.catalog import Catalog, load_catalog
from slm_deploy.catalog.platform import AksFacts, load_aks_facts, today
from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.fleet import SloThresholds
from slm_deploy.netranges import open_to_internet
from slm_deploy.onnx_builds import onnx_box_problem
from slm_deploy.planner import Plan, hardware_for_vm, plan
from slm_deploy.runtimes import FETCH_JOB_CPU_MILLIS
from slm_deploy.spec import Frozen, Hardware, Runtime, Serving

DNS_LABEL = r"^[a-z]([a-z0-9-]{0,40}[a-z0-9])?$"
POOL_NAME = r"^[a-z][a-z0-9]{0,11}$"  # AKS: Linux pool names are at most 12 lowercase alphanumerics
IMAGE_REF = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+:[\w][\w.-]{0,127}$"  # registry/path:tag
TAINT = r"^[\w./-]+(=[\w.-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$"
ACR_ID = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerRegistry/registries/[A-Za-z0-9]{5,50}$"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Camel(Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=False)
    numbers_from_text = True


class ClusterMode(StrEnum):
    AKS = "aks"
    EXISTING = "existing"


class GpuDriver(StrEnum):
    OPERATOR = "operator"  # NVIDIA GPU Operator installs drivers; AKS installs none (gpuProfile.driver None)
    AKS = "aks"  # AKS installs drivers (gpuProfile.driver Install); we run only the device plugin


class ApiServerAccess(Camel):
    # A private API server is only reachable from inside the VNet this same program creates, so
    # `pulumi up` (and `destroy`) could never reach it from the runner: refused (issue 11, item 3).
    private: bool = Field(default=False, description="Refused: see README, 'Runner requirements'.")
    authorized_ip_ranges: tuple[str, ...] = Field(
        default=(), description="The runner's (and operators') egress CIDRs; required, no default."
    )

    @field_validator("authorized_ip_ranges")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        facts = load_aks_facts()
        reason = open_to_internet(value)
        if reason:
            raise ValueError(f"{', '.join(value)}: {reason}; the API server would be open to the internet")
        for cidr in value:
            network = ipaddress.ip_network(cidr, strict=False)
            if network.prefixlen == 0:
                raise ValueError(f"{cidr} opens the API server to the whole internet")
            reserved = facts.documentation_range(cidr)
            if reserved:
                raise ValueError(
                    f"{cidr} is in the documentation range {reserved} ({facts.documentation_ranges.source}): "
                    "no deployer's traffic comes from there; list your runner's egress CIDRs"
                )
        return value

    @model_validator(mode="after")
    def _restricted(self) -> ApiServerAccess:
        if self.private:
            raise ValueError(
                "private: true is refused: the runner of `pulumi up`/`destroy` could not reach an API server "
                "that only the VNet created by this program can reach; list the runner's egress in authorizedIpRanges"
            )
        if not self.authorized_ip_ranges:
            raise ValueError("list authorizedIpRanges (the runner's egress CIDRs); an open API server is refused")
        return self


class ClusterSpec(Camel):
    mode: ClusterMode = ClusterMode.AKS
    # A minor AKS still creates clusters with, with the most time left (catalog/aks.yaml kubernetes_versions).
    kubernetes_version: str = Field(default="1.36", pattern=r"^1\.\d{2}(\.\d+)?$")
    long_term_support: bool = Field(
        default=False, description="aks: the LTS plan (Premium tier): supported for a year past community end of life."
    )
    kubeconfig: str | None = Field(default=None, description="existing: path of a kubeconfig file.")
    context: str | None = Field(default=None, description="existing: the kubeconfig context to use.")
    api_server: ApiServerAccess | None = Field(default=None, description="aks: how the API server is reached.")
    kubelogin_mode: Literal["azurecli", "spn", "workloadidentity", "msi"] = Field(
        default="azurecli", description="aks: kubelogin's non-interactive login mode for the program's kubeconfig."
    )
    admin_group_object_ids: tuple[Annotated[str, StringConstraints(pattern=GUID)], ...] = Field(
        default=(), description="aks: Entra ID groups made cluster admins (besides the deploying principal)."
    )
    deployer_object_id: str | None = Field(
        default=None,
        pattern=GUID,
        description="aks: object id of the principal that runs `pulumi up`, made cluster admin; unset: whoever runs the "
        "program (a workstation). Required in CI, where pull requests preview as another identity.",
    )
    deployer_principal_type: Literal["User", "ServicePrincipal", "Group"] | None = Field(
        default=None,
        description="aks: the kind of principal deployerObjectId is; unset: ServicePrincipal when deployerObjectId is set "
        "(a CI identity), else User (whoever runs the program). ARM refuses a role assignment whose type is wrong.",
    )
    runner: Literal["workstation", "github-hosted", "github-larger", "self-hosted-vnet"] = Field(
        default="workstation",
        description="aks: where `pulumi up`/`destroy` run (catalog/aks.yaml runners): its egress must be in authorizedIpRanges.",
    )
    protect: bool = Field(default=False, description="aks: protect the cluster and the Key Vault from deletion (pulumi protect).")
    maintenance_day: Literal["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"] = Field(
        default="Sunday", description="aks: the weekly window for AKS's cluster and node-image upgrades."
    )
    maintenance_start_hour_utc: int = Field(default=1, ge=0, le=23)
    maintenance_hours: int = Field(default=4, ge=4, le=24, description="aks: window length (AKS needs at least 4 hours).")
    acr_ids: tuple[Annotated[str, StringConstraints(pattern=ACR_ID)], ...] = Field(
        default=(),
        description="aks: resource ids of Azure Container Registries the nodes pull from (AcrPull for the kubelet identity).",
    )
    platform_vm_size: str = Field(default="Standard_D4ds_v5", description="aks: the untainted pool for platform pods.")
    platform_min_count: int = Field(default=1, ge=1, le=20)
    platform_max_count: int = Field(default=3, ge=1, le=50)
    system_vm_size: str = Field(default="Standard_D4ds_v5")
    system_node_count: int = Field(default=2, ge=1, le=10)
    upgrade_channel: str = Field(default="patch", pattern=r"^(patch|stable|rapid|node-image)$")
    storage_class: str = Field(
        default="azurefile-csi-premium", description="ReadWriteMany storage class for the shared model caches."
    )
    keda: bool = Field(default=True, description="KEDA is available (the AKS add-on; existing: installed by you).")
    vnet_cidr: str = Field(default="10.42.0.0/16")
    node_subnet_cidr: str = Field(default="10.42.0.0/20")

    @model_validator(mode="after")
    def _mode_fields(self) -> ClusterSpec:
        if self.mode is ClusterMode.AKS and self.api_server is None:
            raise ValueError("aks mode needs apiServer (private: true, or authorizedIpRanges)")
        if self.deployer_principal_type is not None and self.deployer_object_id is None:
            raise ValueError("deployerPrincipalType describes deployerObjectId, which is not set")
        return self

    @property
    def principal_type(self) -> str:
        """What ARM must be told the deployer is (pulumi-azure-native defaults to User otherwise)."""
        if self.deployer_principal_type:
            return self.deployer_principal_type
        return "ServicePrincipal" if self.deployer_object_id else "User"


class GpuPoolSpec(Camel):
    name: str = Field(pattern=POOL_NAME)
    vm_size: str | None = Field(default=None, description="Azure VM size; None: the planner's recommendation.")
    min_count: int = Field(default=0, ge=0, le=100)
    max_count: int = Field(default=1, ge=1, le=100)
    spot: bool = False
    mig_profile: str | None = Field(default=None, description="AKS gpuInstanceProfile (aks.yaml mig_profiles).")
    os_disk_type: Literal["Ephemeral", "Managed"] = "Ephemeral"
    os_disk_gb: int | None = Field(default=None, ge=30, le=2048, description="None: 128, or the temp disk if smaller.")

    @model_validator(mode="after")
    def _counts(self) -> GpuPoolSpec:
        if self.min_count > self.max_count:
            raise ValueError("minCount cannot exceed maxCount")
        return self


class CpuPoolSpec(Camel):
    """A pool of CPU nodes for CPU model servers (runtime onnx; ollama or llamacpp planned on the CPU).

    aks: a User pool of `vmSize`, tainted and labelled so that only the servers placed on it land there.
    existing: where your CPU nodes are: the servers get `nodeSelector` and tolerate `tolerations`;
    `vmSize` (a size with facts in catalog/aks.yaml) is what they are planned on."""

    name: str = Field(pattern=POOL_NAME)
    vm_size: str = Field(description="A CPU size in catalog/aks.yaml node_sizes (driver: none).")
    min_count: int = Field(default=0, ge=0, le=100)
    max_count: int = Field(default=1, ge=1, le=100)
    spot: bool = False
    os_disk_type: Literal["Ephemeral", "Managed"] = "Ephemeral"
    os_disk_gb: int | None = Field(default=None, ge=30, le=2048, description="None: 128, or the temp disk if smaller.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="existing: labels of your CPU nodes.")
    tolerations: tuple[Annotated[str, StringConstraints(pattern=TAINT)], ...] = Field(
        default=(), description="existing: the taints of your CPU nodes (key=value:Effect), tolerated exactly."
    )

    @model_validator(mode="after")
    def _counts(self) -> CpuPoolSpec:
        if self.min_count > self.max_count:
            raise ValueError("minCount cannot exceed maxCount")
        return self


class AutoscalingSpec(Camel):
    min_replicas: int = Field(default=1, ge=0, le=100, description="0 allows scale to zero (KEDA).")
    max_replicas: int = Field(default=1, ge=1, le=100)
    queue_threshold: int = Field(
        default=5, ge=1, description="Requests waiting per replica, beyond its running slots, before KEDA adds one."
    )
    polling_interval_seconds: int = Field(default=15, ge=5)
    cooldown_seconds: int = Field(default=360, ge=30)
    cpu_utilization_percent: int = Field(default=70, ge=10, le=100, description="HPA target for Ollama/llama.cpp.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas cannot exceed maxReplicas")
        return self


class ModelDeploymentSpec(Camel):
    """A Serving (same fields, camelCase) plus where and how many."""

    name: str = Field(pattern=DNS_LABEL, description="Kubernetes name of the server.")
    pool: str = Field(pattern=POOL_NAME, description="The GPU or CPU pool it runs on.")
    model: str
    architecture: dict[str, Any] | None = None
    runtime: Runtime = Runtime.VLLM
    quantization: str | None = None
    context: int | None = None
    concurrency: int | None = None
    kv_cache_dtype: str | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel: int | None = None
    max_num_batched_tokens: int | None = None
    weights_repo: str | None = None
    image: str | None = Field(
        default=None,
        pattern=IMAGE_REF,
        description="onnx: your server image (registry/path:tag) built from `slm-deploy image onnx`, locked in images.lock.yaml.",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)

    def serving(self) -> Serving:
        fields = self.model_dump(exclude={"name", "pool", "autoscaling", "image"}, exclude_none=True, by_alias=False)
        return Serving.model_validate(fields)


class MonitoringSpec(Camel):
    enabled: bool = True
    alerts: bool = True
    retention: str = Field(default="15d", pattern=r"^\d+[dhw]$")
    storage_gi: int = Field(default=50, ge=1)
    grafana_storage_gi: int = Field(default=10, ge=1)
    alert_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https://[^\s]+$",
        description="Where Alertmanager sends alerts (a webhook: Teams, Slack, PagerDuty, ...); without it alerts go "
        "nowhere. It lands in the Helm release's values: use a URL without embedded credentials, or a relay.",
    )
    slo: SloThresholds = Field(default_factory=SloThresholds)


class LogsSpec(Camel):
    """Loki (single binary) and Alloy as an opt-in release beside monitoring (slm_deploy/stacks/k8s/logs.py)."""

    enabled: bool = False
    storage_gi: int = Field(default=20, ge=1, description="Loki's PersistentVolumeClaim, GiB.")
    gib_per_day: float = Field(default=1.0, gt=0, description="Log volume a day (as received) the retention is sized for.")
    max_retention_days: int = Field(default=31, ge=1, le=366)

    @model_validator(mode="after")
    def _holds_a_day(self) -> LogsSpec:
        if self.enabled and self.storage_gi < self.gib_per_day:
            raise ValueError(f"storageGi {self.storage_gi} holds less than one day of gibPerDay {self.gib_per_day:g}")
        return self


class IngressCertificate(Camel):
    """A Key Vault certificate the AKS application routing add-on serves (it syncs it into a Secret)."""

    key_vault_id: str = Field(
        pattern=r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/[a-zA-Z0-9-]{3,24}$"
    )
    name: str = Field(pattern=r"^[a-zA-Z0-9-]{1,127}$")

    @property
    def uri(self) -> str:
        vault = self.key_vault_id.rsplit("/", 1)[1]
        return f"https://{vault}.vault.azure.net/certificates/{self.name}"


class IngressSpec(Camel):
    enabled: bool = False
    host: str | None = Field(default=None, pattern=r"^[a-z0-9.-]+$")
    # aks: the application routing add-on's class (the program enables the add-on).
    class_name: str = "webapprouting.kubernetes.azure.com"
    certificate: IngressCertificate | None = Field(default=None, description="aks: the TLS certificate in Key Vault.")
    tls_secret_name: str = Field(default="slm-gateway-tls", pattern=DNS_LABEL, description="existing: your TLS Secret.")

    @model_validator(mode="after")
    def _host(self) -> IngressSpec:
        if self.enabled and not self.host:
            raise ValueError("an enabled ingress needs a host")
        return self


class EnvironmentSpec(Camel):
    namespace: str = Field(default="slm", pattern=DNS_LABEL)
    cluster: ClusterSpec
    gpu_driver: GpuDriver = GpuDriver.OPERATOR
    gpu_pools: tuple[GpuPoolSpec, ...] = Field(default=(), description="aks: GPU pools (existing: ignored).")
    cpu_pools: tuple[CpuPoolSpec, ...] = Field(default=(), description="CPU pools (existing: your CPU nodes).")
    models: tuple[ModelDeploymentSpec, ...] = Field(min_length=1)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    logs: LogsSpec = Field(default_factory=LogsSpec)
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    gateway_replicas: int = Field(default=2, ge=1, le=20)

    @model_validator(mode="after")
    def _references(self) -> EnvironmentSpec:
        if self.logs.enabled and not self.monitoring.enabled:
            raise ValueError("logs: enabled needs monitoring (Grafana shows the logs, Prometheus watches Loki)")
        pools = [p.name for p in self.gpu_pools] + [p.name for p in self.cpu_pools]
        if len(set(pools)) != len(pools):
            raise ValueError("gpuPools, cpuPools: pool names must be unique")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: names must be unique")
        if len(self.models) > 1 and any(m.autoscaling.min_replicas == 0 for m in self.models):
            # At zero replicas no vllm:* series exists; the gateway's counters are not per model,
            # so nothing could wake one model among several.
            raise ValueError("models: minReplicas 0 (scale to zero) needs the model to be the gateway's only one")
        if self.cluster.mode is ClusterMode.AKS:
            for model in self.models:
                if model.pool not in pools:
                    where = f"model {model.name!r} runs on pool {model.pool!r}"
                    raise ValueError(f"{where}, which gpuPools does not define (nor cpuPools)")
            if self.ingress.enabled and self.ingress.certificate is None:
                raise ValueError("ingress: an enabled ingress on AKS needs certificate (keyVaultId, name)")
            if self.cluster.platform_min_count > self.cluster.platform_max_count:
                raise ValueError("cluster: platformMinCount cannot exceed platformMaxCount")
        elif self.ingress.enabled and "class_name" not in self.ingress.model_fields_set:
            # The default class is AKS's app routing add-on, which an existing cluster need not have.
            raise ValueError("ingress: an existing cluster needs className (the IngressClass its controller serves)")
        return self


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
