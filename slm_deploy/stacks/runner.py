"""What the machine and identity running `pulumi up` for a stack need: network reach to the API
server, kubelogin, Azure roles and quotas. Printed by `slm-deploy preview`; the facts are in
catalog/aks.yaml (`runner`)."""

from __future__ import annotations

from collections import defaultdict

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.environment import ClusterMode, Environment


def runner_requirements(env: Environment) -> list[str]:
    facts = load_aks_facts()
    cluster = env.spec.cluster
    if cluster.mode is ClusterMode.EXISTING:
        where = cluster.kubeconfig or "the kubeconfig given to the program"
        return [f"network: reach the API server named in {where}; credentials in it that work without a human"]
    assert cluster.api_server is not None
    ranges = ", ".join(cluster.api_server.authorized_ip_ranges)
    lines = [
        f"network: egress from one of {ranges} (the API server's authorized ranges) to the AKS API server on 443, "
        "and to management.azure.com and login.microsoftonline.com",
        f"kubelogin on PATH, login mode {cluster.kubelogin_mode} ({facts.runner.kubelogin})",
    ]
    for role in facts.runner.azure_roles:
        lines.append(f"Azure role {role.role} on {role.scope}: {role.why}")
    lines.append(
        f"granted by the program: {facts.roles['aks_rbac_cluster_admin'].name} on the cluster, to the deploying principal "
        f"(first up waits {facts.rbac_propagation_seconds.value} s for it to propagate)"
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
    return lines
