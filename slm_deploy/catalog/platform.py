"""AKS platform facts (aks.yaml) and Helm chart profiles (chart_profiles.yaml), validated on load.

Facts about the outside world live in those data files, each with its source; the stacks and the
deployment simulator read them from here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.safeyaml import load_data

CATALOG_DIR = Path(__file__).parent


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PoolKind(_Strict):
    labels: dict[str, str]
    taints: tuple[str, ...]
    source: str


class Reservations(_Strict):
    cpu_millicores: dict[int, int]
    memory_per_pod_mib: int
    memory_base_mib: int
    memory_max_fraction: float
    eviction_mib: int
    max_pods: int
    source: str

    def allocatable(self, vcpus: int, memory_gib: float) -> tuple[int, int]:
        """(CPU millicores, memory MiB) a node of this size offers to pods."""
        tiers = sorted(self.cpu_millicores.items())
        reserved_cpu = tiers[-1][1]
        for cores, millis in tiers:
            if vcpus <= cores:
                reserved_cpu = millis
                break
        memory_mib = int(memory_gib * 1024)
        kube_reserved = min(
            self.memory_per_pod_mib * self.max_pods + self.memory_base_mib, int(memory_mib * self.memory_max_fraction)
        )
        return vcpus * 1000 - reserved_cpu, memory_mib - kube_reserved - self.eviction_mib


class DaemonSetShare(_Strict):
    name: str
    cpu_millicores: int = Field(ge=0)
    memory_mib: int = Field(ge=0)
    checked: bool


class DaemonSetAllowance(_Strict):
    components: tuple[DaemonSetShare, ...]
    source: str

    @property
    def cpu_millicores(self) -> int:
        return sum(c.cpu_millicores for c in self.components)

    @property
    def memory_mib(self) -> int:
        return sum(c.memory_mib for c in self.components)


class NodeSize(_Strict):
    id: str = Field(pattern=r"^Standard_\w+$")
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    temp_disk_gib: int = Field(ge=0)
    driver: Literal["none", "datacenter", "grid"]
    checked: bool
    source: str


class NameRule(_Strict):
    max: int
    pattern: str
    source: str


class Role(_Strict):
    id: str
    name: str
    source: str


class Values(_Strict):
    values: tuple[str, ...]
    source: str


class Seconds(_Strict):
    value: int
    source: str


class RunnerRole(_Strict):
    role: str
    scope: str
    why: str


class Runner(_Strict):
    azure_roles: tuple[RunnerRole, ...]
    kubelogin: str
    quotas: str
    source: str


class Addon(_Strict):
    id: str
    enabled_by: str
    crds: tuple[str, ...] = ()
    csi_drivers: tuple[str, ...] = ()
    ingress_classes: tuple[str, ...] = ()
    tls_secret_prefix: str | None = None
    source: str


class KubeletIdentity(_Strict):
    output: str
    registry_host_suffix: str
    source: str


class HpaBehavior(_Strict):
    scale_down_stabilization_seconds: int = Field(ge=0, le=3600)
    scale_up_stabilization_seconds: int = Field(ge=0, le=3600)


class AutoscalingFacts(_Strict):
    hpa_scale_down_stabilization_seconds: int
    hpa_server_behavior: HpaBehavior
    hpa_sync_seconds: int
    vllm_default_max_num_seqs: int
    source: str


class ImageEnvFacts(_Strict):
    values: tuple[str, ...]
    env: tuple[str, ...]
    source: str


class KubernetesMinor(_Strict):
    minor: str = Field(pattern=r"^1\.\d{2}$")
    ga: dt.date
    end_of_life: dt.date
    platform_support_until: dt.date | None = None
    lts_end_of_life: dt.date | None = None


class LtsPlan(_Strict):
    tier: str
    support_plan: str


class KubernetesVersions(_Strict):
    minors: tuple[KubernetesMinor, ...]
    lts: LtsPlan
    source: str

    def minor(self, version: str) -> KubernetesMinor | None:
        wanted = ".".join(version.split(".")[:2])
        return next((m for m in self.minors if m.minor == wanted), None)


class Retirement(_Strict):
    id: str
    addon: str
    date: dt.date
    unless_config: dict[str, str] = Field(default_factory=dict)
    what: str
    instead: str
    note_only: bool = False
    source: str


class Placeholders(_Strict):
    cidrs: tuple[str, ...]
    guids: tuple[str, ...]
    host_suffixes: tuple[str, ...]
    host_prefixes: tuple[str, ...]
    env: str
    source: str

    def allowed(self) -> bool:
        """Example stacks run as examples (`make demo`, the tests) when the variable says so."""
        return os.environ.get(self.env) == "1"

    def in_text(self, text: str) -> str | None:
        """The placeholder a value carries, if any."""
        lowered = text.lower()
        for value in (*self.cidrs, *self.guids):
            if re.search(r"(?<![0-9a-f.-])" + re.escape(value) + r"(?![0-9a-f])", lowered):
                return value
        hosts: list[str] = re.findall(r"[a-z0-9][a-z0-9.-]*\.[a-z]{2,}", lowered)
        for host in hosts:
            if any(host == s or host.endswith("." + s) for s in self.host_suffixes) or host.startswith(self.host_prefixes):
                return host
        return None


class RunnerKind(_Strict):
    id: str
    fixed_egress: bool
    in_vnet: bool
    what: str


class IdentityAction(_Strict):
    actor: Literal["deployer", "cluster", "kubelet", "workload", "app-routing"]
    action: str
    role: str
    scope: str
    phases: tuple[Literal["up", "destroy"], ...]
    reach: str


class RegistryLimit(_Strict):
    host: str
    unauthenticated_pulls_per_hour: int
    per: str
    source: str


def today() -> dt.date:
    """The date facts are judged against: SLM_TODAY (YYYY-MM-DD) when set, so tests stay deterministic."""
    pinned = os.environ.get("SLM_TODAY")
    if pinned:
        try:
            return dt.date.fromisoformat(pinned)
        except ValueError:
            raise InputError("environment", "SLM_TODAY", f"{pinned!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime.now(dt.UTC).date()


class AksFacts(_Strict):
    pool_kinds: dict[Literal["system", "user", "spot"], PoolKind]
    reservations: Reservations
    daemonset_allowance: DaemonSetAllowance
    node_sizes: tuple[NodeSize, ...]
    mig_profiles: Values
    documentation_ranges: Values
    names: dict[str, NameRule]
    roles: dict[str, Role]
    rbac_propagation_seconds: Seconds
    cluster_identity_propagation_seconds: Seconds
    kubelet_identity: KubeletIdentity
    runner: Runner
    addons: tuple[Addon, ...]
    storage_classes: Values
    kubernetes_data_roles: Values
    autoscaling: AutoscalingFacts
    minor_upgrade_channels: Values
    passwd_less_images: ImageEnvFacts
    warn_days: int = Field(ge=0)
    kubernetes_versions: KubernetesVersions
    retirements: tuple[Retirement, ...]
    placeholders: Placeholders
    network_contributor: Role
    key_vault_secrets_officer: Role
    runners: tuple[RunnerKind, ...]
    runners_source: str
    identities: tuple[IdentityAction, ...]
    identities_source: str
    registry_limits: tuple[RegistryLimit, ...]

    def runner_kind(self, kind: str) -> RunnerKind | None:
        found: RunnerKind | None = next((r for r in self.runners if r.id == kind), None)
        return found

    def pod_room(self, vcpus: int, memory_gib: float) -> tuple[int, int]:
        """(CPU millicores, memory MiB) of a node left to the stack's pods: allocatable less AKS's DaemonSets."""
        cpu, memory = self.reservations.allocatable(vcpus, memory_gib)
        return cpu - self.daemonset_allowance.cpu_millicores, memory - self.daemonset_allowance.memory_mib

    def node_size(self, vm_size: str) -> NodeSize | None:
        return next((s for s in self.node_sizes if s.id == vm_size), None)

    def documentation_range(self, cidr: str) -> str | None:
        """The documentation range `cidr` lies inside, if any. A wider range that merely contains one
        (0.0.0.0/1 holds 192.0.2.0/24) is not a documentation range; the internet-wide check judges it."""
        network = ipaddress.ip_network(cidr, strict=False)
        for reserved in self.documentation_ranges.values:
            other = ipaddress.ip_network(reserved)
            if network.version == other.version and network.subnet_of(other):  # type: ignore[arg-type]
                return reserved
        return None


class ChartComponent(_Strict):
    name: str
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    enabled: str | None = None
    needs: Literal["gpu"] | None = None
    tolerations: str
    node_selector: str | None  # None: the chart takes no node selector for it from the values
    resources: str
    defaults: dict[str, Any]
    # For a release named after the chart (stacks/k8s/common.py chart_release): the labels the chart
    # puts on the component's pods, and the `job` label its ServiceMonitor gives their metrics.
    pod_labels: dict[str, str] = Field(default_factory=dict)
    metrics_job: str | None = None
    labels_source: str | None = None


class RwoDeployment(_Strict):
    persistence: str  # values path: persistence on
    strategy: str  # values path of the Deployment strategy type
    default_strategy: str


class RootContainer(_Strict):
    container: str  # what runs as root, as the chart names it
    when: dict[str, bool]  # values paths that must all be true for it to run -> the chart's default
    instead: str  # what makes it unnecessary
    source: str


class ChartImage(_Strict):
    """Where a chart takes one image, and how it spells the digest there.

    layout: the keys of the values block. `registry`: registry, repository, tag (+ the digest key);
    `image`: repository (registry and path up to the name), image (the name), version; `repository`:
    repository (registry and path), tag. spelling: `hex` (the template adds `sha256:`), `algorithm`
    (sha256:<hex>), `tag@algorithm` (<tag>@sha256:<hex>, for templates that print `repo:{{ tag }}`).
    """

    image: str  # catalog image id
    values: str  # values path of the block
    layout: Literal["registry", "image", "repository"] = "registry"
    digest_key: Literal["sha", "digest", "version", "tag"]
    spelling: Literal["hex", "algorithm", "tag@algorithm"]

    def block(self, repository: str, tag: str, digest: str | None) -> dict[str, str]:
        """The values block for a catalog image `registry/path:tag`, pinned when a digest is known."""
        registry, _, path = repository.partition("/")
        if not path or not ("." in registry or ":" in registry):
            raise ValueError(f"chart image {self.image}: {repository!r} names no registry host (the chart's values need one)")
        if self.layout == "registry":
            out = {"registry": registry, "repository": path, "tag": tag}
        elif self.layout == "image":
            prefix, _, name = repository.rpartition("/")
            out = {"repository": prefix, "image": name, "version": tag}
        else:
            out = {"repository": repository, "tag": tag}
        if digest:
            spelled = {"hex": digest.removeprefix("sha256:"), "algorithm": digest, "tag@algorithm": f"{tag}@{digest}"}
            out[self.digest_key] = spelled[self.spelling]
        return out

    def pinned(self, block: Any) -> bool:
        """Whether a values block pins the image by digest, spelled as this chart version reads it."""
        value = block.get(self.digest_key) if isinstance(block, dict) else None
        pattern = {"hex": "", "algorithm": "sha256:", "tag@algorithm": r"[\w][\w.-]*@sha256:"}[self.spelling] + "[0-9a-f]{64}"
        return isinstance(value, str) and re.fullmatch(pattern, value) is not None

    def reference(self, block: Any) -> str | None:
        """The `registry/path:tag` a values block names, when it names all of it."""
        keys = {"registry": ("registry", "repository", "tag"), "image": ("repository", "image", "version")}
        if not isinstance(block, dict):
            return None
        parts = [block.get(k) for k in keys.get(self.layout, ("repository", "tag"))]
        named = [part for part in parts if isinstance(part, str) and part]
        return "/".join(named[:-1]) + ":" + named[-1] if len(named) == len(parts) else None

    def wanted(self) -> str:
        """How the digest should be spelled, for a finding."""
        return {"hex": "<hex> (no sha256:)", "algorithm": "sha256:<hex>", "tag@algorithm": "<tag>@sha256:<hex>"}[self.spelling]


class ChartKubernetes(_Strict):
    """The Kubernetes minors the chart's vendor validates this version with (on AKS where it says so)."""

    validated: tuple[str, str]
    source: str
    newer: str  # what to do when the cluster's minor is outside


