"""The Pulumi program: an Environment (validated, planned) becomes Azure and Kubernetes resources.

Runs under `pulumi up` and, offline, under the SDK's mocks (`slm-deploy preview`). Build
resources only inside `build()`, never at import time.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from slm_deploy.catalog import load_catalog
from slm_deploy.environment import ClusterMode, Environment, EnvironmentSpec, plan_environment
from slm_deploy.spec import Runtime
from slm_deploy.stacks.k8s.gateway import Gateway
from slm_deploy.stacks.k8s.monitoring import Monitoring
from slm_deploy.stacks.k8s.namespace import KeyVaultSource, ServingNamespace
from slm_deploy.stacks.k8s.servers import SERVERS, ServerSettings

PROJECT = "slm-deploy"
# The project's config keys are the environment model's fields, as camelCase aliases.
STRUCTURED_KEYS = frozenset(str(field.alias) for field in EnvironmentSpec.model_fields.values())
SECRET_KEYS = {"hfToken"}


def read_config(stack: str, values: dict[str, Any], source: str) -> Environment:
    """Project config (`slm-deploy:*`, already decoded) -> a planned Environment; unknown keys fail."""
    from slm_deploy.errors import InputError

    config: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_KEYS:
            continue
        if key not in STRUCTURED_KEYS:
            known = ", ".join(sorted([*STRUCTURED_KEYS, *SECRET_KEYS]))
            raise InputError(source, f"{PROJECT}:{key}", f"unknown config key (known: {known})")
        config[key] = value
    return plan_environment(stack, config, source=source)


def _secret_inputs(name: str, hf_token: pulumi.Output[str] | None) -> tuple[dict[str, pulumi.Input[str]], pulumi.Output[str]]:
    api_key = random.RandomPassword(f"{name}-api-key", length=48, special=False)
    grafana = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False)
    secrets: dict[str, pulumi.Input[str]] = {"api_key": api_key.result}
    if hf_token is not None:
        secrets["hf_token"] = hf_token
    return secrets, grafana.result


def build(env: Environment, hf_token: pulumi.Output[str] | None, kubeconfig: str | None = None) -> None:
    catalog = load_catalog()
    spec = env.spec
    name = f"slm-{env.stack}"
    secrets, grafana_password = _secret_inputs(name, hf_token)
    key_vault: KeyVaultSource | None = None
    if spec.cluster.mode is ClusterMode.AKS:
        from slm_deploy.stacks.azure.cluster import AksCluster, GpuNodePool
        from slm_deploy.stacks.azure.foundation import AzureFoundation
        from slm_deploy.stacks.azure.secrets import ServingSecrets
        from slm_deploy.stacks.k8s.namespace import SERVICE_ACCOUNT

        foundation = AzureFoundation(name, spec.cluster)
        cluster = AksCluster(
            name,
            cluster=spec.cluster,
            resource_group_name=foundation.resource_group_name,
            subnet_id=foundation.subnet_id,
            workspace_id=foundation.workspace_id,
        )
        pools = [
            GpuNodePool(
                f"{name}-{pool.name}",
                pool=pool,
                vm_size=env.pool_vm_sizes[pool.name],
                driver=spec.gpu_driver,
                resource_group_name=foundation.resource_group_name,
                cluster_name=cluster.name,
                subnet_id=foundation.subnet_id,
                opts=pulumi.ResourceOptions(parent=cluster),
            )
            for pool in spec.gpu_pools
        ]
        vault = ServingSecrets(
            name,
            resource_group_name=foundation.resource_group_name,
            subnet_id=foundation.subnet_id,
            oidc_issuer_url=cluster.oidc_issuer_url,
            namespace=spec.namespace,
            service_account=SERVICE_ACCOUNT,
            secrets=secrets,
        )
        key_vault = KeyVaultSource(vault.vault_name, vault.client_id, vault.tenant_id)
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=cluster.kubeconfig, opts=pulumi.ResourceOptions(depends_on=pools))
        pulumi.export("clusterName", cluster.name)
        pulumi.export("keyVaultName", vault.vault_name)
        pulumi.export("kubeconfig", cluster.kubeconfig)
    else:
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig or spec.cluster.kubeconfig, context=spec.cluster.context)
    with_provider = pulumi.ResourceOptions(provider=provider)
    from slm_deploy.stacks.k8s.gpu import GpuSupport

    GpuSupport(f"{name}-gpu", driver=spec.gpu_driver, catalog=catalog, monitoring=spec.monitoring.enabled, opts=with_provider)
    namespace = ServingNamespace(name, namespace=spec.namespace, secrets=secrets, key_vault=key_vault, opts=with_provider)
    after_ns = pulumi.ResourceOptions(provider=provider, depends_on=[namespace])
    monitoring = None
    if spec.monitoring.enabled:
        monitoring = Monitoring(
            f"{name}-monitoring",
            spec=spec.monitoring,
            catalog=catalog,
            grafana_password=grafana_password,
            opts=with_provider,
        )
    monitoring_dep: list[pulumi.Resource] = [monitoring] if monitoring else []
    upstreams = []
    for planned in env.models:
        component = SERVERS[Runtime(planned.plan.runtime)]
        settings = ServerSettings(
            namespace=namespace,
            pool=planned.spec.pool if spec.cluster.mode is ClusterMode.AKS else None,
            storage_class=spec.cluster.storage_class,
            autoscaling=planned.spec.autoscaling,
            keda=spec.cluster.keda,
            monitoring=spec.monitoring.enabled,
            has_hf_token="hf_token" in secrets,
            workload_identity=key_vault is not None,
        )
        server = component(
            planned.spec.name,
            plan=planned.plan,
            catalog=catalog,
            settings=settings,
            opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespace, *monitoring_dep]),
        )
        upstreams.append((planned.spec.name, f"{planned.spec.name}.{spec.namespace}.svc.cluster.local:{server.port}"))
    identity = {"azure.workload.identity/use": "true"} if key_vault is not None else {}
    Gateway(
        f"{name}-gateway",
        namespace=namespace,
        image=catalog.images["gateway"].ref,
        upstreams=upstreams,
        replicas=spec.gateway_replicas,
        ingress=spec.ingress,
        identity_label=identity,
        opts=after_ns,
    )
    if monitoring is not None and spec.monitoring.alerts:
        from slm_deploy.stacks.k8s.observability import publish_observability

        publish_observability(name, env, opts=after_ns)
    pulumi.export("namespace", spec.namespace)
    pulumi.export("gateway", f"http://slm-{env.stack}-gateway.{spec.namespace}.svc.cluster.local")
    pulumi.export("models", [f"/{m.spec.name}/v1" for m in env.models])
    revisions = {m.spec.name: f"{m.plan.weights_source}@{m.plan.model_revision}" for m in env.models if m.plan.model_revision}
    if revisions:  # models resolved from the Hub or Ollama: what a rebuild must pull
        pulumi.export("modelRevisions", revisions)
    pulumi.export("apiKey", pulumi.Output.secret(secrets["api_key"]))
