"""What the machine and identity running `pulumi up` for a stack need: network reach to the API
server, kubelogin, Azure roles and quotas. Printed by `slm-deploy preview`; the facts are in
catalog/aks.yaml (`runner`)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from slm_deploy.catalog.platform import AksFacts, load_aks_facts, load_chart_profiles, today
from slm_deploy.environment import ClusterMode, Environment


def rbac_admin_condition(facts: AksFacts) -> str:
    """An ABAC condition for the deployer's Role Based Access Control Administrator: it may assign and
    remove only the roles the program assigns, so it cannot make itself Owner (review AKS-21;
    https://learn.microsoft.com/azure/role-based-access-control/delegate-role-assignments-portal)."""
    ids = sorted(
        {
            facts.roles["aks_rbac_cluster_admin"].id,
            facts.roles["key_vault_secrets_user"].id,
            facts.roles["key_vault_certificate_user"].id,
            facts.roles["acr_pull"].id,
            facts.network_contributor.id,
        }
    )
    guids = ", ".join(ids)
    write = (
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
        f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))"
    )
    delete = (
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR "
        f"(@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))"
    )
    return f"{write} AND {delete}"


def dated_notes(env: Environment) -> list[str]:
    """Expiring facts the stack relies on (catalog/aks.yaml, chart_profiles.yaml), against today."""
    facts = load_aks_facts()
    now = today()
    cluster = env.spec.cluster
    lines = []
    minor = facts.kubernetes_versions.minor(cluster.kubernetes_version)
    if minor is not None:
        end = minor.lts_end_of_life if cluster.long_term_support and minor.lts_end_of_life else minor.end_of_life
        lines.append(
            f"dates: Kubernetes {minor.minor} on AKS until {end} ({(end - now).days} days from {now}); "
            f"preview and review warn {facts.warn_days} days ahead"
        )
        for profile in load_chart_profiles().values():
            if profile.id == "gpu-operator" and not env.spec.gpu_pools:
                continue
            problem = profile.outside_kubernetes(minor.minor)
            if problem:
                lines.append(f"dates: {problem}")
    for retired in facts.retirements:
        # The others the program itself satisfies (the simulator checks them: SLM-SIM-019).
        if not retired.note_only or (retired.addon == "webAppRouting" and not env.spec.ingress.enabled):
            continue
        if retired.date <= now + dt.timedelta(days=facts.warn_days):
            state = "ended" if retired.date < now else "ends"
            lines.append(f"dates: {retired.what} {state} {retired.date}: {retired.instead}")
    return lines


