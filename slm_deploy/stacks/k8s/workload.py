"""What the gateway's and the model servers' workloads share: pods under the serving account (no
API token, Pod Security `restricted`), the Deployment and ClusterIP Service around them, and the
ConfigMap that carries a workload's files."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment, DeploymentSpecArgs, DeploymentStrategyArgs
from pulumi_kubernetes.core.v1 import (
    ConfigMap,
    ConfigMapVolumeSourceArgs,
    ContainerArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    Service,
    ServicePortArgs,
    ServiceSpecArgs,
    TolerationArgs,
    VolumeArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs

from slm_deploy.stacks.k8s.common import labels, pod_security, scratch_volumes, selector, spread
from slm_deploy.stacks.k8s.namespace import SERVICE_ACCOUNT


def serving_pod(
    *,
    containers: list[ContainerArgs],
    volumes: list[VolumeArgs],
    init_containers: list[ContainerArgs] | None = None,
    tolerations: list[TolerationArgs] | None = None,
    node_selector: dict[str, str] | None = None,
    spread_over: str | None = None,
    restart_policy: str | None = None,
    grace_seconds: int | None = None,
) -> PodSpecArgs:
    """A pod under the serving account, with the scratch volumes its containers' image profiles ask
    for (profiled_container mounts them). SPREAD_OVER: the workload whose replicas it keeps apart."""
    scratch = {v.name: v for c in [*(init_containers or []), *containers] for v in _scratch(c)}
    return PodSpecArgs(
        service_account_name=SERVICE_ACCOUNT,
        automount_service_account_token=False,
        security_context=pod_security(),
        restart_policy=restart_policy,
        termination_grace_period_seconds=grace_seconds,
        tolerations=tolerations,
        node_selector=node_selector,
        topology_spread_constraints=spread(spread_over) if spread_over else None,
        init_containers=init_containers,
        containers=containers,
        volumes=[*volumes, *scratch.values()],
    )


def _scratch(container: ContainerArgs) -> list[VolumeArgs]:
    image = container.image
    return scratch_volumes(image) if isinstance(image, str) else []


def serving_deployment(
    name: str,
    namespace: str,
    role: str,
    *,
    pod: PodSpecArgs,
    replicas: int | None,
    identity: dict[str, str],
    annotations: dict[str, str] | None = None,
    strategy: DeploymentStrategyArgs | None = None,
    opts: pulumi.ResourceOptions,
) -> Deployment:
    """The Deployment NAME of POD, labelled with ROLE; IDENTITY: the workload identity label its pods
    carry in Key Vault mode."""
    return Deployment(
        f"{name}-deploy",
        metadata=ObjectMetaArgs(name=name, namespace=namespace, labels=labels(name, role), annotations=annotations),
        spec=DeploymentSpecArgs(
            replicas=replicas,
            selector=LabelSelectorArgs(match_labels=selector(name)),
            strategy=strategy,
            template=PodTemplateSpecArgs(metadata=ObjectMetaArgs(labels={**labels(name, role), **identity}), spec=pod),
        ),
        opts=opts,
    )


def cluster_service(name: str, namespace: str, role: str, ports: dict[str, int], opts: pulumi.ResourceOptions) -> Service:
    """The ClusterIP Service NAME in front of NAME's pods; each of PORTS (name -> port) targets the
    container port of the same name."""
    return Service(
        f"{name}-svc",
        metadata=ObjectMetaArgs(name=name, namespace=namespace, labels=labels(name, role)),
        spec=ServiceSpecArgs(
            type="ClusterIP",
            selector=selector(name),
            ports=[ServicePortArgs(name=p, port=number, target_port=p, protocol="TCP") for p, number in ports.items()],
        ),
        opts=opts,
    )


def config_files(name: str, namespace: str, files: dict[str, str], opts: pulumi.ResourceOptions) -> VolumeArgs:
    """The ConfigMap `<name>-config` of FILES (file name -> text), and the `config` volume of it."""
    ConfigMap(f"{name}-config", metadata=ObjectMetaArgs(name=f"{name}-config", namespace=namespace), data=files, opts=opts)
    return VolumeArgs(name="config", config_map=ConfigMapVolumeSourceArgs(name=f"{name}-config"))
