"""The hardened AKS cluster and its GPU and CPU node pools (separate AgentPool resources, never inline)."""

from __future__ import annotations

import base64

import pulumi
from pulumi_azure_native import authorization, containerservice

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.environment import ClusterSpec, CpuPoolSpec, GpuDriver, GpuPoolSpec, IngressSpec
from slm_deploy.stacks.azure.kubeconfig import non_interactive_kubeconfig
from slm_deploy.stacks.azure.propagation import RbacPropagationWait

GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
# CPU model servers only: the gateway, monitoring and platform pods stay off these nodes.
CPU_MODELS_TAINT = "slm.dev/cpu-models=true:NoSchedule"
SYSTEM_TAINT = "CriticalAddonsOnly=true:NoSchedule"
POOL_LABEL = "slm.dev/pool"
PLATFORM_POOL = "platform"
# Channels that move the minor version: the spec's version then drifts from what AKS runs, and the
# next update would try a downgrade (pulumi-azure-native#2059).
MINOR_UPGRADE_CHANNELS = {"stable", "rapid"}


def _role_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def _model_pool(
    owner: pulumi.Resource,
    name: str,
    *,
    pool: GpuPoolSpec | CpuPoolSpec,
    vm_size: str,
    os_disk_gb: int | None,
    taint: str,
    accelerator: str,
    resource_group_name: pulumi.Input[str],
    cluster_name: pulumi.Input[str],
    subnet_id: pulumi.Input[str],
    gpu_profile: containerservice.GPUProfileArgs | None = None,
    gpu_instance_profile: str | None = None,
) -> containerservice.AgentPool:
    """A User pool for model servers only: tainted for them, labelled with its name, autoscaled, optionally spot."""
    from slm_deploy.catalog.platform import load_aks_facts

    # AKS writes its spot taint and label into a spot pool's own nodeTaints/nodeLabels; declaring
    # them keeps a refresh from showing a diff on every `up` (AKS-11).
    spot = load_aks_facts().pool_kinds["spot"] if pool.spot else None
    return containerservice.AgentPool(
        f"{name}-pool",
        agent_pool_name=pool.name,
        resource_group_name=resource_group_name,
        resource_name_=cluster_name,
        mode=containerservice.AgentPoolMode.USER,
        vm_size=vm_size,
        os_type=containerservice.OSType.LINUX,
        os_sku=containerservice.OSSKU.UBUNTU,
        # Ephemeral OS disks live on the size's temp disk and must fit it (environment checks).
        os_disk_type=containerservice.OSDiskType.EPHEMERAL
        if pool.os_disk_type == "Ephemeral"
        else containerservice.OSDiskType.MANAGED,
        os_disk_size_gb=os_disk_gb,
        vnet_subnet_id=subnet_id,
        enable_auto_scaling=True,
        min_count=pool.min_count,
        max_count=pool.max_count,
        count=pool.min_count,
        node_taints=[taint, *(spot.taints if spot else ())],
        node_labels={POOL_LABEL: pool.name, "slm.dev/accelerator": accelerator, **(spot.labels if spot else {})},
        gpu_profile=gpu_profile,
        gpu_instance_profile=gpu_instance_profile,
        scale_set_priority=containerservice.ScaleSetPriority.SPOT if pool.spot else None,
        scale_set_eviction_policy=containerservice.ScaleSetEvictionPolicy.DELETE if pool.spot else None,
        spot_max_price=-1 if pool.spot else None,
        # The cluster autoscaler owns the node count; Pulumi must not fight it.
        opts=pulumi.ResourceOptions(parent=owner, ignore_changes=["count"]),
    )


