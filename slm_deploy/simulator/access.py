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
        + _control_plane_subnet(stack, cluster, facts)
        + _principal_types(stack, cluster)
        + _destroy(stack, cluster, facts)
    )


RUNNER_TAG = "slm-deploy-runner"
DEPLOYER_TYPE_TAG = "slm-deploy-deployer-type"


def _role(resource: SimResource) -> str:
    return str(resource.inputs.get("roleDefinitionId", "")).rsplit("/", 1)[-1]


def _control_plane_subnet(stack: Stack, cluster: SimResource, facts: AksFacts) -> list[Finding]:
    """The control-plane identity runs the cluster autoscaler: adding a node joins its NIC to the
    pool's subnet, which needs subnets/join/action there (Network Contributor) when the subnet is
    ours, not AKS's. A system-assigned identity cannot be granted it before the cluster exists."""
    profiles = [p for p in cluster.inputs.get("agentPoolProfiles") or [] if isinstance(p, dict)]
    pools = [*profiles, *(r.inputs for r in stack.of_type("azure-native:containerservice:AgentPool"))]
    subnets = sorted({str(p["vnetSubnetID"]) for p in pools if p.get("vnetSubnetID")})
    if not subnets:
        return []
    where = label(cluster)
    identity = cluster.inputs.get("identity") or {}
    if str(identity.get("type", "")) != "UserAssigned":
        return [
            Finding(
                "SLM-SIM-020",
                where,
                f"a {identity.get('type') or 'system-assigned'} control-plane identity has no role on the node subnet before "
                f"the cluster exists: the autoscaler cannot add nodes (LinkedAuthorizationFailed); use a user-assigned "
                f"identity with {facts.network_contributor.name} on the subnet",
            )
        ]
    waited = stack.waits_for(cluster)
    identities = {i.urn for i in stack.of_type("azure-native:managedidentity:UserAssignedIdentity") if i.urn in waited}
    grants = [
        r
        for r in stack.of_type("azure-native:authorization:RoleAssignment")
        if _role(r) == facts.network_contributor.id and identities & stack.waits_for(r)
    ]
    findings = []
    for subnet in subnets:
        on_subnet = [g for g in grants if subnet.startswith(str(g.inputs.get("scope", "\0")))]
        if not on_subnet:
            findings.append(
                Finding(
                    "SLM-SIM-020",
                    where,
                    f"the control-plane identity has no {facts.network_contributor.name} on subnet {subnet}: "
                    "the autoscaler cannot add nodes (LinkedAuthorizationFailed)",
                )
            )
        elif not any(g.urn in waited for g in on_subnet):
            findings.append(Finding("SLM-SIM-020", where, f"the cluster is created before its role on subnet {subnet}"))
        elif not any(_pause_after(stack, g) & waited for g in on_subnet):
            seconds = facts.cluster_identity_propagation_seconds.value
            findings.append(
                Finding(
                    "SLM-SIM-020",
                    where,
                    f"the cluster is created right after its identity's role on subnet {subnet}, with no wait for the role "
                    f"to propagate (up to {seconds} s): AKS acts on the subnet as that identity while it creates the cluster",
                )
            )
    return findings


def _pause_after(stack: Stack, assignment: SimResource) -> set[str]:
    """The propagation waits (dynamic resources) that follow a role assignment."""
    return {r.urn for r in stack.resources if r.type == "pulumi-python:dynamic:Resource" and assignment.urn in r.dependencies}


def _principal_types(stack: Stack, cluster: SimResource) -> list[Finding]:
    """pulumi-azure-native sends principalType User when it is unset; ARM refuses the assignment
    when the principal is a service principal (UnmatchedPrincipalType)."""
    deployer = str((cluster.inputs.get("tags") or {}).get(DEPLOYER_TYPE_TAG, "User"))
    findings = []
    for assignment in stack.of_type("azure-native:authorization:RoleAssignment"):
        if assignment.inputs.get("principalType"):
            continue
        principal = deployer if "deployer" in assignment.name else "managed identity"
        if principal != "User":
            findings.append(
                Finding(
                    "SLM-SIM-020",
                    label(assignment),
                    f"no principalType: the provider sends User, and ARM refuses it for a {principal} (UnmatchedPrincipalType)",
                )
            )
    return findings


def _destroy(stack: Stack, cluster: SimResource, facts: AksFacts) -> list[Finding]:
    """`destroy` (and dropping a secret) deletes Key Vault secrets through the vault's data plane,
    from the runner, as the deployer: unless the secret goes with its vault or is retained, the
    runner must pass the vault's firewall and hold a data-plane role on it."""
    if not stack.options_known:
        return []
    runner = facts.runner_kind(str((cluster.inputs.get("tags") or {}).get(RUNNER_TAG, "workstation")))
    officer = facts.key_vault_secrets_officer.id
    findings = []
    for secret in stack.of_type("azure-native:keyvault:Secret"):
        if secret.deleted_with or secret.retain_on_delete:
            continue
        vaults = [v for v in stack.of_type("azure-native:keyvault:Vault") if v.urn in stack.waits_for(secret)]
        for vault in vaults:
            acls = dig(vault.inputs, "properties.networkAcls", {}) or {}
            closed = acls.get("defaultAction") == "Deny" and not acls.get("ipRules") and not (runner and runner.in_vnet)
            role = any(
                _role(r) == officer and vault.urn in stack.waits_for(r)
                for r in stack.of_type("azure-native:authorization:RoleAssignment")
            )
            why = [
                w
                for w, bad in (
                    ("the vault's firewall denies the runner", closed),
                    ("the deployer has no data-plane role", not role),
                )
                if bad
            ]
            if why:
                findings.append(
                    Finding(
                        "SLM-SIM-020",
                        label(secret),
                        f"destroy deletes it through the vault's data plane, but {' and '.join(why)}: give it deletedWith "
                        "the vault (and retainOnDelete)",
                    )
                )
    return findings


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
    runner = facts.runner_kind(str((cluster.inputs.get("tags") or {}).get(RUNNER_TAG, "workstation")))
    if ranges and runner is not None and not runner.fixed_egress:
        return [
            Finding(
                "SLM-SIM-005",
                where,
                f"the runner is {runner.what}: it cannot be listed in authorizedIpRanges, so every Kubernetes call of "
                "`pulumi up`/`destroy` times out; run from a runner with fixed egress (github-larger, self-hosted-vnet)",
            )
        ]
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
        # The identity the credential federates (not, say, the cluster's own identity that every
        # later assignment also waits for), and the roles granted to it.
        identity_urns = {i.urn for i in identities if any(i.urn in f.dependencies or f.parent == i.urn for f in federation)}
        roles = [a for a in assignments if identity_urns & {*a.dependencies, a.parent}]
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
