"""The serving namespace's network policies: only the gateway and monitoring reach a model server,
whose fetch Job reaches the internet on 443 and nothing private; clients reach the gateway, which
reaches the model servers only."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from slm_deploy.stacks.k8s.common import from_monitoring, selector

PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]


def server_network_policies(name: str, ns: str, port: int, child: pulumi.ResourceOptions) -> None:
    NetworkPolicy(
        f"{name}-ingress",
        metadata=ObjectMetaArgs(name=f"{name}-ingress", namespace=ns),
        spec=NetworkPolicySpecArgs(
            pod_selector=LabelSelectorArgs(match_labels=selector(name)),
            policy_types=["Ingress"],
            ingress=[
                NetworkPolicyIngressRuleArgs(
                    from_=[
                        NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs(match_labels={"slm.dev/role": "gateway"})),
                        from_monitoring(),
                    ],
                    ports=[NetworkPolicyPortArgs(port=port, protocol="TCP")],
                )
            ],
        ),
        opts=child,
    )
    NetworkPolicy(
        f"{name}-fetch-egress",
        metadata=ObjectMetaArgs(name=f"{name}-fetch-egress", namespace=ns),
        spec=NetworkPolicySpecArgs(
            pod_selector=LabelSelectorArgs(match_labels={"app.kubernetes.io/name": name, "slm.dev/role": "model-fetch"}),
            policy_types=["Egress"],
            egress=[
                NetworkPolicyEgressRuleArgs(
                    to=[NetworkPolicyPeerArgs(ip_block=IPBlockArgs(cidr="0.0.0.0/0", except_=PRIVATE_RANGES))],
                    ports=[NetworkPolicyPortArgs(port=443, protocol="TCP")],
                )
            ],
        ),
        opts=child,
    )


def gateway_network_policy(
    name: str, ns: str, http_port: int, metrics_port: int, server_ports: list[int], child: pulumi.ResourceOptions
) -> None:
    NetworkPolicy(
        f"{name}-netpol",
        metadata=ObjectMetaArgs(name=name, namespace=ns),
        spec=NetworkPolicySpecArgs(
            pod_selector=LabelSelectorArgs(match_labels=selector(name)),
            policy_types=["Ingress", "Egress"],
            ingress=[
                # Clients arrive through the ingress controller (any namespace in the cluster).
                NetworkPolicyIngressRuleArgs(
                    from_=[NetworkPolicyPeerArgs(namespace_selector=LabelSelectorArgs())],
                    ports=[NetworkPolicyPortArgs(port=http_port, protocol="TCP")],
                ),
                NetworkPolicyIngressRuleArgs(
                    from_=[from_monitoring()],
                    ports=[NetworkPolicyPortArgs(port=metrics_port, protocol="TCP")],
                ),
            ],
            egress=[
                NetworkPolicyEgressRuleArgs(
                    to=[NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs(match_labels={"slm.dev/role": "model-server"}))],
                    ports=[NetworkPolicyPortArgs(port=p, protocol="TCP") for p in server_ports],
                )
            ],
        ),
        opts=child,
    )
