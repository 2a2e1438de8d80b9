"""Key Vault (RBAC, purge protection, deny-by-default network), the serving secrets, and a
user-assigned identity federated with the serving namespace's service account."""

from __future__ import annotations

import pulumi
import pulumi_random as random
from pulumi_azure_native import authorization, keyvault, managedidentity

KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # built-in role definition id


class ServingSecrets(pulumi.ComponentResource):
    vault_name: pulumi.Output[str]
    client_id: pulumi.Output[str]
    tenant_id: pulumi.Output[str]
    secret_names: list[str]
    # What a pod mounting the secrets needs to exist first: the secrets, the federated credential
    # and the identity's role on the vault (the CSI mount fails until all three do).
    ready: list[pulumi.Resource]

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
        protect: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:azure:ServingSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        client = authorization.get_client_config_output()
        # Key Vault names are global, 3-24 characters: Pulumi's auto-name (the logical name plus a
        # random suffix) outgrows that for longer stack names. A short prefix and our own suffix,
        # fixed in state, stay within it; a re-created stack gets a new one (the old name is held
        # by soft delete and purge protection for 90 days).
        suffix = random.RandomString(f"{name}-kv-suffix", length=6, special=False, upper=False, opts=child)
        prefix = name[:17].rstrip("-")
        vault = keyvault.Vault(
            f"{name}-kv",
            vault_name=suffix.result.apply(lambda s: f"{prefix}-{s}"),
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
            opts=pulumi.ResourceOptions(parent=self, protect=protect),
        )
        ready: list[pulumi.Resource] = []
        for secret_name, value in sorted(secrets.items()):
            secret = keyvault.Secret(
                f"{name}-{secret_name}",
                resource_group_name=resource_group_name,
                vault_name=vault.name,
                secret_name=secret_name.replace("_", "-"),
                properties=keyvault.SecretPropertiesArgs(value=pulumi.Output.secret(value)),
                # Deleting a secret is a data-plane call (custom_keyvault.go: azsecrets DeleteSecret) that
                # the vault's firewall and the deployer's roles refuse: on `destroy` the secrets go with
                # the vault (soft-deleted with it); dropping one (hfToken unset) leaves it in the vault.
                opts=pulumi.ResourceOptions(parent=vault, deleted_with=vault, retain_on_delete=True),
            )
            ready.append(secret)
        identity = managedidentity.UserAssignedIdentity(f"{name}-id", resource_group_name=resource_group_name, opts=child)
        federation = managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            resource_group_name=resource_group_name,
            resource_name_=identity.name,
            issuer=oidc_issuer_url,
            subject=f"system:serviceaccount:{namespace}:{service_account}",
            audiences=["api://AzureADTokenExchange"],
            opts=pulumi.ResourceOptions(parent=identity),
        )
        role = authorization.RoleAssignment(
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
        self.ready = [*ready, federation, role]
        self.register_outputs({"vaultName": vault.name, "clientId": identity.client_id})