class GpuNodePool(pulumi.ComponentResource):
    """One GPU pool: tainted for GPU workloads only, autoscaled, optionally spot or MIG-partitioned."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        pool: GpuPoolSpec,
        vm_size: str,
        os_disk_gb: int | None,
        driver: GpuDriver,
        resource_group_name: pulumi.Input[str],
        cluster_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:GpuNodePool", name, None, opts)
        agent_pool = _model_pool(
            self,
            name,
            pool=pool,
            vm_size=vm_size,
            os_disk_gb=os_disk_gb,
            taint=GPU_TAINT,
            accelerator="nvidia",
            resource_group_name=resource_group_name,
            cluster_name=cluster_name,
            subnet_id=subnet_id,
            # With the GPU Operator, AKS must not install drivers too ("None"); otherwise AKS installs
            # them and the device plugin DaemonSet advertises nvidia.com/gpu.
            gpu_profile=containerservice.GPUProfileArgs(
                driver=containerservice.GPUDriver.NONE if driver is GpuDriver.OPERATOR else containerservice.GPUDriver.INSTALL
            ),
            gpu_instance_profile=pool.mig_profile,
        )
        self.name = agent_pool.name
        self.register_outputs({"name": agent_pool.name, "vmSize": vm_size})


class CpuNodePool(pulumi.ComponentResource):
    """One CPU pool for CPU model servers (runtime onnx): tainted and labelled so that only the
    servers placed on it land there, autoscaled, optionally spot. No GPU profile."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        pool: CpuPoolSpec,
        os_disk_gb: int | None,
        resource_group_name: pulumi.Input[str],
        cluster_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:CpuNodePool", name, None, opts)
        agent_pool = _model_pool(
            self,
            name,
            pool=pool,
            vm_size=pool.vm_size,
            os_disk_gb=os_disk_gb,
            taint=CPU_MODELS_TAINT,
            accelerator="none",
            resource_group_name=resource_group_name,
            cluster_name=cluster_name,
            subnet_id=subnet_id,
        )
        self.name = agent_pool.name
        self.register_outputs({"name": agent_pool.name, "vmSize": pool.vm_size})


