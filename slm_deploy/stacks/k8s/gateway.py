"""The gateway in front of every model server: API-key authentication, a path allow-list and
request metrics (the same Caddy configuration as the edge gateway), so Ollama and the others
are never reachable unauthenticated. Each model is served under /<name>/v1/...; an optional
Ingress terminates TLS in front of it."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs
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
from slm_deploy.stacks.k8s.common import (
    Probes,
    Sizes,
    capability_skips,
    disruption_budget,
    metrics_monitor,
    mount,
    port,
    profiled_container,
    scratch_volume,
)
from slm_deploy.stacks.k8s.namespace import SECRETS_PATH, SECRETS_VOLUME, ServingNamespace
from slm_deploy.stacks.k8s.netpol import gateway_network_policy
from slm_deploy.stacks.k8s.workload import cluster_service, config_files, serving_deployment, serving_pod

HTTP_PORT = 8080


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
        config_volume = config_files(name, ns, {"Caddyfile": config}, child)
        command = ["/bin/sh", "-c", ENTRYPOINT]
        caddy = profiled_container(
            "caddy",
            image,
            command=command,
            ports=[port(HTTP_PORT, "http"), port(METRICS_PORT, "metrics")],
            sizes=Sizes(
                requests={"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
                limits={"cpu": "1", "memory": "256Mi", "ephemeral-storage": "512Mi"},
            ),
            # On the metrics server: probes on the API server would count as requests (AKS-07).
            probes=Probes.over_http(METRICS_PORT, ready="/healthz", live="/healthz", startup=(2, 30)),
            mounts=[
                mount("config", "/etc/caddy", read_only=True),
                mount(SECRETS_VOLUME, SECRETS_PATH, read_only=True),
                mount("tmp", "/tmp"),
            ],
        )
        deployment = serving_deployment(
            name,
            ns,
            "gateway",
            pod=serving_pod(
                containers=[caddy],
                volumes=[config_volume, namespace.secrets_volume(["api_key"]), scratch_volume("tmp", "64Mi")],
                spread_over=name,
            ),
            replicas=replicas,
            identity=identity_label,
            annotations=capability_skips(image, command) or None,
            opts=child,
        )
        service = cluster_service(name, ns, "gateway", {"http": 80, "metrics": METRICS_PORT}, child)
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