class ChartProfile(_Strict):
    id: str
    version: str
    source: str
    kubernetes: ChartKubernetes | None = None
    crds: tuple[str, ...]
    components: tuple[ChartComponent, ...]
    known_keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Values that must hold on AKS (path -> value), e.g. scrape targets AKS never exposes.
    aks_values: dict[str, Any] = Field(default_factory=dict)
    aks_values_source: str | None = None
    # What a chart upgrade needs (values path or Release input -> value; unset counts as unset).
    upgrade_values: dict[str, Any] = Field(default_factory=dict)
    upgrade_release_inputs: dict[str, Any] = Field(default_factory=dict)
    upgrade_source: str | None = None
    # Values naming a Secret, in the release's namespace, the release reads at install.
    secret_refs: tuple[str, ...] = ()
    # Deployments on a ReadWriteOnce disk: RollingUpdate cannot start the new pod.
    rwo_deployments: tuple[RwoDeployment, ...] = ()
    # Containers the chart runs as root when its values say so.
    root_containers: tuple[RootContainer, ...] = ()
    images: tuple[ChartImage, ...] = ()
    images_source: str | None = None

    def outside_kubernetes(self, minor: str) -> str | None:
        """Why this chart version is not validated for the Kubernetes minor (`1.36`), or None."""
        if self.kubernetes is None:
            return None

        def key(version: str) -> tuple[int, ...]:
            return tuple(int(part) for part in version.split(".")[:2])

        low, high = self.kubernetes.validated
        if key(low) <= key(minor) <= key(high):
            return None
        return (
            f"{self.id} {self.version} is validated for Kubernetes {low}-{high}, not {minor} "
            f"({self.kubernetes.source}); {self.kubernetes.newer}"
        )


class _Profiles(_Strict):
    charts: tuple[ChartProfile, ...]


def _load(path: Path) -> Any:
    try:
        return load_data(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), "", f"cannot read catalog: {exc}".replace("\n", " ")) from None


@cache
def load_aks_facts(directory: Path = CATALOG_DIR) -> AksFacts:
    path = directory / "aks.yaml"
    try:
        return AksFacts.model_validate(_load(path))
    except ValidationError as exc:
        raise from_validation_error(path.name, exc) from None


@cache
def load_chart_profiles(directory: Path = CATALOG_DIR) -> dict[tuple[str, str], ChartProfile]:
    path = directory / "chart_profiles.yaml"
    try:
        profiles = _Profiles.model_validate(_load(path))
    except ValidationError as exc:
        raise from_validation_error(path.name, exc) from None
    return {(p.id, p.version): p for p in profiles.charts}
