"""Resource group, virtual network with the node subnet, and the Log Analytics workspace."""

from __future__ import annotations

import pulumi
from pulumi_azure_native import network, operationalinsights, resources

from slm_deploy.environment import ClusterSpec


class AzureFoundation(pulumi.ComponentResource):
    resource_group_name: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    workspace_id: pulumi.Output[str]

    def __init__(self, name: str, cluster: ClusterSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("slm:azure:Foundation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        group = resources.ResourceGroup(f"{name}-rg", opts=child)
        vnet = network.VirtualNetwork(
            f"{name}-vnet",
            resource_group_name=group.name,
            address_space=network.AddressSpaceArgs(address_prefixes=[cluster.vnet_cidr]),
            opts=child,
        )
        subnet = network.Subnet(
            f"{name}-nodes",
            resource_group_name=group.name,
            virtual_network_name=vnet.name,
            address_prefix=cluster.node_subnet_cidr,
            # Key Vault denies every network but this subnet (the secrets-store CSI driver on the nodes).
            service_endpoints=[network.ServiceEndpointPropertiesFormatArgs(service="Microsoft.KeyVault")],
            opts=pulumi.ResourceOptions(parent=vnet),
        )
        workspace = operationalinsights.Workspace(
            f"{name}-logs",
            resource_group_name=group.name,
            sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=30,
            opts=child,
        )
        self.resource_group_name = group.name
        self.subnet_id = subnet.id
        self.workspace_id = workspace.id
        self.register_outputs({"resourceGroupName": group.name, "subnetId": subnet.id, "workspaceId": workspace.id})
