"""What a Pulumi stack file may say: the cluster, GPU and CPU pools, the models they serve, monitoring,
logs and ingress, as frozen pydantic models (camelCase keys, the Pulumi convention) that reject
unknown keys, so a typo in a stack file is a clear error instead of a silent default.

slm_deploy.environment validates a stack file against these and plans every model.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from slm_deploy.catalog.platform import AksFacts, load_aks_facts
from slm_deploy.fleet import SloThresholds
from slm_deploy.netranges import open_to_internet
from slm_deploy.spec import Frozen, Runtime, Serving

DNS_LABEL = r"^[a-z]([a-z0-9-]{0,40}[a-z0-9])?$"
POOL_NAME = r"^[a-z][a-z0-9]{0,11}$"  # AKS: Linux pool names are at most 12 lowercase alphanumerics
IMAGE_REF = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+:[\w][\w.-]{0,127}$"  # registry/path:tag
TAINT = r"^[\w./-]+(=[\w.-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$"
ACR_ID = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerRegistry/registries/[A-Za-z0-9]{5,50}$"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Camel(Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=False)
    numbers_from_text = True


def _low_at_most_high(low: str, high: str) -> Any:
    """A model validator: field `low` (a minimum) cannot exceed field `high`; the message names their keys."""

    def check(model: Camel) -> Camel:
        if getattr(model, low) > getattr(model, high):
            raise ValueError(f"{to_camel(low)} cannot exceed {to_camel(high)}")
        return model

    return model_validator(mode="after")(check)


class ClusterMode(StrEnum):
    AKS = "aks"
    EXISTING = "existing"


class GpuDriver(StrEnum):
    OPERATOR = "operator"  # NVIDIA GPU Operator installs drivers; AKS installs none (gpuProfile.driver None)
    AKS = "aks"  # AKS installs drivers (gpuProfile.driver Install); we run only the device plugin


def api_range_refusal(cidr: str, facts: AksFacts) -> str | None:
    """Why `cidr` cannot be one of the API server's authorized ranges, or None when it can."""
    if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
        return f"{cidr} opens the API server to the whole internet"
    reserved = facts.documentation_range(cidr)
    if reserved:
        return (
            f"{cidr} is in the documentation range {reserved} ({facts.documentation_ranges.source}): "
            "no deployer's traffic comes from there; list your runner's egress CIDRs"
        )
    return None


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
            refusal = api_range_refusal(cidr, facts)
            if refusal:
                raise ValueError(refusal)
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


class PoolSpec(Camel):
    """What every node pool states first: its name, VM size and node counts."""

    name: str = Field(pattern=POOL_NAME)
    vm_size: str | None = Field(default=None, description="Azure VM size; None: the planner's recommendation.")
    min_count: int = Field(default=0, ge=0, le=100)
    max_count: int = Field(default=1, ge=1, le=100)
    spot: bool = False

    _counts = _low_at_most_high("min_count", "max_count")


class GpuPoolSpec(PoolSpec):
    mig_profile: str | None = Field(default=None, description="AKS gpuInstanceProfile (aks.yaml mig_profiles).")
    os_disk_type: Literal["Ephemeral", "Managed"] = "Ephemeral"
    os_disk_gb: int | None = Field(default=None, ge=30, le=2048, description="None: 128, or the temp disk if smaller.")


class CpuPoolSpec(PoolSpec):
    """A pool of CPU nodes for CPU model servers (runtime onnx; ollama or llamacpp planned on the CPU).

    aks: a User pool of `vmSize`, tainted and labelled so that only the servers placed on it land there.
    existing: where your CPU nodes are: the servers get `nodeSelector` and tolerate `tolerations`;
    `vmSize` (a size with facts in catalog/aks.yaml) is what they are planned on."""

    vm_size: str = Field(description="A CPU size in catalog/aks.yaml node_sizes (driver: none).")
    os_disk_type: Literal["Ephemeral", "Managed"] = "Ephemeral"
    os_disk_gb: int | None = Field(default=None, ge=30, le=2048, description="None: 128, or the temp disk if smaller.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="existing: labels of your CPU nodes.")
    tolerations: tuple[Annotated[str, StringConstraints(pattern=TAINT)], ...] = Field(
        default=(), description="existing: the taints of your CPU nodes (key=value:Effect), tolerated exactly."
    )


class AutoscalingSpec(Camel):
    min_replicas: int = Field(default=1, ge=0, le=100, description="0 allows scale to zero (KEDA).")
    max_replicas: int = Field(default=1, ge=1, le=100)
    queue_threshold: int = Field(
        default=5, ge=1, description="Requests waiting per replica, beyond its running slots, before KEDA adds one."
    )
    polling_interval_seconds: int = Field(default=15, ge=5)
    cooldown_seconds: int = Field(default=360, ge=30)
    cpu_utilization_percent: int = Field(default=70, ge=10, le=100, description="HPA target for Ollama/llama.cpp.")

    _bounds = _low_at_most_high("min_replicas", "max_replicas")


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
