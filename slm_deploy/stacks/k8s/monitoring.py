"""kube-prometheus-stack with hardened values: Grafana admin from a secret, persistence, retention;
our ServiceMonitors, PrometheusRules and dashboards are picked up without Helm labels."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.core.v1 import Namespace, Secret
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from slm_deploy.catalog import Catalog
from slm_deploy.environment import MonitoringSpec
from slm_deploy.stacks.k8s.common import chart_release

NAMESPACE = "monitoring"
GRAFANA_SECRET = "grafana-admin"


def alert_routes(spec: MonitoringSpec) -> dict[str, Any]:
    """Alertmanager's route to the stack's receiver: the chart's default sends everything to "null"
    (kube-prometheus-stack-77.14.0 values.yaml alertmanager.config). Watchdog stays there."""
    if not spec.alert_webhook_url:
        return {}
    return {
        "config": {
            "route": {
                "receiver": "slm-webhook",
                "group_by": ["alertname", "namespace"],
                "routes": [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}],
            },
            "receivers": [
                {"name": "null"},
                {"name": "slm-webhook", "webhook_configs": [{"url": spec.alert_webhook_url, "send_resolved": True}]},
            ],
        }
    }


class Monitoring(pulumi.ComponentResource):
    namespace: str

    def __init__(
        self,
        name: str,
        *,
        spec: MonitoringSpec,
        catalog: Catalog,
        grafana_password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:Monitoring", name, None, opts)
        ns = Namespace(
            f"{name}-ns",
            metadata=ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
                annotations={
                    "slm.dev/pod-security-reason": "node-exporter reads the host's /proc, /sys and root filesystem "
                    "and uses the host network; every other pod here runs as non-root"
                },
            ),
            # Turning monitoring off must not take the Prometheus and Grafana disks with the namespace.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        admin = Secret(
            f"{name}-grafana-admin",
            metadata=ObjectMetaArgs(name=GRAFANA_SECRET, namespace=NAMESPACE),
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": pulumi.Output.secret(grafana_password)},
            opts=in_ns,
        )
        non_root = {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "fsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        values: dict[str, Any] = {
            # Helm never upgrades the CRDs of the crds subchart: the chart's pre-upgrade job applies
            # them (kube-prometheus-stack-77.14.0 values.yaml crds.upgradeJob). Its busybox would run
            # `latest`: a fixed tag instead (kubectl follows the cluster's version).
            "crds": {"upgradeJob": {"enabled": True, "image": {"busybox": {"tag": "1.37.0"}}}},
            # AKS runs the control plane and Cilium replaces kube-proxy: these targets never answer,
            # and their default alerts would fire from day one (the chart drops their rules too).
            "kubeControllerManager": {"enabled": False},
            "kubeScheduler": {"enabled": False},
            "kubeEtcd": {"enabled": False},
            "kubeProxy": {"enabled": False},
            "grafana": {
                # Its ReadWriteOnce disk cannot attach to a second pod: a rolling update would stick.
                "deploymentStrategy": {"type": "Recreate"},
                "admin": {"existingSecret": GRAFANA_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
                "persistence": {"enabled": True, "size": f"{spec.grafana_storage_gi}Gi"},
                # No root init container to chown the disk: the pod's fsGroup gives it to Grafana's
                # group (chart profile `root_containers`, simulator rule SLM-SIM-016).
                "initChownData": {"enabled": False},
                "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "searchNamespace": "ALL"}},
                "grafana.ini": {
                    "analytics": {"reporting_enabled": False, "check_for_updates": False},
                    "users": {"allow_sign_up": False},
                    "auth.anonymous": {"enabled": False},
                },
            },
            "prometheus": {
                "prometheusSpec": {
                    "retention": spec.retention,
                    "securityContext": non_root,
                    "serviceMonitorSelectorNilUsesHelmValues": False,
                    "podMonitorSelectorNilUsesHelmValues": False,
                    "ruleSelectorNilUsesHelmValues": False,
                    "storageSpec": {
                        "volumeClaimTemplate": {
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": f"{spec.storage_gi}Gi"}},
                            }
                        }
                    },
                }
            },
            "alertmanager": {"alertmanagerSpec": {"securityContext": non_root}, **alert_routes(spec)},
        }
        release = chart_release(
            f"{name}-kube-prometheus-stack",
            catalog,
            "kube-prometheus-stack",
            namespace=NAMESPACE,
            values=values,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, admin]),
        )
        self.release = release
        self.namespace = NAMESPACE
        self.register_outputs({"release": release.name, "namespace": NAMESPACE})
