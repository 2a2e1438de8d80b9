"""`slm-deploy preflight STACK`: ask Azure Resource Manager, with the user's own credentials and
before anything is created, whether the stack can be created there: each VM size offered and not
restricted in the region (resourceSkus), the vCPU quota of each VM *family* with every pool at its
autoscaler maximum plus the upgrade surge, the regional total and the spot total (usages), the
Kubernetes version offered in the region, and the roles the deployer holds. From the second `up`
on, the stack's own cluster exists: its running nodes are in the usages already and count as the
stack's, and a version it was auto-upgraded past is a warning. Read-only: it only lists. Facts
(usage names, surge, role ids) are in catalog/preflight.yaml.

Needs the optional extra: `pip install 'slm-deploy[azure]'` (azure-identity and the azure-mgmt
clients)."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slm_deploy.environment import GPU_POOL_MAX_SURGE, ClusterMode, Environment
from slm_deploy.errors import InputError

ARM = "Azure Resource Manager"


@cache
def facts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        resources.files("slm_deploy.catalog").joinpath("preflight.yaml").read_text(encoding="utf-8")
    )
    return data


@dataclass(frozen=True)
class PoolNeed:
    pool: str
    vm_size: str
    nodes: int  # at the autoscaler's maximum (or the fixed count)
    spot: bool
    surge: int | None = None  # extra nodes while upgrading; None: AKS's default (catalog/preflight.yaml)


@dataclass(frozen=True, order=True)
class Check:
    ok: bool
    subject: str
    detail: str
    warning: bool = False  # ok, but worth a look: printed as `warning`, never fails the command

    def line(self) -> str:
        return f"{'PROBLEM' if not self.ok else 'warning' if self.warning else 'ok':8} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class RunningPool:
    name: str
    vm_size: str
    nodes: int  # allocated now: 0 while the pool is stopped (deallocated nodes use no quota)
    spot: bool


@dataclass(frozen=True)
class ExistingCluster:
    """The stack's cluster when an earlier `up` created it: its nodes are in the usages already."""

    name: str
    resource_group: str
    kubernetes_version: str
    pools: tuple[RunningPool, ...]


@dataclass(frozen=True)
class Target:
    """Where the stack goes: from its stack file (location) and the caller (subscription)."""

    env: Environment
    location: str
    subscription: str
    source: str


def pool_needs(env: Environment) -> list[PoolNeed]:
    cluster = env.spec.cluster
    needs = [
        PoolNeed("system", cluster.system_vm_size, cluster.system_node_count, False),
        PoolNeed("platform", cluster.platform_vm_size, cluster.platform_max_count, False),
    ]
    needs += [PoolNeed(p.name, env.pool_vm_sizes[p.name], p.max_count, p.spot, GPU_POOL_MAX_SURGE) for p in env.spec.gpu_pools]
    needs += [PoolNeed(p.name, p.vm_size, p.max_count, p.spot) for p in env.spec.cpu_pools]
    return needs


def load_target(stack: str, root: Path, subscription: str | None) -> Target:
    from slm_deploy.environment import plan_environment
    from slm_deploy.stackfile import load_stack_file

    config, _, source = load_stack_file(stack, root)
    location = config.get("azure-native:location")
    if not location:
        raise InputError(source, "config.azure-native:location", "required: the Azure region preflight asks about")
    values: dict[str, Any] = {}
    for key, raw in config.items():
        if key.startswith("slm-deploy:"):
            try:
                values[key.split(":", 1)[1]] = json.loads(raw)
            except ValueError:
                values[key.split(":", 1)[1]] = raw
    values.pop("hfToken", None)
    env = plan_environment(stack, values, source=source)
    if env.spec.cluster.mode is not ClusterMode.AKS:
        raise InputError(source, "config.slm-deploy:cluster.mode", "preflight checks an AKS stack (mode: aks)")
    subscription = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise InputError("arguments", "--subscription", "required (or AZURE_SUBSCRIPTION_ID): the subscription to check")
    return Target(env, str(location), subscription, source)


