"""Reachability and identity: the deployer can reach the API server it talks to and is authorized
on it before the first Kubernetes call; every workload identity chain (service account -> managed
identity -> federated credential -> role on the vault, and the secrets) exists before its consumers.

What cannot be known offline: the runner's real egress address (we check that the ranges exist
and are not documentation ranges) and the deployer's object id (we check a data-plane role is
assigned on the cluster, to `cluster.deployerObjectId` or else `getClientConfig().objectId`)."""

from __future__ import annotations

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.simulator.model import Finding, SimResource, Stack, dig, label

WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    cluster = stack.cluster
    if cluster is None:
        return []
    return (
        _reach(cluster, facts)
        + _authorized(stack, cluster, facts)
        + _workload_identity(stack)
        + _image_pull(stack, cluster, facts)
    )


def _reach(cluster: SimResource, facts: AksFacts) -> list[Finding]:
    access = cluster.inputs.get("apiServerAccessProfile") or {}
    where = label(cluster)
    if access.get("enablePrivateCluster"):
        return [
            Finding(
                "SLM-SIM-005",
                where,
                "private API server: only the VNet this program creates can reach it, not the runner of `pulumi up`/`destroy`",
            )
        ]
    ranges = access.get("authorizedIPRanges") or []
    if not ranges:
        return [
            Finding(
                "SLM-SIM-005", where, "no authorized IP ranges: the runner's egress is not stated (and the API server is open)"
            )
        ]
    return [
        Finding("SLM-SIM-005", where, f"authorized range {cidr} is a documentation range: no runner's traffic comes from there")
        for cidr in ranges
        if facts.documentation_range(str(cidr))
    ]


def _authorized(stack: Stack, cluster: SimResource, facts: AksFacts) -> list[Finding]:
    aad = cluster.inputs.get("aadProfile") or {}
    if not (aad.get("enableAzureRBAC") and cluster.inputs.get("disableLocalAccounts")):
        return []
    data_roles = set(facts.kubernetes_data_roles.values)
    assignments = [
        r
        for r in stack.of_type("azure-native:authorization:RoleAssignment")
        if str(r.inputs.get("roleDefinitionId", "")).rsplit("/", 1)[-1] in data_roles and cluster.urn in stack.waits_for(r)
    ]
    providers = stack.of_type("pulumi:providers:kubernetes")
    if not assignments:
        return [
            Finding(
                "SLM-SIM-006", label(cluster), "no Kubernetes data-plane role is assigned on the cluster: every call gets 403"
            )
        ]
    findings = []
    waits = [
        r
        for r in stack.resources
        if r.type == "pulumi-python:dynamic:Resource" and any(a.urn in r.dependencies for a in assignments)
    ]
    for provider in providers:
        waited = stack.waits_for(provider)
        if not any(a.urn in waited for a in assignments):
            findings.append(
                Finding(
                    "SLM-SIM-006", label(provider), "the Kubernetes provider does not wait for the deployer's role assignment"
                )
            )
        elif not any(w.urn in waited for w in waits):
            findings.append(
                Finding(
                    "SLM-SIM-006",
                    label(provider),
                    f"no wait for the role to propagate (up to {facts.rbac_propagation_seconds.value} s)",
                )
            )
    return findings


def _workload_identity(stack: Stack) -> list[Finding]:
    findings: list[Finding] = []
    accounts = {
        (r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"]): r for r in stack.manifests("ServiceAccount")
    }
    identities = stack.of_type("azure-native:managedidentity:UserAssignedIdentity")
    federations = stack.of_type("azure-native:managedidentity:FederatedIdentityCredential")
    assignments = stack.of_type("azure-native:authorization:RoleAssignment")
    vault_secrets = stack.of_type("azure-native:keyvault:Secret")
    for workload in stack.manifests("Deployment", "StatefulSet", "Job", "DaemonSet"):
        template = dig(workload.inputs, "spec.template", {}) or {}
        labels = dig(template, "metadata.labels", {}) or {}
        if labels.get(WORKLOAD_IDENTITY_LABEL) != "true":
            continue
        ns = workload.inputs["metadata"].get("namespace")
        sa_name = dig(template, "spec.serviceAccountName", "default")
        where = label(workload)
        account = accounts.get((ns, sa_name))
        if account is None or CLIENT_ID_ANNOTATION not in (account.inputs["metadata"].get("annotations") or {}):
            findings.append(
                Finding("SLM-SIM-007", where, f"service account {ns}/{sa_name} has no {CLIENT_ID_ANNOTATION} annotation")
            )
            continue
        subject = f"system:serviceaccount:{ns}:{sa_name}"
        federation = [f for f in federations if f.inputs.get("subject") == subject]
        if not identities or not federation:
            findings.append(Finding("SLM-SIM-007", where, f"no federated credential for {subject}"))
            continue
        identity_urns = {i.urn for i in identities}
        roles = [a for a in assignments if identity_urns & stack.waits_for(a)]
        mounts_vault = any(dig(v, "csi.driver") == "secrets-store.csi.k8s.io" for v in dig(template, "spec.volumes", []) or [])
        needed = [*federation]
        if mounts_vault:
            if not roles:
                findings.append(
                    Finding("SLM-SIM-007", where, "the managed identity has no role on the vault it mounts secrets from")
                )
                continue
            needed += roles + vault_secrets
        waited = stack.waits_for(workload)
        missing = [label(r) for r in needed if r.urn not in waited]
        if missing:
            findings.append(Finding("SLM-SIM-007", where, "starts before " + ", ".join(sorted(missing))))
    return findings


def _image_pull(stack: Stack, cluster: SimResource, facts: AksFacts) -> list[Finding]:
    """Every image from an Azure Container Registry (`*.azurecr.io`) is pulled by the kubelet
    identity: an AcrPull assignment on that registry, made for the cluster's identity (it depends on
    the cluster), that the workload waits for; or the pod brings imagePullSecrets."""
    suffix = facts.kubelet_identity.registry_host_suffix
    acr_pull = facts.roles["acr_pull"].id
    grants: dict[str, list[SimResource]] = {}
    for r in stack.of_type("azure-native:authorization:RoleAssignment"):
        if str(r.inputs.get("roleDefinitionId", "")).rsplit("/", 1)[-1] != acr_pull or cluster.urn not in stack.waits_for(r):
            continue
        if str(r.inputs.get("principalType", "ServicePrincipal")) != "ServicePrincipal":
            continue
        registry = str(r.inputs.get("scope", "")).rstrip("/").rsplit("/", 1)[-1].lower()
        grants.setdefault(registry, []).append(r)
    findings = []
    for workload in stack.manifests("Deployment", "StatefulSet", "Job", "DaemonSet"):
        spec = dig(workload.inputs, "spec.template.spec", {}) or {}
        if spec.get("imagePullSecrets"):
            continue
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        hosts = sorted({str(c.get("image", "")).split("/", 1)[0].lower() for c in containers if "/" in str(c.get("image", ""))})
        for host in hosts:
            if not host.endswith(suffix):
                continue
            assignments = grants.get(host[: -len(suffix)], [])
            if not assignments:
                findings.append(
                    Finding(
                        "SLM-SIM-017",
                        label(workload),
                        f"pulls from {host}, but no AcrPull assignment on that registry for the kubelet identity "
                        "(cluster.acrIds) and no imagePullSecrets: ErrImagePull (401)",
                    )
                )
            elif not any(a.urn in stack.waits_for(workload) for a in assignments):
                findings.append(Finding("SLM-SIM-017", label(workload), f"starts before the AcrPull assignment on {host} exists"))
    return findings
