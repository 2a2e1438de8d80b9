"""The Pulumi program: an Environment (validated, planned) becomes Azure and Kubernetes resources.

Runs under `pulumi up` and, offline, under the SDK's mocks (`slm-deploy preview`). Build
resources only inside `build()`, never at import time.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from slm_deploy.catalog import Catalog
from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.environment import ClusterMode, Environment
from slm_deploy.gateway import upstream_keepalive
from slm_deploy.spec import Runtime
from slm_deploy.stacks.images import pin_model_images
from slm_deploy.stacks.k8s.gateway import Gateway
from slm_deploy.stacks.k8s.monitoring import Monitoring
from slm_deploy.stacks.k8s.namespace import KeyVaultSource, ServingNamespace
from slm_deploy.stacks.k8s.server_settings import ServerSettings
from slm_deploy.stacks.k8s.servers import SERVERS
from slm_deploy.supply.lock import locked_catalog


def _secret_inputs(name: str, hf_token: pulumi.Output[str] | None) -> tuple[dict[str, pulumi.Input[str]], pulumi.Output[str]]:
    api_key = random.RandomPassword(f"{name}-api-key", length=48, special=False)
    grafana = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False)
    secrets: dict[str, pulumi.Input[str]] = {"api_key": api_key.result}
    if hf_token is not None:
        secrets["hf_token"] = hf_token
    return secrets, grafana.result


def build(
    env: Environment, hf_token: pulumi.Output[str] | None, kubeconfig: str | None = None, catalog: Catalog | None = None
) -> None:
    """Declare every resource; image references come from CATALOG (default: pinned by the lock in
    the current folder, which is the project folder under `pulumi up`)."""
    catalog = catalog or pin_model_images(locked_catalog(Path.cwd()), env, Path.cwd())
    facts = load_aks_facts()
    spec = env.spec
    name = env.base_name
    secrets, grafana_password = _secret_inputs(name, hf_token)
    key_vault: KeyVaultSource | None = None
    secrets_ready: list[pulumi.Resource] = []
    pull_ready: list[pulumi.Resource] = []
    # What the pods on a pool tolerate besides the GPU taint (aks: the pool's own taint on a CPU pool,
    # AKS's spot taint on a spot pool; existing clusters: cpuPools' tolerations).
    gpu_taints: dict[str, tuple[str, ...]] = {}
    cpu_taints = {cpu.name: cpu.tolerations for cpu in spec.cpu_pools}
    if spec.cluster.mode is ClusterMode.AKS:
        from pulumi_azure_native import authorization

        from slm_deploy.stacks.azure.cluster import AksCluster, rbac_vault_scope
        from slm_deploy.stacks.azure.foundation import AzureFoundation
        from slm_deploy.stacks.azure.pools import CpuNodePool, PlatformNodePool, PoolPlace, model_node_pools
        from slm_deploy.stacks.azure.secrets import ServingSecrets
        from slm_deploy.stacks.k8s.namespace import SERVICE_ACCOUNT

        foundation = AzureFoundation(name, spec.cluster)
        cluster = AksCluster(
            name,
            cluster=spec.cluster,
            ingress=spec.ingress,
            facts=facts,
            resource_group_name=foundation.resource_group_name,
            subnet_id=foundation.subnet_id,
            workspace_id=foundation.workspace_id,
        )
        place = PoolPlace(foundation.resource_group_name, cluster.name, foundation.subnet_id)
        platform_size = facts.node_size(spec.cluster.platform_vm_size)
        platform = PlatformNodePool(
            f"{name}-platform",
            cluster=spec.cluster,
            os_disk_gb=min(128, platform_size.temp_disk_gib) if platform_size else 128,
            place=place,
            opts=pulumi.ResourceOptions(parent=cluster),
        )
        model_pools = model_node_pools(name, env, place, opts=pulumi.ResourceOptions(parent=cluster))
        for pool in model_pools:
            (cpu_taints if isinstance(pool, CpuNodePool) else gpu_taints)[pool.pool_name] = pool.pool_taints
        vault = ServingSecrets(
            name,
            resource_group_name=foundation.resource_group_name,
            subnet_id=foundation.subnet_id,
            oidc_issuer_url=cluster.oidc_issuer_url,
            namespace=spec.namespace,
            service_account=SERVICE_ACCOUNT,
            secrets=secrets,
            protect=spec.cluster.protect,
        )
        key_vault = KeyVaultSource(vault.vault_name, vault.client_id, vault.tenant_id)
        secrets_ready = vault.ready
        pull_ready = cluster.pull_ready
        if spec.ingress.enabled and spec.ingress.certificate is not None and cluster.app_routing_object_id is not None:
            # The app routing add-on's identity reads the TLS certificate from the user's vault.
            role = facts.roles["key_vault_certificate_user"]
            client = authorization.get_client_config_output()
            authorization.RoleAssignment(
                f"{name}-ingress-certificate",
                principal_id=cluster.app_routing_object_id,
                principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                role_definition_id=client.subscription_id.apply(
                    lambda sub: f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role.id}"
                ),
                scope=rbac_vault_scope(spec.ingress.certificate.key_vault_id),
                opts=pulumi.ResourceOptions(parent=cluster),
            )
        # Kubernetes calls start once the pools exist and the deployer's cluster-admin role has
        # propagated (a 403 otherwise).
        provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=cluster.kubeconfig,
            opts=pulumi.ResourceOptions(depends_on=[platform, *model_pools, *cluster.admin_ready]),
        )
        pulumi.export("clusterName", cluster.name)
        pulumi.export("keyVaultName", vault.vault_name)
        pulumi.export("kubeconfig", cluster.kubeconfig)
    else:
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig or spec.cluster.kubeconfig, context=spec.cluster.context)
    with_provider = pulumi.ResourceOptions(provider=provider)
    from slm_deploy.stacks.k8s.gpu import GpuSupport

    extra_gpu_taints = tuple(sorted({t for taints in gpu_taints.values() for t in taints}))
    GpuSupport(
        f"{name}-gpu",
        driver=spec.gpu_driver,
        catalog=catalog,
        monitoring=spec.monitoring.enabled,
        extra_gpu_taints=extra_gpu_taints,
        opts=with_provider,
    )
    namespace = ServingNamespace(name, namespace=spec.namespace, secrets=secrets, key_vault=key_vault, opts=with_provider)
    monitoring = None
    if spec.monitoring.enabled:
        monitoring = Monitoring(
            f"{name}-monitoring",
            spec=spec.monitoring,
            catalog=catalog,
            grafana_password=grafana_password,
            opts=with_provider,
        )
    release = monitoring.release if monitoring else None
    # Workloads wait for the namespace and, on AKS, for the Key Vault chain their CSI mount needs;
    # only what needs monitoring's CRDs waits for the monitoring release.
    after_secrets = pulumi.ResourceOptions(provider=provider, depends_on=[namespace, *secrets_ready])
    upstreams = []
    for planned in env.models:
        component = SERVERS[Runtime(planned.plan.runtime)]
        cpu = next((p for p in spec.cpu_pools if p.name == planned.spec.pool), None)
        settings = ServerSettings(
            namespace=namespace,
            pool=planned.spec.pool if spec.cluster.mode is ClusterMode.AKS else None,
            storage_class=spec.cluster.storage_class,
            autoscaling=planned.spec.autoscaling,
            keda=spec.cluster.keda,
            monitoring=spec.monitoring.enabled,
            has_hf_token="hf_token" in secrets,
            workload_identity=key_vault is not None,
            monitoring_release=release,
            pool_taints=cpu_taints[cpu.name] if cpu else gpu_taints.get(planned.spec.pool, ()),
            gpu_pool=cpu is None,
            node_selector=cpu.node_selector if cpu and spec.cluster.mode is ClusterMode.EXISTING else None,
            node_vcpus=node.vcpus if (node := facts.node_size(planned.vm_size)) else None,
            # With one model behind the gateway, every request its `api` server lets through is for
            # that model; probes and Prometheus's scrapes reach the `metrics` server (AKS-07). Requests
            # it refuses itself (401 without the key, 403 and 404 for other paths: Caddyfile.jinja)
            # must not wake a GPU: caddy_http_requests_total has no status label, the duration
            # histogram's count has (caddy v2.10.2 modules/caddyhttp/metrics.go:43-101). A request
            # while no replica runs is answered 502 and counts.
            activation_query=(
                "sum(rate(caddy_http_request_duration_seconds_count{"
                f'namespace="{spec.namespace}",service="{name}-gateway",server="api",code!~"401|403|404"'
                "}[2m]))"
                if len(env.models) == 1
                else None
            ),
        )
        # Model servers (and their fetch Jobs) pull only once the nodes may pull from the user's registries.
        server = component(
            planned.spec.name,
            plan=planned.plan,
            catalog=catalog,
            settings=settings,
            opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespace, *secrets_ready, *pull_ready]),
        )
        address = f"{planned.spec.name}.{spec.namespace}.svc.cluster.local:{server.port}"
        upstreams.append((planned.spec.name, address, upstream_keepalive(planned.plan, catalog)))
    identity = {"azure.workload.identity/use": "true"} if key_vault is not None else {}
    Gateway(
        f"{name}-gateway",
        namespace=namespace,
        image=catalog.images["gateway"].ref,
        upstreams=upstreams,
        replicas=spec.gateway_replicas,
        ingress=spec.ingress,
        identity_label=identity,
        monitoring_release=release,
        opts=after_secrets,
    )
    if release is not None and spec.logs.enabled:
        from slm_deploy.stacks.k8s.logs import Logs

        Logs(
            f"{name}-logging",
            spec=spec.logs,
            catalog=catalog,
            runtimes=sorted({m.plan.runtime for m in env.models}),
            serving_namespace=spec.namespace,
            cluster=name,
            monitoring_release=release,
            opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespace]),
        )
    if release is not None and spec.monitoring.alerts:
        from slm_deploy.stacks.k8s.observability import publish_observability

        # The PrometheusRule's CRD and the Grafana sidecar that reads the dashboards come with the release.
        publish_observability(name, env, catalog, opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespace, release]))
    pulumi.export("namespace", spec.namespace)
    pulumi.export("gateway", f"http://{name}-gateway.{spec.namespace}.svc.cluster.local")
    pulumi.export("models", [f"/{m.spec.name}/v1" for m in env.models])
    # `pulumi stack output --show-secrets apiKey > api_key`, then run one of these (in the cluster, or through the ingress).
    base = f"https://{spec.ingress.host}" if spec.ingress.enabled else f"http://{name}-gateway.{spec.namespace}.svc.cluster.local"
    pulumi.export("smoke", [f"slm-deploy smoke {base}/{m.spec.name} --api-key-file api_key" for m in env.models])
    revisions = {m.spec.name: f"{m.plan.weights_source}@{m.plan.model_revision}" for m in env.models if m.plan.model_revision}
    if revisions:  # models resolved from the Hub or Ollama: what a rebuild must pull
        pulumi.export("modelRevisions", revisions)
    pulumi.export("apiKey", pulumi.Output.secret(secrets["api_key"]))