def _object_id(credential: Any) -> str | None:
    """The signed-in principal's object id, from the `oid` claim of its ARM token."""
    token = credential.get_token("https://management.azure.com/.default").token
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return str(oid) if oid else None


def _clients(target: Target, credential: Any, base_url: str | None, verify: str | None) -> tuple[Any, Any, Any]:
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient

    options: dict[str, Any] = {"base_url": base_url} if base_url else {}
    if verify:
        options["connection_verify"] = verify
    return (
        ComputeManagementClient(credential, target.subscription, **options),
        ContainerServiceClient(credential, target.subscription, **options),
        AuthorizationManagementClient(credential, target.subscription, **options),
    )


def _values(model: Any) -> list[Any]:
    """A model's REST field `values`: on the SDK's Mapping-based models `.values` is the dict method."""
    return list((model["values"] if isinstance(model, Mapping) else model.values) or [])


def _capability(sku: Any, name: str) -> str | None:
    return next((c.value for c in sku.capabilities or [] if c.name == name), None)


def check_skus(target: Target, compute: Any) -> tuple[list[Check], dict[str, tuple[str, int]]]:
    """Each size offered and unrestricted in the region; -> checks, size -> (family, vCPUs) for every
    VM size the region lists (an existing pool's size may be one the stack no longer wants)."""
    wanted = sorted({n.vm_size for n in pool_needs(target.env)})
    spot_sizes = {n.vm_size for n in pool_needs(target.env) if n.spot}
    found: dict[str, Any] = {}
    sizes: dict[str, tuple[str, int]] = {}
    for sku in compute.resource_skus.list(filter=f"location eq '{target.location}'"):
        if sku.resource_type != "virtualMachines":
            continue
        sizes.setdefault(str(sku.name), (str(sku.family), int(_capability(sku, "vCPUs") or 0)))
        if sku.name in wanted:
            found[sku.name] = sku
    checks = []
    for size in wanted:
        sku = found.get(size)
        if sku is None:
            checks.append(Check(False, f"VM size {size}", f"not offered in {target.location}"))
            continue
        restricted = [
            r.reason_code or "restricted"
            for r in sku.restrictions or []
            if r.type == "Location" and target.location.lower() in [v.lower() for v in _values(r)]
        ]
        vcpus = int(_capability(sku, "vCPUs") or 0)
        if restricted:
            checks.append(Check(False, f"VM size {size}", f"restricted in {target.location} ({', '.join(restricted)})"))
        elif size in spot_sizes and _capability(sku, "LowPriorityCapable") == "False":
            checks.append(Check(False, f"VM size {size}", "cannot run as spot (LowPriorityCapable: False)"))
        else:
            checks.append(Check(True, f"VM size {size}", f"offered in {target.location} ({sku.family}, {vcpus} vCPUs)"))
    return checks, sizes


def _region(location: str) -> str:
    return location.replace(" ", "").lower()


def find_cluster(target: Target, containers: Any) -> tuple[ExistingCluster | None, list[Check]]:
    """The stack's cluster if an earlier `up` created it (none: the first `up`). Pulumi names the
    resource group and the cluster itself (foundation.py and cluster.py set neither name: the logical
    name plus a random suffix, pulumi.com/docs/iac/concepts/resources/names "Autonaming"), so the
    cluster is found by what the program does set: the DNS prefix, which is the stack's base name
    (cluster.py dns_prefix), in the stack's region. Needs only the deployer's read on the subscription."""
    base = target.env.base_name
    found = [
        c
        for c in containers.managed_clusters.list()
        if c.dns_prefix == base and _region(str(c.location)) == _region(target.location)
    ]
    if not found:
        return None, []
    if len(found) > 1:
        names = ", ".join(sorted(str(c.name) for c in found))
        detail = (
            f"{len(found)} clusters in {target.location} have the DNS prefix {base} ({names}): "
            "cannot tell which is this stack's, so all their nodes count as used"
        )
        return None, [Check(True, "existing cluster", detail, warning=True)]
    (managed,) = found
    group = str(managed.id).split("/")[4]
    pools = []
    for pool in containers.agent_pools.list(group, managed.name):
        running = pool.power_state is None or pool.power_state.code != "Stopped"
        pools.append(
            RunningPool(
                str(pool.name), str(pool.vm_size), int(pool.count or 0) if running else 0, pool.scale_set_priority == "Spot"
            )
        )
    version = str(managed.current_kubernetes_version or managed.kubernetes_version)
    existing = ExistingCluster(str(managed.name), group, version, tuple(sorted(pools, key=lambda p: p.name)))
    detail = (
        f"{existing.name} (resource group {group}) runs Kubernetes {version} on "
        f"{sum(p.nodes for p in existing.pools)} nodes: their vCPUs are this stack's, not taken"
    )
    return existing, [Check(True, "existing cluster", detail)]