def runner_requirements(env: Environment) -> list[str]:
    facts = load_aks_facts()
    cluster = env.spec.cluster
    if cluster.mode is ClusterMode.EXISTING:
        where = cluster.kubeconfig or "the kubeconfig given to the program"
        return [f"network: reach the API server named in {where}; credentials in it that work without a human"]
    assert cluster.api_server is not None
    ranges = ", ".join(cluster.api_server.authorized_ip_ranges)
    runner = facts.runner_kind(cluster.runner)
    lines = [
        f"network: egress from one of {ranges} (the API server's authorized ranges) to the AKS API server on 443, "
        "and to management.azure.com and login.microsoftonline.com",
        f"runner: {runner.what if runner else cluster.runner} ({facts.runners_source})",
        f"kubelogin on PATH, login mode {cluster.kubelogin_mode} ({facts.runner.kubelogin})",
    ]
    for role in facts.runner.azure_roles:
        lines.append(f"Azure role {role.role} on {role.scope}: {role.why}")
    lines.append(
        "constrain Role Based Access Control Administrator to the roles the program assigns with this condition "
        f"(version 2.0): {rbac_admin_condition(facts)}"
    )
    lines.append(
        f"granted by the program: {facts.roles['aks_rbac_cluster_admin'].name} on the cluster, to the deploying principal "
        f"as principalType {cluster.principal_type} (first up waits {facts.rbac_propagation_seconds.value} s for it to "
        f"propagate); {facts.network_contributor.name} on the node subnet, to the cluster's control-plane identity "
        f"(AKS and its autoscaler join nodes to it; first up waits {facts.cluster_identity_propagation_seconds.value} s "
        "for it to propagate before creating the cluster: a create before then can fail with "
        "LinkedAuthorizationFailed; if it still does, the role needed longer: AKS allows up to 60 minutes)"
    )
    lines.append(
        "destroy: the Key Vault's secrets go with the vault (no data-plane call through its firewall); if the cluster "
        "is already gone or unreachable, run `PULUMI_K8S_DELETE_UNREACHABLE=true pulumi destroy` so its Kubernetes "
        "resources leave the state instead of stopping the destroy"
        + ("; the cluster and the vault are protected: `pulumi state unprotect` them first" if cluster.protect else "")
    )
    vcpus: dict[str, int] = defaultdict(int)
    spot_vcpus = 0
    sizes = [
        (cluster.system_vm_size, cluster.system_node_count, False),
        (cluster.platform_vm_size, cluster.platform_max_count, False),
    ]
    sizes += [(env.pool_vm_sizes[p.name], p.max_count, p.spot) for p in env.spec.gpu_pools]
    sizes += [(p.vm_size, p.max_count, p.spot) for p in env.spec.cpu_pools]
    for vm_size, count, spot in sizes:
        size = facts.node_size(vm_size)
        cores = (size.vcpus if size else 0) * count
        if spot:
            spot_vcpus += cores
        else:
            vcpus[vm_size] += cores
    quota = "; ".join(f"{size}: {n} vCPUs" for size, n in sorted(vcpus.items()))
    lines.append(f"quotas (regional, at every pool's maximum): {quota}" + (f"; spot: {spot_vcpus} vCPUs" if spot_vcpus else ""))
    if env.spec.monitoring.enabled and env.spec.monitoring.alerts and not env.spec.monitoring.alert_webhook_url:
        # The chart's default Alertmanager route ends at its "null" receiver (values.yaml alertmanager.config).
        lines.append('alerts: on, but no monitoring.alertWebhookUrl: Alertmanager sends every alert to the "null" receiver')
    return lines + identity_lines(facts) + pull_limit_lines(env, facts) + dated_notes(env)


def identity_lines(facts: AksFacts) -> list[str]:
    """Who does what, with which role on which scope, reaching what (catalog/aks.yaml identities)."""
    return [
        f"identity {a.actor}: {a.action}: {a.role} on the {a.scope}, reaching {a.reach} ({'/'.join(a.phases)})"
        for a in facts.identities
    ]


def pull_limit_lines(env: Environment, facts: AksFacts) -> list[str]:
    """Images from registries with an anonymous pull limit, pulled by each new node (review AKS-18)."""
    from slm_deploy.catalog import load_catalog

    catalog = load_catalog()
    runtimes = {m.plan.runtime for m in env.models}
    used = {"gateway", "model-fetch", *runtimes}
    if env.spec.monitoring.enabled:
        used |= {i for i in catalog.images if i.startswith("kps-")}
    if env.spec.logs.enabled:
        used |= {"loki", "alloy"}
    lines = []
    for limit in facts.registry_limits:
        refs = sorted(
            ref
            for image_id, image in catalog.images.items()
            if image_id in used
            and ((ref := image.ref).startswith(limit.host + "/") or "." not in ref.split("/", 1)[0] or ref.count("/") == 0)
        )
        if refs:
            lines.append(
                f"pull limits: {len(refs)} images from {limit.host} ({', '.join(refs)}); each new node pulls them through "
                f"the cluster's egress IP, and {limit.host} allows {limit.unauthenticated_pulls_per_hour} anonymous pulls "
                f"an hour per {limit.per} ({limit.source}): import them into your registry (cluster.acrIds) or set up an "
                "ACR cache rule before scale-outs hit the limit"
            )
    return lines
