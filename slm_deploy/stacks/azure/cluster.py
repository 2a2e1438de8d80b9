"""The hardened AKS cluster: its identities, add-ons, system pool, maintenance windows and the
roles its deployer and nodes need. Its other pools are separate AgentPools (stacks/azure/pools.py)."""

from __future__ import annotations

import base64
import hashlib

import pulumi
from pulumi_azure_native import authorization, containerservice, keyvault, managedidentity, monitor

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.environment import ClusterSpec, IngressSpec
from slm_deploy.stacks.azure.kubeconfig import non_interactive_kubeconfig
from slm_deploy.stacks.azure.propagation import RbacPropagationWait

SYSTEM_TAINT = "CriticalAddonsOnly=true:NoSchedule"
# Channels that move the minor version: the spec's version then drifts from what AKS runs, and the
# next update would try a downgrade (pulumi-azure-native#2059).
MINOR_UPGRADE_CHANNELS = {"stable", "rapid"}


def _propagated(
    name: str, assignment: authorization.RoleAssignment, seconds: int, parent: pulumi.Resource
) -> RbacPropagationWait:
    """Waits out ARM's role cache once `assignment` is made: what depends on the wait may use the role."""
    return RbacPropagationWait(
        name, follows=assignment.id, seconds=seconds, opts=pulumi.ResourceOptions(parent=parent, depends_on=[assignment])
    )