class PlatformNodePool(pulumi.ComponentResource):
    """The untainted, autoscaled User pool where everything that is not a model server runs: the
    gateway, kube-prometheus-stack, the GPU Operator's controllers, the app routing controller."""

    def __init__(
        self,
        name: str,
        *,
        cluster: ClusterSpec,
        os_disk_gb: int,
        resource_group_name: pulumi.Input[str],
        cluster_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:PlatformNodePool", name, None, opts)
        agent_pool = containerservice.AgentPool(
            f"{name}-pool",
            agent_pool_name=PLATFORM_POOL,
            resource_group_name=resource_group_name,
            resource_name_=cluster_name,
            mode=containerservice.AgentPoolMode.USER,
            vm_size=cluster.platform_vm_size,
            os_type=containerservice.OSType.LINUX,
            os_sku=containerservice.OSSKU.UBUNTU,
            os_disk_type=containerservice.OSDiskType.EPHEMERAL,
            os_disk_size_gb=os_disk_gb,
            vnet_subnet_id=subnet_id,
            enable_auto_scaling=True,
            min_count=cluster.platform_min_count,
            max_count=cluster.platform_max_count,
            count=cluster.platform_min_count,
            node_labels={POOL_LABEL: PLATFORM_POOL},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
        )
        self.pool = agent_pool
        self.register_outputs({"name": agent_pool.name})


class AksCluster(pulumi.ComponentResource):
    """AKS with Entra ID + Azure RBAC, no local accounts, workload identity, a network policy
    engine, an API server open to the runner's ranges, automatic upgrades, the Key Vault CSI
    add-on with rotation, KEDA, Container Insights, app routing (when there is an ingress), and a
    system pool reserved for system pods. The deploying principal is made cluster admin, and the
    kubeconfig logs in without a human."""

    name: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    admin_ready: list[pulumi.Resource]
    pull_ready: list[pulumi.Resource]
    app_routing_object_id: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        cluster: ClusterSpec,
        ingress: IngressSpec,
        facts: AksFacts,
        resource_group_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        workspace_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:AksCluster", name, None, opts)
        assert cluster.api_server is not None  # EnvironmentSpec requires it in aks mode
        access = cluster.api_server
        system_size = facts.node_size(cluster.system_vm_size)
        system_disk = min(128, system_size.temp_disk_gib) if system_size else None
        channel_owns_version = cluster.upgrade_channel in MINOR_UPGRADE_CHANNELS or (
            cluster.upgrade_channel == "patch" and cluster.kubernetes_version.count(".") == 2
        )
        managed = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_group_name=resource_group_name,
            dns_prefix=name,  # the sanitised base name: lowercase letters, digits and hyphens
            kubernetes_version=cluster.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED),
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier="Standard"),
            enable_rbac=True,
            disable_local_accounts=True,
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True, enable_azure_rbac=True, admin_group_object_ids=list(cluster.admin_group_object_ids) or None
            ),
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True),
            ),
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin=containerservice.NetworkPlugin.AZURE,
                network_plugin_mode=containerservice.NetworkPluginMode.OVERLAY,
                network_dataplane=containerservice.NetworkDataplane.CILIUM,
                network_policy=containerservice.NetworkPolicy.CILIUM,
                pod_cidr="192.168.0.0/16",
                service_cidr="10.0.0.0/16",
                dns_service_ip="10.0.0.10",
            ),
            api_server_access_profile=containerservice.ManagedClusterAPIServerAccessProfileArgs(
                enable_private_cluster=False,
                authorized_ip_ranges=list(access.authorized_ip_ranges),
            ),
            ingress_profile=containerservice.ManagedClusterIngressProfileArgs(
                web_app_routing=containerservice.ManagedClusterIngressProfileWebAppRoutingArgs(enabled=True)
            )
            if ingress.enabled
            else None,
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(
                upgrade_channel=cluster.upgrade_channel,
                node_os_upgrade_channel="NodeImage",
            ),
            addon_profiles={
                "azureKeyvaultSecretsProvider": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True, config={"enableSecretRotation": "true", "rotationPollInterval": "2m"}
                ),
                "omsagent": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True, config={"logAnalyticsWorkspaceResourceID": workspace_id}
                ),
            },
            workload_auto_scaler_profile=containerservice.ManagedClusterWorkloadAutoScalerProfileArgs(
                keda=containerservice.ManagedClusterWorkloadAutoScalerProfileKedaArgs(enabled=True),
            ),
            agent_pool_profiles=[
                containerservice.ManagedClusterAgentPoolProfileArgs(
                    name="system",
                    mode=containerservice.AgentPoolMode.SYSTEM,
                    vm_size=cluster.system_vm_size,
                    count=cluster.system_node_count,
                    os_type=containerservice.OSType.LINUX,
                    os_disk_type=containerservice.OSDiskType.EPHEMERAL,
                    os_disk_size_gb=system_disk,
                    vnet_subnet_id=subnet_id,
                    node_taints=[SYSTEM_TAINT],
                    enable_auto_scaling=False,
                )
            ],
            # A GET returns every pool in agentPoolProfiles; after a refresh the separate AgentPools
            # would diff as removed and each cluster update PUT all pools (AKS-12, pulumi-azure-native#4264).
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=[*(["kubernetesVersion"] if channel_owns_version else []), "agentPoolProfiles"]
            ),
        )
        # Azure RBAC for Kubernetes is on and local accounts are off: without a data-plane role the
        # deployer gets 403 on every Kubernetes call (Owner/Contributor have no data actions). The
        # deployer is the configured principal, not whoever runs the program: a pull request's
        # preview runs as another identity and would otherwise show this assignment changing.
        client = authorization.get_client_config_output()
        admin_role = facts.roles["aks_rbac_cluster_admin"]
        assignment = authorization.RoleAssignment(
            f"{name}-deployer-admin",
            principal_id=cluster.deployer_object_id or client.object_id,
            role_definition_id=client.subscription_id.apply(lambda sub: _role_id(sub, admin_role.id)),
            scope=managed.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        wait = RbacPropagationWait(
            f"{name}-rbac-propagation",
            follows=assignment.id,
            seconds=facts.rbac_propagation_seconds.value,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[assignment]),
        )
        self.admin_ready = [assignment, wait]
        # Nodes pull the user's images (runtime onnx) as the kubelet identity: AcrPull on each registry.
        acr_pull = facts.roles["acr_pull"]
        kubelet = managed.identity_profile.apply(
            lambda p: (p["kubeletidentity"].object_id or "") if p and "kubeletidentity" in p else ""
        )
        self.pull_ready = [
            authorization.RoleAssignment(
                f"{name}-acrpull-{acr_id.rsplit('/', 1)[1].lower()}",
                principal_id=kubelet,
                principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                role_definition_id=client.subscription_id.apply(lambda sub: _role_id(sub, acr_pull.id)),
                scope=acr_id,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for acr_id in cluster.acr_ids
        ]
        self.app_routing_object_id = (
            managed.ingress_profile.apply(
                lambda p: (
                    (p.web_app_routing.identity.object_id or "") if p and p.web_app_routing and p.web_app_routing.identity else ""
                )
            )
            if ingress.enabled
            else None
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=resource_group_name, resource_name=managed.name
        )
        # Local accounts are disabled: this kubeconfig authenticates through Entra ID (kubelogin),
        # rewritten from device code (which waits for a human) to the configured mode.
        mode = cluster.kubelogin_mode
        self.kubeconfig = pulumi.Output.secret(
            credentials.kubeconfigs[0].value.apply(lambda v: non_interactive_kubeconfig(base64.b64decode(v).decode(), mode))
        )
        self.name = managed.name
        self.oidc_issuer_url = managed.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else "")
        self.register_outputs({"name": managed.name, "oidcIssuerUrl": self.oidc_issuer_url, "kubeconfig": self.kubeconfig})
