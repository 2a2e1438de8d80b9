"""Azure rules over Pulumi resources as data: {"type": token, "props": camelCase inputs}."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from slm_deploy.netranges import open_to_internet
from slm_deploy.policies.model import Kind, RuleMaker, Severity

CLUSTER = "azure-native:containerservice:ManagedCluster"
POOL = "azure-native:containerservice:AgentPool"
VAULT = "azure-native:keyvault:Vault"
GPU_VM = re.compile(r"^Standard_N[CDVG]", re.IGNORECASE)
GPU_TAINT = "nvidia.com/gpu"
SECRET_OUTPUT = re.compile(
    r"(api[_-]?key|access[_-]?key|private[_-]?key|password|passwd|token|secret|kubeconfig|credential)", re.IGNORECASE
)


def _cluster_rule(check: Callable[[dict[str, Any]], list[str]]) -> Callable[[dict[str, Any]], list[str]]:
    """A rule over the properties of a ManagedCluster; every other resource passes it."""

    @functools.wraps(check)
    def rule(resource: dict[str, Any]) -> list[str]:
        return check(resource.get("props") or {}) if resource.get("type") == CLUSTER else []

    return rule


@_cluster_rule
def local_accounts_disabled(props: dict[str, Any]) -> list[str]:
    if props.get("disableLocalAccounts") is not True:
        return ["AKS local accounts are enabled (disableLocalAccounts is not true)"]
    return []


@_cluster_rule
def entra_rbac(props: dict[str, Any]) -> list[str]:
    aad = props.get("aadProfile") or {}
    if aad.get("managed") is not True or aad.get("enableAzureRBAC") is not True:
        return ["AKS without Entra ID integration and Azure RBAC (aadProfile.managed, enableAzureRBAC)"]
    return []


@_cluster_rule
def network_policy(props: dict[str, Any]) -> list[str]:
    if not (props.get("networkProfile") or {}).get("networkPolicy"):
        return ["AKS without a network policy engine (networkProfile.networkPolicy)"]
    return []


@_cluster_rule
def api_server_restricted(props: dict[str, Any]) -> list[str]:
    access = props.get("apiServerAccessProfile") or {}
    ranges = access.get("authorizedIPRanges") or []
    if access.get("enablePrivateCluster") is True:
        return []
    if not ranges:
        return ["AKS API server reachable from any address (no private cluster, no authorized IP ranges)"]
    if any(r.endswith("/0") for r in ranges):
        return ["AKS API server authorized ranges include /0"]
    try:
        reason = open_to_internet(str(r) for r in ranges)
    except ValueError:
        return ["AKS API server authorized ranges are not valid CIDRs"]
    return [f"AKS API server: {reason}"] if reason else []


@_cluster_rule
def workload_identity(props: dict[str, Any]) -> list[str]:
    oidc = (props.get("oidcIssuerProfile") or {}).get("enabled") is True
    wi = ((props.get("securityProfile") or {}).get("workloadIdentity") or {}).get("enabled") is True
    return [] if oidc and wi else ["AKS without OIDC issuer and workload identity"]


@_cluster_rule
def auto_upgrade(props: dict[str, Any]) -> list[str]:
    channel = (props.get("autoUpgradeProfile") or {}).get("upgradeChannel")
    return [] if channel and channel != "none" else ["AKS without an automatic upgrade channel"]


def gpu_pools_tainted(resource: dict[str, Any]) -> list[str]:
    if resource.get("type") != POOL:
        return []
    props = resource.get("props") or {}
    if not GPU_VM.match(str(props.get("vmSize", ""))):
        return []
    if not any(str(t).startswith(f"{GPU_TAINT}=") or str(t).startswith(f"{GPU_TAINT}:") for t in props.get("nodeTaints") or []):
        return [f"GPU pool {props.get('agentPoolName')} ({props.get('vmSize')}) is not tainted {GPU_TAINT}"]
    return []


def key_vault_protected(resource: dict[str, Any]) -> list[str]:
    if resource.get("type") != VAULT:
        return []
    props = (resource.get("props") or {}).get("properties") or {}
    missing = [k for k in ("enableRbacAuthorization", "enablePurgeProtection") if props.get(k) is not True]
    if props.get("enableSoftDelete") is False:
        missing.append("enableSoftDelete")
    return [f"Key Vault without {', '.join(missing)}"] if missing else []


def key_vault_network_deny(resource: dict[str, Any]) -> list[str]:
    if resource.get("type") != VAULT:
        return []
    props = (resource.get("props") or {}).get("properties") or {}
    if props.get("publicNetworkAccess") == "Disabled":
        return []
    if (props.get("networkAcls") or {}).get("defaultAction") != "Deny":
        return ["Key Vault network rules do not deny by default"]
    return []


def no_plain_secret_outputs(stack: dict[str, Any]) -> list[str]:
    outputs = stack.get("outputs") or {}
    secret = set(stack.get("secret") or [])
    return [
        f"stack output {name} looks secret but is exported in clear"
        for name in sorted(outputs)
        if SECRET_OUTPUT.search(name) and name not in secret
    ]


_az = RuleMaker(Kind.AZURE)


RULES = [
    _az(
        "SLM-AZ-001",
        "AKS local accounts disabled",
        Severity.HIGH,
        "The static admin kubeconfig bypasses Entra ID, MFA and audit.",
        "Set disableLocalAccounts: true.",
        local_accounts_disabled,
    ),
    _az(
        "SLM-AZ-002",
        "AKS with Entra ID and Azure RBAC",
        Severity.HIGH,
        "Cluster access should follow the organisation's identities and be revocable in one place.",
        "Set aadProfile {managed: true, enableAzureRBAC: true}.",
        entra_rbac,
    ),
    _az(
        "SLM-AZ-003",
        "AKS network policy engine",
        Severity.HIGH,
        "Without an engine, NetworkPolicies are silently ignored.",
        "Set networkProfile.networkPolicy (cilium, calico or azure).",
        network_policy,
    ),
    _az(
        "SLM-AZ-004",
        "AKS API server access restricted",
        Severity.CRITICAL,
        "A public API server is scanned and attacked around the clock.",
        "Use a private cluster, or list authorizedIPRanges (never /0).",
        api_server_restricted,
    ),
    _az(
        "SLM-AZ-005",
        "AKS workload identity",
        Severity.MEDIUM,
        "Pods should reach Key Vault with federated, short-lived tokens, not stored credentials.",
        "Enable oidcIssuerProfile and securityProfile.workloadIdentity.",
        workload_identity,
    ),
    _az(
        "SLM-AZ-006",
        "AKS automatic upgrades",
        Severity.MEDIUM,
        "Unpatched clusters accumulate CVEs; AKS can patch them in maintenance windows.",
        "Set autoUpgradeProfile.upgradeChannel (patch or stable).",
        auto_upgrade,
    ),
    _az(
        "SLM-AZ-007",
        "GPU pools tainted",
        Severity.MEDIUM,
        "Untainted GPU nodes fill with ordinary pods, and expensive GPUs sit behind them.",
        "Add the taint nvidia.com/gpu=present:NoSchedule to GPU pools.",
        gpu_pools_tainted,
    ),
    _az(
        "SLM-AZ-008",
        "Key Vault with RBAC, purge protection and soft delete",
        Severity.HIGH,
        "Access policies bypass Azure RBAC; without purge protection a deleted vault takes the secrets with it.",
        "Set enableRbacAuthorization, enablePurgeProtection and enableSoftDelete to true.",
        key_vault_protected,
    ),
    _az(
        "SLM-AZ-009",
        "Key Vault denies network access by default",
        Severity.HIGH,
        "A vault open to every network relies on credentials alone.",
        "Set networkAcls.defaultAction: Deny with the AKS subnet as a virtual network rule.",
        key_vault_network_deny,
    ),
    _az(
        "SLM-AZ-010",
        "No secret value as a plain stack output",
        Severity.CRITICAL,
        "Plain outputs are stored unencrypted in the state and printed by `pulumi stack output`.",
        "Wrap the value in pulumi.Output.secret().",
        no_plain_secret_outputs,
        Kind.OUTPUTS,
    ),
]