def _role_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


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
        client = authorization.get_client_config_output()
        # The control plane runs the cluster autoscaler, which joins new nodes' NICs to our own subnet:
        # without a role on that subnet every scale-out fails (LinkedAuthorizationFailed). A
        # user-assigned identity can be granted it before the cluster exists; a system-assigned one
        # only after (managed-identity-overview.md:74-86; the CLI does this, ARM and Pulumi do not).
        control_plane = managedidentity.UserAssignedIdentity(
            f"{name}-control-plane", resource_group_name=resource_group_name, opts=pulumi.ResourceOptions(parent=self)
        )
        network_role = facts.network_contributor
        subnet_role = authorization.RoleAssignment(
            f"{name}-control-plane-subnet",
            principal_id=control_plane.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=client.subscription_id.apply(lambda sub: _role_id(sub, network_role.id)),
            scope=subnet_id,
            opts=pulumi.ResourceOptions(parent=control_plane),
        )
        # AKS acts on the subnet as this identity from the cluster's create on (aks-service-permissions.md,
        # "cluster identity"): a create that runs before the new role takes effect can fail, and Pulumi
        # does not retry it. Wait out ARM's role cache once, when the assignment is made (R7).
        subnet_wait = _propagated(
            f"{name}-control-plane-subnet-propagation",
            subnet_role,
            facts.cluster_identity_propagation_seconds.value,
            control_plane,
        )
        self.control_plane_ready: list[pulumi.Resource] = [control_plane, subnet_role, subnet_wait]
        lts = facts.kubernetes_versions.lts
        protect = cluster.protect
        managed = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_group_name=resource_group_name,
            dns_prefix=name,  # the sanitised base name: lowercase letters, digits and hyphens
            kubernetes_version=cluster.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(
                type=containerservice.ResourceIdentityType.USER_ASSIGNED, user_assigned_identities=[control_plane.id]
            ),
            # LTS (a year past community end of life) needs the Premium tier and the LTS plan (long-term-support.md:42).
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier=lts.tier if cluster.long_term_support else "Standard"),
            support_plan=lts.support_plan if cluster.long_term_support else None,
            # Who deploys this, from where: the simulator's identity and reach checks read these.
            tags={"slm-deploy-runner": cluster.runner, "slm-deploy-deployer-type": cluster.principal_type},
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
                # Legacy (workspace key) auth retired on 2026-09-30 (catalog/aks.yaml retirements):
                # managed identity auth, with the Data Collection Rule ARM callers create themselves.
                "omsagent": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True, config={"logAnalyticsWorkspaceResourceID": workspace_id, "useAADAuth": "true"}
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
                parent=self,
                ignore_changes=[*(["kubernetesVersion"] if channel_owns_version else []), "agentPoolProfiles"],
                depends_on=self.control_plane_ready,
                protect=protect,
            ),
        )
        self.cluster = managed
        _container_insights(self, name, managed, resource_group_name, workspace_id)
        _maintenance_windows(self, name, cluster, managed, resource_group_name)
        # Azure RBAC for Kubernetes is on and local accounts are off: without a data-plane role the
        # deployer gets 403 on every Kubernetes call (Owner/Contributor have no data actions). The
        # deployer is the configured principal, not whoever runs the program: a pull request's
        # preview runs as another identity and would otherwise show this assignment changing.
        admin_role = facts.roles["aks_rbac_cluster_admin"]
        assignment = authorization.RoleAssignment(
            f"{name}-deployer-admin",
            principal_id=cluster.deployer_object_id or client.object_id,
            # pulumi-azure-native fills in 'User' when this is unset (authorization/role_assignment.py:57-58);
            # ARM refuses that for a CI service principal (UnmatchedPrincipalType).
            principal_type=cluster.principal_type,
            role_definition_id=client.subscription_id.apply(lambda sub: _role_id(sub, admin_role.id)),
            scope=managed.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        wait = _propagated(f"{name}-rbac-propagation", assignment, facts.rbac_propagation_seconds.value, self)
        self.admin_ready = [assignment, wait]
        # Nodes pull the user's images (runtime onnx) as the kubelet identity: AcrPull on each registry.
        acr_pull = facts.roles["acr_pull"]
        kubelet = managed.identity_profile.apply(
            lambda p: (p["kubeletidentity"].object_id or "") if p and "kubeletidentity" in p else ""
        )
        pulls = [
            authorization.RoleAssignment(
                # The whole resource id names it: two registries of one name in two groups stay apart.
                f"{name}-acrpull-{acr_id.rsplit('/', 1)[1].lower()}-{hashlib.sha256(acr_id.lower().encode()).hexdigest()[:8]}",
                principal_id=kubelet,
                principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                role_definition_id=client.subscription_id.apply(lambda sub: _role_id(sub, acr_pull.id)),
                scope=acr_id,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for acr_id in cluster.acr_ids
        ]
        # The first pulls would get 401 until the assignments propagate.
        self.pull_ready = list(pulls)
        if pulls:
            self.pull_ready.append(
                RbacPropagationWait(
                    f"{name}-acrpull-propagation",
                    follows=pulumi.Output.all(*[p.id for p in pulls]).apply(lambda ids: ",".join(sorted(ids))),
                    seconds=facts.rbac_propagation_seconds.value,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=pulls),
                )
            )
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


# The Container Insights data collection rule for managed identity auth, as the portal and CLI make it:
# the ContainerInsights extension's default stream group into the workspace, associated with the
# cluster under the name the add-on looks for (azure-monitor docs, "Enable monitoring for AKS
# clusters", ARM template: dataSources.extensions ContainerInsights, association ContainerInsightsExtension).
def _container_insights(
    owner: pulumi.Resource,
    name: str,
    managed: containerservice.ManagedCluster,
    resource_group_name: pulumi.Input[str],
    workspace_id: pulumi.Input[str],
) -> None:
    stream = "Microsoft-ContainerInsights-Group-Default"
    rule = monitor.DataCollectionRule(
        f"{name}-container-insights",
        resource_group_name=resource_group_name,
        kind="Linux",
        data_sources=monitor.DataCollectionRuleDataSourcesArgs(
            extensions=[
                monitor.ExtensionDataSourceArgs(
                    name="ContainerInsightsExtension",
                    extension_name="ContainerInsights",
                    streams=[stream],
                    extension_settings={"dataCollectionSettings": {"interval": "1m", "namespaceFilteringMode": "Off"}},
                )
            ]
        ),
        destinations=monitor.DataCollectionRuleDestinationsArgs(
            log_analytics=[monitor.LogAnalyticsDestinationArgs(name="ciworkspace", workspace_resource_id=workspace_id)]
        ),
        data_flows=[monitor.DataFlowArgs(streams=[stream], destinations=["ciworkspace"])],
        opts=pulumi.ResourceOptions(parent=owner),
    )
    monitor.DataCollectionRuleAssociation(
        f"{name}-container-insights-association",
        association_name="ContainerInsightsExtension",
        resource_uri=managed.id,
        data_collection_rule_id=rule.id,
        opts=pulumi.ResourceOptions(parent=owner),
    )


def _maintenance_windows(
    owner: pulumi.Resource,
    name: str,
    cluster: ClusterSpec,
    managed: containerservice.ManagedCluster,
    resource_group_name: pulumi.Input[str],
) -> None:
    """Cluster and weekly node-image upgrades only inside one weekly window (auto-upgrade-cluster.md:114:
    "highly recommended"), not whenever AKS rolls them: each GPU node reimaged is a cold model reload."""
    window = containerservice.MaintenanceWindowArgs(
        schedule=containerservice.ScheduleArgs(
            weekly=containerservice.WeeklyScheduleArgs(day_of_week=cluster.maintenance_day, interval_weeks=1)
        ),
        duration_hours=cluster.maintenance_hours,
        start_time=f"{cluster.maintenance_start_hour_utc:02d}:00",
        utc_offset="+00:00",
    )
    for config_name in ("aksManagedAutoUpgradeSchedule", "aksManagedNodeOSUpgradeSchedule"):
        containerservice.MaintenanceConfiguration(
            f"{name}-{config_name}",
            config_name=config_name,
            resource_group_name=resource_group_name,
            resource_name_=managed.name,
            maintenance_window=window,
            opts=pulumi.ResourceOptions(parent=owner),
        )


def rbac_vault_scope(key_vault_id: str) -> pulumi.Output[str]:
    """The certificate vault's id, once it is known to use Azure RBAC (see `access_policy_problem`)."""
    parts = key_vault_id.split("/")
    vault = keyvault.get_vault_output(resource_group_name=parts[4], vault_name=parts[-1])

    def checked(properties: keyvault.outputs.VaultPropertiesResponse | None) -> str:
        problem = access_policy_problem(parts[-1], properties.enable_rbac_authorization if properties else None)
        if problem:
            raise ValueError(problem)
        return key_vault_id

    return vault.properties.apply(checked)


def access_policy_problem(vault_name: str, rbac: bool | None) -> str | None:
    """On an access-policy vault a Key Vault Certificate User assignment grants nothing and the
    certificate never syncs (app-routing-dns-ssl.md:35-38,94; review AKS-26): `up` stops with the reason."""
    if rbac is False:
        return (
            f"ingress.certificate.keyVaultId: vault {vault_name} uses access policies: the app routing add-on's role "
            "on it grants nothing; switch the vault to Azure RBAC (enableRbacAuthorization) or give the add-on's "
            "identity an access policy for certificates and secrets yourself"
        )
    return None
