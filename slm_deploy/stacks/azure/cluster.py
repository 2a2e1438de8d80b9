"""The hardened AKS cluster and its GPU node pools (separate AgentPool resources, never inline)."""

from __future__ import annotations

import base64

import pulumi
from pulumi_azure_native import containerservice

from slm_deploy.environment import ClusterSpec, GpuDriver, GpuPoolSpec

GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
SYSTEM_TAINT = "CriticalAddonsOnly=true:NoSchedule"
POOL_LABEL = "slm.dev/pool"


class GpuNodePool(pulumi.ComponentResource):
    """One GPU pool: tainted for GPU workloads only, autoscaled, optionally spot or MIG-partitioned."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        pool: GpuPoolSpec,
        vm_size: str,
        driver: GpuDriver,
        resource_group_name: pulumi.Input[str],
        cluster_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:GpuNodePool", name, None, opts)
        agent_pool = containerservice.AgentPool(
            f"{name}-pool",
            agent_pool_name=pool.name,
            resource_group_name=resource_group_name,
            resource_name_=cluster_name,
            mode=containerservice.AgentPoolMode.USER,
            vm_size=vm_size,
            os_type=containerservice.OSType.LINUX,
            os_sku=containerservice.OSSKU.UBUNTU,
            os_disk_type=containerservice.OSDiskType.EPHEMERAL,
            os_disk_size_gb=pool.os_disk_gb,
            vnet_subnet_id=subnet_id,
            enable_auto_scaling=True,
            min_count=pool.min_count,
            max_count=pool.max_count,
            count=pool.min_count,
            node_taints=[GPU_TAINT],
            node_labels={POOL_LABEL: pool.name, "slm.dev/accelerator": "nvidia"},
            # With the GPU Operator, AKS must not install drivers too ("None"); otherwise AKS installs
            # them and the device plugin DaemonSet advertises nvidia.com/gpu.
            gpu_profile=containerservice.GPUProfileArgs(
                driver=containerservice.GPUDriver.NONE if driver is GpuDriver.OPERATOR else containerservice.GPUDriver.INSTALL
            ),
            gpu_instance_profile=pool.mig_profile,
            scale_set_priority=containerservice.ScaleSetPriority.SPOT if pool.spot else None,
            scale_set_eviction_policy=containerservice.ScaleSetEvictionPolicy.DELETE if pool.spot else None,
            spot_max_price=-1 if pool.spot else None,
            # The cluster autoscaler owns the node count; Pulumi must not fight it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
        )
        self.name = agent_pool.name
        self.register_outputs({"name": agent_pool.name, "vmSize": vm_size})


class AksCluster(pulumi.ComponentResource):
    """AKS with Entra ID + Azure RBAC, no local accounts, workload identity, a network policy
    engine, a restricted API server, automatic upgrades, the Key Vault CSI add-on with rotation,
    KEDA, Container Insights, and a system pool reserved for system pods."""

    name: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        cluster: ClusterSpec,
        resource_group_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        workspace_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:AksCluster", name, None, opts)
        assert cluster.api_server is not None  # EnvironmentSpec requires it in aks mode
        access = cluster.api_server
        managed = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_group_name=resource_group_name,
            dns_prefix=name,
            kubernetes_version=cluster.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED),
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier="Standard"),
            enable_rbac=True,
            disable_local_accounts=True,
            aad_profile=containerservice.ManagedClusterAADProfileArgs(managed=True, enable_azure_rbac=True),
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
                enable_private_cluster=access.private,
                authorized_ip_ranges=list(access.authorized_ip_ranges) or None,
            ),
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
                    vnet_subnet_id=subnet_id,
                    node_taints=[SYSTEM_TAINT],
                    enable_auto_scaling=False,
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=resource_group_name, resource_name=managed.name
        )
        # Local accounts are disabled: this kubeconfig authenticates through Entra ID (kubelogin).
        self.kubeconfig = pulumi.Output.secret(credentials.kubeconfigs[0].value.apply(lambda v: base64.b64decode(v).decode()))
        self.name = managed.name
        self.oidc_issuer_url = managed.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else "")
        self.register_outputs({"name": managed.name, "oidcIssuerUrl": self.oidc_issuer_url, "kubeconfig": self.kubeconfig})
