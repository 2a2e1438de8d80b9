"""Key Vault (RBAC, purge protection, deny-by-default network), the serving secrets, and a
user-assigned identity federated with the serving namespace's service account."""

from __future__ import annotations

import pulumi
from pulumi_azure_native import authorization, keyvault, managedidentity

KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # built-in role definition id


class ServingSecrets(pulumi.ComponentResource):
    vault_name: pulumi.Output[str]
    client_id: pulumi.Output[str]
    tenant_id: pulumi.Output[str]
    secret_names: list[str]

    def __init__(
        self,
        name: str,
        *,
        resource_group_name: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        oidc_issuer_url: pulumi.Input[str],
        namespace: str,
        service_account: str,
        secrets: dict[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:ServingSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        client = authorization.get_client_config_output()
        vault = keyvault.Vault(
            f"{name}-kv",
            resource_group_name=resource_group_name,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=client.tenant_id,
                sku=keyvault.SkuArgs(family=keyvault.SkuFamily.A, name=keyvault.SkuName.STANDARD),
                enable_rbac_authorization=True,
                enable_purge_protection=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=90,
                network_acls=keyvault.NetworkRuleSetArgs(
                    default_action=keyvault.NetworkRuleAction.DENY,
                    bypass=keyvault.NetworkRuleBypassOptions.AZURE_SERVICES,
                    virtual_network_rules=[keyvault.VirtualNetworkRuleArgs(id=subnet_id)],
                ),
            ),
            opts=child,
        )
        for secret_name, value in sorted(secrets.items()):
            keyvault.Secret(
                f"{name}-{secret_name}",
                resource_group_name=resource_group_name,
                vault_name=vault.name,
                secret_name=secret_name.replace("_", "-"),
                properties=keyvault.SecretPropertiesArgs(value=pulumi.Output.secret(value)),
                opts=pulumi.ResourceOptions(parent=vault),
            )
        identity = managedidentity.UserAssignedIdentity(f"{name}-id", resource_group_name=resource_group_name, opts=child)
        managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            resource_group_name=resource_group_name,
            resource_name_=identity.name,
            issuer=oidc_issuer_url,
            subject=f"system:serviceaccount:{namespace}:{service_account}",
            audiences=["api://AzureADTokenExchange"],
            opts=pulumi.ResourceOptions(parent=identity),
        )
        authorization.RoleAssignment(
            f"{name}-secrets-user",
            principal_id=identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=client.subscription_id.apply(
                lambda sub: f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{KEY_VAULT_SECRETS_USER}"
            ),
            scope=vault.id,
            opts=pulumi.ResourceOptions(parent=identity),
        )
        self.vault_name = vault.name
        self.client_id = identity.client_id
        self.tenant_id = client.tenant_id
        self.secret_names = sorted(secrets)
        self.register_outputs({"vaultName": vault.name, "clientId": identity.client_id})
