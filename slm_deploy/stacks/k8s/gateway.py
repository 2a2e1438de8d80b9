"""The gateway in front of every model server: API-key authentication, a path allow-list and
request metrics (the same Caddy configuration as the edge gateway), so Ollama and the others
are never reachable unauthenticated. Each model is served under /<name>/v1/...; an optional
Ingress terminates TLS in front of it."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment, DeploymentSpecArgs
from pulumi_kubernetes.core.v1 import (
    ConfigMap,
    ConfigMapVolumeSourceArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    Service,
    ServicePortArgs,
    ServiceSpecArgs,
    VolumeArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    HTTPIngressPathArgs,
    HTTPIngressRuleValueArgs,
    Ingress,
    IngressBackendArgs,
    IngressRuleArgs,
    IngressServiceBackendArgs,
    IngressSpecArgs,
    IngressTLSArgs,
    ServiceBackendPortArgs,
)

from slm_deploy.environment import IngressSpec
from slm_deploy.gateway import ENTRYPOINT, METRICS_PORT, caddyfile, route
from slm_deploy.image_profiles import profile_for, scratch_dirs
from slm_deploy.stacks.k8s.common import (
    Probes,
    Sizes,
    capability_skips,
    disruption_budget,
    http_probe,
    labels,
    metrics_monitor,
    mount,
    pod_security,
    port,
    profiled_container,
    scratch_volume,
    selector,
    spread,
)
from slm_deploy.stacks.k8s.namespace import SECRETS_PATH, SECRETS_VOLUME, SERVICE_ACCOUNT, ServingNamespace
from slm_deploy.stacks.k8s.netpol import gateway_network_policy

HTTP_PORT = 8080


def _scratch_name(path: str) -> str:
    return "scratch-" + path.strip("/").replace("/", "-")


class Gateway(pulumi.ComponentResource):
    service_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        namespace: ServingNamespace,
        image: str,
        upstreams: list[tuple[str, str, bool]],  # (model server name, host:port, keep connections alive)
        replicas: int,
        ingress: IngressSpec,
        identity_label: dict[str, str],
        monitoring_release: pulumi.Resource | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = namespace.name
        routes = [route(server, address, f"/{server}", keepalive) for server, address, keepalive in upstreams]
        # /healthz only on the metrics server: a 200 on the API server is activity to the scaler and
        # wakes the GPU pool from zero (Caddy records every handler's status, handler="subroute").
        config = caddyfile(f"namespace {ns}", tls=False, port=HTTP_PORT, routes=routes, api_healthz=False)
        ConfigMap(
            f"{name}-config",
            metadata=ObjectMetaArgs(name=f"{name}-config", namespace=ns),
            data={"Caddyfile": config},
            opts=child,
        )
        pod_labels = {**labels(name, "gateway"), **identity_label}
        profile = profile_for(image)
        scratch = scratch_dirs(profile) if profile is not None else []
        deployment = Deployment(
            f"{name}-deploy",
            metadata=ObjectMetaArgs(
                name=name,
                namespace=ns,
                labels=labels(name, "gateway"),
                annotations=capability_skips(image, ["/bin/sh", "-c", ENTRYPOINT]) or None,
            ),
            spec=DeploymentSpecArgs(
                replicas=replicas,
                selector=LabelSelectorArgs(match_labels=selector(name)),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels=pod_labels),
                    spec=PodSpecArgs(
                        service_account_name=SERVICE_ACCOUNT,
                        automount_service_account_token=False,
                        security_context=pod_security(),
                        topology_spread_constraints=spread(name),
                        containers=[
                            profiled_container(
                                "caddy",
                                image,
                                command=["/bin/sh", "-c", ENTRYPOINT],
                                ports=[port(HTTP_PORT, "http"), port(METRICS_PORT, "metrics")],
                                sizes=Sizes(
                                    requests={"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
                                    limits={"cpu": "1", "memory": "256Mi", "ephemeral-storage": "512Mi"},
                                ),
                                probes=Probes(
                                    startup=http_probe("/healthz", METRICS_PORT, 2, 30),
                                    # On the metrics server: probes on the API server would count as requests (AKS-07).
                                    readiness=http_probe("/healthz", METRICS_PORT, 10, 3),
                                    liveness=http_probe("/healthz", METRICS_PORT, 20, 3),
                                ),
                                mounts=[
                                    mount("config", "/etc/caddy", read_only=True),
                                    mount(SECRETS_VOLUME, SECRETS_PATH, read_only=True),
                                    mount("tmp", "/tmp"),
                                    # Where the image's profile says Caddy writes at start (XDG_CONFIG_HOME, XDG_DATA_HOME).
                                    *(mount(_scratch_name(d), d) for d in scratch),
                                ],
                            )
                        ],
                        volumes=[
                            VolumeArgs(name="config", config_map=ConfigMapVolumeSourceArgs(name=f"{name}-config")),
                            namespace.secrets_volume(["api_key"]),
                            scratch_volume("tmp", "64Mi"),
                            *(scratch_volume(_scratch_name(d), "16Mi") for d in scratch),
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        service = Service(
            f"{name}-svc",
            metadata=ObjectMetaArgs(name=name, namespace=ns, labels=labels(name, "gateway")),
            spec=ServiceSpecArgs(
                type="ClusterIP",
                selector=selector(name),
                ports=[
                    ServicePortArgs(name="http", port=80, target_port="http", protocol="TCP"),
                    ServicePortArgs(name="metrics", port=METRICS_PORT, target_port="metrics", protocol="TCP"),
                ],
            ),
            opts=child,
        )
        disruption_budget(name, ns, child)
        server_ports = sorted({int(address.rsplit(":", 1)[1]) for _, address, _ in upstreams})
        gateway_network_policy(name, ns, HTTP_PORT, METRICS_PORT, server_ports, child)
        if monitoring_release is not None:
            # The ServiceMonitor CRD comes with the monitoring release.
            metrics_monitor(
                name,
                ns,
                kind="ServiceMonitor",
                role="gateway",
                port_name="metrics",
                path="/metrics",
                opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring_release]),
            )
        if ingress.enabled:
            assert ingress.host is not None
            annotations = None
            secret_name = ingress.tls_secret_name
            if ingress.certificate is not None:
                # The app routing add-on syncs the Key Vault certificate into `keyvault-<ingress>`.
                annotations = {"kubernetes.azure.com/tls-cert-keyvault-uri": ingress.certificate.uri}
                secret_name = f"keyvault-{name}"
            Ingress(
                f"{name}-ingress",
                metadata=ObjectMetaArgs(name=name, namespace=ns, annotations=annotations),
                spec=IngressSpecArgs(
                    ingress_class_name=ingress.class_name,
                    tls=[IngressTLSArgs(hosts=[ingress.host], secret_name=secret_name)],
                    rules=[
                        IngressRuleArgs(
                            host=ingress.host,
                            http=HTTPIngressRuleValueArgs(
                                paths=[
                                    HTTPIngressPathArgs(
                                        path="/",
                                        path_type="Prefix",
                                        backend=IngressBackendArgs(
                                            service=IngressServiceBackendArgs(name=name, port=ServiceBackendPortArgs(name="http"))
                                        ),
                                    )
                                ]
                            ),
                        )
                    ],
                ),
                opts=child,
            )
        self.service_name = service.metadata.name
        self.register_outputs({"serviceName": service.metadata.name, "deployment": deployment.metadata.name})