def _in_use_by(existing: ExistingCluster | None, sizes: dict[str, tuple[str, int]]) -> dict[str, int]:
    """vCPUs the stack's own running nodes hold now, per usage name: each non-spot node in its VM
    family and the regional total, each spot node in the spot total (as Azure counts them)."""
    held: dict[str, int] = defaultdict(int)
    for pool in existing.pools if existing else ():
        if pool.vm_size not in sizes:
            continue
        family, vcpus = sizes[pool.vm_size]
        if pool.spot:
            held[facts()["usage_spot_total"]] += vcpus * pool.nodes
        else:
            held[family] += vcpus * pool.nodes
            held[facts()["usage_regional_total"]] += vcpus * pool.nodes
    return held


def check_quotas(
    target: Target, compute: Any, sizes: dict[str, tuple[str, int]], existing: ExistingCluster | None = None
) -> list[Check]:
    """Each usage's free vCPUs against the stack at its maximum. The usages are subscription-wide and
    hold the stack's own running nodes from the second `up` on: those are added back to what is free,
    or a quota sized exactly to the stack would fail every later deploy."""
    surge = int(facts()["upgrade_surge_nodes"])
    usage = {u.name.value: (int(u.current_value), int(u.limit)) for u in compute.usage.list(target.location)}
    held = _in_use_by(existing, sizes)
    per_family: dict[str, list[str]] = defaultdict(list)
    family_need: dict[str, int] = defaultdict(int)
    total = spot = 0
    for need in pool_needs(target.env):
        if need.vm_size not in sizes:
            continue
        family, vcpus = sizes[need.vm_size]
        extra = surge if need.surge is None else need.surge
        cores = vcpus * (need.nodes + extra)
        if need.spot:
            spot += cores
            continue
        family_need[family] += cores
        per_family[family].append(f"{need.pool} {vcpus} x ({need.nodes}+{extra})")
        total += cores
    checks = []
    wanted = [(f, n, " + ".join(per_family[f])) for f, n in sorted(family_need.items())]
    wanted.append((facts()["usage_regional_total"], total, "every pool but spot, at its maximum plus surge"))
    if spot:
        wanted.append((facts()["usage_spot_total"], spot, "spot pools at their maximum plus surge"))
    for name, cores_needed, how in wanted:
        if name not in usage:
            checks.append(
                Check(False, f"quota {name}", f"needs {cores_needed} vCPUs ({how}); no such usage in {target.location}")
            )
            continue
        current, limit = usage[name]
        ours = min(held.get(name, 0), current)
        free = limit - current + ours
        detail = f"needs {cores_needed} vCPUs ({how}); {free} free ({current} used of {limit}"
        detail += f", {ours} of them by this stack's cluster {existing.name})" if existing and ours else ")"
        checks.append(Check(cores_needed <= free, f"quota {name}", detail))
    return checks


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def check_version(target: Target, containers: Any, existing: ExistingCluster | None = None) -> Check:
    """The pinned version offered in the region. A cluster that auto-upgraded past the pinned minor
    keeps running after AKS stops offering that minor: for it the check is a warning naming what runs."""
    check = _offered(target, containers)
    if check.ok or existing is None or _minor(existing.kubernetes_version) < _minor(target.env.spec.cluster.kubernetes_version):
        return check
    running = ".".join(existing.kubernetes_version.split(".")[:2])
    detail = (
        f"{check.detail}; the existing cluster {existing.name} runs {existing.kubernetes_version} "
        f"(upgraded past the pin): set kubernetesVersion to {running}"
    )
    return Check(True, check.subject, detail, warning=True)


def _offered(target: Target, containers: Any) -> Check:
    wanted = target.env.spec.cluster.kubernetes_version
    minor = ".".join(wanted.split(".")[:2])
    listing = containers.managed_clusters.list_kubernetes_versions(target.location)
    versions = _values(listing)
    for version in versions:
        if version.version != minor:
            continue
        if version.is_preview:
            return Check(False, f"Kubernetes {wanted}", f"only in preview in {target.location}")
        patches = sorted(version.patch_versions or {})
        if wanted != minor and wanted not in patches:
            return Check(False, f"Kubernetes {wanted}", f"no such patch in {target.location} (offered: {', '.join(patches)})")
        return Check(True, f"Kubernetes {wanted}", f"offered in {target.location}")
    offered = ", ".join(sorted(v.version for v in versions))
    return Check(False, f"Kubernetes {wanted}", f"not offered in {target.location} (offered: {offered})")


def check_roles(target: Target, authorization: Any, object_id: str | None) -> list[Check]:
    if not object_id:
        return [Check(False, "deployer roles", "cannot tell who the deployer is (no oid in the token; pass --object-id)")]
    held = {
        str(a.role_definition_id).rsplit("/", 1)[-1].lower()
        for a in authorization.role_assignments.list_for_subscription(filter=f"assignedTo('{object_id}')")
    }
    checks = []
    for group in facts()["deployer_roles"]:
        names = [r["name"] for r in group["any_of"] if r["id"] in held]
        wanted = " or ".join(r["name"] for r in group["any_of"])
        if names:
            checks.append(Check(True, "deployer roles", f"{names[0]} on the subscription: {group['why']}"))
        else:
            checks.append(Check(False, "deployer roles", f"needs {wanted} on the subscription: {group['why']}"))
    return checks


def run_preflight(
    target: Target,
    credential: Any,
    *,
    base_url: str | None = None,
    verify: str | None = None,
    object_id: str | None = None,
) -> list[Check]:
    """Every check, in a stable order; Azure errors become one InputError line."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    # Without credentials azure-identity logs a warning listing every credential it tried (13 lines on
    # stderr, azure/identity/_credentials/chained.py get_token) before raising the error we print as one line.
    identity_log = logging.getLogger("azure.identity")
    level = identity_log.level
    identity_log.setLevel(max(level, logging.ERROR))
    try:
        compute, containers, authorization = _clients(target, credential, base_url, verify)
        sku_checks, sizes = check_skus(target, compute)
        existing, cluster_checks = find_cluster(target, containers)
        checks = [
            *sku_checks,
            *cluster_checks,
            *check_quotas(target, compute, sizes, existing),
            check_version(target, containers, existing),
        ]
        deployer = object_id or target.env.spec.cluster.deployer_object_id or _object_id(credential)
        checks += check_roles(target, authorization, deployer)
    except ClientAuthenticationError as exc:
        raise InputError(ARM, "credentials", _first_line(exc)) from None
    except HttpResponseError as exc:
        raise InputError(ARM, f"subscription {target.subscription}", _first_line(exc)) from None
    except AzureError as exc:
        raise InputError(ARM, "", _first_line(exc)) from None
    finally:
        identity_log.setLevel(level)
    return checks


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def default_credential() -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise InputError("preflight", "", "needs the Azure SDK: pip install 'slm-deploy[azure]'") from None
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
