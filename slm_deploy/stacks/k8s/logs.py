"""The opt-in logs release (stack config `logs: {enabled: true}`): Loki as a single binary on a
PersistentVolumeClaim and Alloy as one Deployment that tails the serving namespace's pods through
the API server (loki.source.kubernetes), so neither needs a hostPath, root or a privileged namespace.
Both images are the catalog's, locked through the charts' image values. Grafana (from the monitoring
release) gets a Loki datasource; Prometheus scrapes Loki through its ServiceMonitor.

Loki's ruler evaluates the same log alerts as the edge bundles (out-of-memory and CUDA error lines),
from a ConfigMap mounted into the single binary (not the chart's rules sidecar: another image), and
sends them to the monitoring release's Alertmanager.

Loki has no authentication: Ingress-only NetworkPolicies let Loki's port be reached from the Alloy
pods and the monitoring namespace only, and Alloy's from the monitoring namespace. No egress policy
(see docs/day2.md): Alloy needs the API server, whose address AKS does not fix.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_kubernetes.core.v1 import ConfigMap, Namespace
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicy,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgs, Role, RoleBinding, RoleRefArgs, SubjectArgs

from slm_deploy.catalog import Catalog
from slm_deploy.catalog.platform import ChartComponent, load_chart_profiles
from slm_deploy.environment import LogsSpec
from slm_deploy.observability.logs import (
    ALLOY_PORT,
    LOKI_PORT,
    LOKI_RULES,
    TENANT,
    alloy_kubernetes_config,
    budget_for,
    datasource,
    loki_config,
    loki_rule_groups,
    pipeline_rule_groups,
    volume_rule_groups,
)
from slm_deploy.stacks.k8s.common import chart_release, from_monitoring
from slm_deploy.stacks.k8s.monitoring import NAMESPACE as MONITORING_NAMESPACE
from slm_deploy.yamlout import dump

NAMESPACE = "logs"
ALLOY_ACCOUNT = "alloy-logs"
ALLOY_UID = 473  # the `alloy` user of the image (grafana/alloy Dockerfile), not its default (root)
ALLOY_STORAGE = "/var/lib/alloy-storage"
LOKI_URL = f"http://loki.{NAMESPACE}.svc.cluster.local:{LOKI_PORT}"
# kube-prometheus-stack names its services after the release (slm_deploy/stacks/k8s/monitoring.py).
ALERTMANAGER_URL = f"http://kube-prometheus-stack-alertmanager.{MONITORING_NAMESPACE}.svc:9093"
RULES_CONFIG_MAP = "slm-loki-rules"
SECCOMP = {"seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER = {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    **SECCOMP,
}


def chart_component(catalog: Catalog, chart: str) -> ChartComponent:
    """The chart's one component (chart_profiles.yaml): its pods' labels and its metrics' job."""
    return load_chart_profiles()[(chart, catalog.charts[chart].version)].components[0]


def logs_alert_groups(spec: LogsSpec, catalog: Catalog) -> list[dict[str, Any]]:
    """The Prometheus side of the logs: the size guard, and alerts when collection stops."""
    loki_job, alloy_job = (chart_component(catalog, chart).metrics_job for chart in ("loki", "alloy"))
    if loki_job is None or alloy_job is None:
        raise ValueError("chart_profiles.yaml names no metrics_job for the loki or alloy chart")
    budget = budget_for(spec.storage_gi, spec.gib_per_day, spec.max_retention_days)
    return volume_rule_groups(budget) + pipeline_rule_groups(loki_job, alloy_job, edge=False)


def loki_values(spec: LogsSpec) -> dict[str, Any]:
    """Single-binary Loki sized from the spec (its image: pinned by chart_release)."""
    config = loki_config(budget_for(spec.storage_gi, spec.gib_per_day, spec.max_retention_days))
    ruler = {k: v for k, v in config["ruler"].items() if k in ("evaluation_interval", "enable_alertmanager_v2", "storage")}
    compactor = {k: v for k, v in config["compactor"].items() if k != "working_directory"}
    return {
        "deploymentMode": "SingleBinary",
        "loki": {
            "auth_enabled": False,
            "server": {"http_listen_port": LOKI_PORT},  # the chart's default, stated: the NetworkPolicy opens it
            "commonConfig": {"replication_factor": 1},
            "storage": {"type": "filesystem"},
            "schemaConfig": config["schema_config"],
            "limits_config": config["limits_config"],
            "compactor": compactor,
            "analytics": config["analytics"],
            "rulerConfig": {**ruler, "alertmanager_url": ALERTMANAGER_URL, "rule_path": "/var/loki/rules-temp"},
            "podSecurityContext": {"fsGroup": 10001, "runAsGroup": 10001, "runAsNonRoot": True, "runAsUser": 10001, **SECCOMP},
            "containerSecurityContext": CONTAINER,
        },
        "singleBinary": {
            "replicas": 1,
            # The chart's default deletes the PVC with the StatefulSet: logs off would delete the stored logs.
            # The size is fixed after the first up (volumeClaimTemplates are immutable): docs/day2.md.
            "persistence": {"enabled": True, "size": f"{spec.storage_gi}Gi", "enableStatefulSetAutoDeletePVC": False},
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "extraVolumes": [{"name": "rules", "configMap": {"name": RULES_CONFIG_MAP}}],
            "extraVolumeMounts": [{"name": "rules", "mountPath": f"{LOKI_RULES}/{TENANT}", "readOnly": True}],
        },
        # The chart refuses single-binary replicas beside scalable ones (templates/validate.yaml).
        "read": {"replicas": 0},
        "write": {"replicas": 0},
        "backend": {"replicas": 0},
        "gateway": {"enabled": False},
        "chunksCache": {"enabled": False},
        "resultsCache": {"enabled": False},
        "lokiCanary": {"enabled": False},
        "test": {"enabled": False},
        "sidecar": {"rules": {"enabled": False}},
        "monitoring": {"serviceMonitor": {"enabled": True}},
    }


def alloy_values(serving_namespace: str, cluster: str) -> dict[str, Any]:
    """One Alloy for the serving namespace (its image: pinned by chart_release)."""
    return {
        "crds": {"create": False},
        "serviceMonitor": {"enabled": True},  # chart default false: Alloy unscraped, its silence unseen
        "rbac": {"create": False},  # the chart's ClusterRole reads nodes/proxy and more; a Role below reads pods/log
        "serviceAccount": {"create": True, "name": ALLOY_ACCOUNT},
        "configReloader": {"enabled": False},  # another image; a config change rolls the pod instead
        "global": {
            "podSecurityContext": {
                "runAsNonRoot": True,
                "runAsUser": ALLOY_UID,
                "runAsGroup": ALLOY_UID,
                "fsGroup": ALLOY_UID,
                **SECCOMP,
            }
        },
        "controller": {
            "type": "deployment",
            "replicas": 1,
            "volumes": {"extra": [{"name": "storage", "emptyDir": {}}]},
        },
        "alloy": {
            "configMap": {"create": True, "content": alloy_kubernetes_config(serving_namespace, cluster, LOKI_URL)},
            "storagePath": ALLOY_STORAGE,
            "listenPort": ALLOY_PORT,  # the chart's default, stated: the NetworkPolicy opens it
            "enableReporting": False,
            "mounts": {"varlog": False, "dockercontainers": False, "extra": [{"name": "storage", "mountPath": ALLOY_STORAGE}]},
            "securityContext": {"runAsNonRoot": True, "runAsUser": ALLOY_UID, **CONTAINER},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


def _pods(labels: dict[str, str]) -> NetworkPolicyPeerArgs:
    return NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs(match_labels=labels))


def _tcp(port: int) -> list[NetworkPolicyPortArgs]:
    return [NetworkPolicyPortArgs(port=port, protocol="TCP")]


def ingress_policies(name: str, catalog: Catalog, opts: pulumi.ResourceOptions) -> None:
    """Loki's port from Alloy and the monitoring namespace (Grafana, Prometheus), Alloy's from the
    monitoring namespace; the selectors are the charts' pod labels (chart_profiles.yaml). Ingress only:
    Loki's ruler reaches Alertmanager and Alloy the API server unhindered."""
    loki, alloy = (chart_component(catalog, chart).pod_labels for chart in ("loki", "alloy"))
    if not loki or not alloy:
        raise ValueError("chart_profiles.yaml names no pod_labels for the loki or alloy chart")
    rules = {
        "loki-ingress": (
            loki,
            [
                NetworkPolicyIngressRuleArgs(from_=[_pods(alloy), from_monitoring()], ports=_tcp(LOKI_PORT)),
                # Its own pods: the single binary joins its ring (memberlist) through its own Service.
                NetworkPolicyIngressRuleArgs(from_=[_pods(loki)]),
            ],
        ),
        "alloy-ingress": (alloy, [NetworkPolicyIngressRuleArgs(from_=[from_monitoring()], ports=_tcp(ALLOY_PORT))]),
    }
    for policy, (pods, ingress) in rules.items():
        NetworkPolicy(
            f"{name}-{policy}",
            metadata=ObjectMetaArgs(name=policy, namespace=NAMESPACE),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=pods), policy_types=["Ingress"], ingress=ingress
            ),
            opts=opts,
        )


class Logs(pulumi.ComponentResource):
    """Loki + Alloy releases in the `logs` namespace, after the monitoring release (its CRDs and Grafana)."""

    def __init__(
        self,
        name: str,
        *,
        spec: LogsSpec,
        catalog: Catalog,
        runtimes: list[str],
        serving_namespace: str,
        cluster: str,
        monitoring_release: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:Logs", name, None, opts)
        outer = opts.depends_on if opts is not None else None
        serving_ready: list[pulumi.Resource] = [
            d for d in (outer if isinstance(outer, list) else []) if isinstance(d, pulumi.Resource)
        ]
        ns = Namespace(
            f"{name}-ns",
            metadata=ObjectMetaArgs(
                name=NAMESPACE,
                labels={f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")},
            ),
            # Kept when logs are turned off: deleting the namespace would delete Loki's PVC, the stored logs.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        rules = ConfigMap(
            f"{name}-loki-rules",
            metadata=ObjectMetaArgs(name=RULES_CONFIG_MAP, namespace=NAMESPACE),
            data={"slm-logs.rules.yml": dump({"groups": loki_rule_groups(runtimes, where="pod")})},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]),
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[ns, rules, monitoring_release])
        loki = chart_release(
            f"{name}-loki", catalog, "loki", namespace=NAMESPACE, values=loki_values(spec), opts=after, timeout=600
        )
        reader = Role(
            f"{name}-alloy-reader",
            metadata=ObjectMetaArgs(name=ALLOY_ACCOUNT, namespace=serving_namespace),
            rules=[PolicyRuleArgs(api_groups=[""], resources=["pods", "pods/log"], verbs=["get", "list", "watch"])],
            # In the serving namespace: wait for it explicitly (what the component waits for is not
            # passed to its children; review AKS-24).
            opts=pulumi.ResourceOptions(parent=self, depends_on=serving_ready),
        )
        binding = RoleBinding(
            f"{name}-alloy-reader",
            metadata=ObjectMetaArgs(name=ALLOY_ACCOUNT, namespace=serving_namespace),
            role_ref=RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=ALLOY_ACCOUNT),
            subjects=[SubjectArgs(kind="ServiceAccount", name=ALLOY_ACCOUNT, namespace=NAMESPACE)],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[reader, *serving_ready]),
        )
        alloy = chart_release(
            f"{name}-alloy",
            catalog,
            "alloy",
            namespace=NAMESPACE,
            values=alloy_values(serving_namespace, cluster),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, loki, binding]),
            timeout=600,
        )
        ingress_policies(name, catalog, opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        ConfigMap(
            f"{name}-grafana-datasource",
            metadata=ObjectMetaArgs(
                name="slm-loki-datasource",
                namespace=MONITORING_NAMESPACE,
                labels={"grafana_datasource": "1", "app.kubernetes.io/part-of": "slm-deploy"},
            ),
            data={"loki.yaml": dump(datasource(LOKI_URL))},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[monitoring_release]),
        )
        self.loki = loki
        self.alloy = alloy
        self.register_outputs({"namespace": NAMESPACE, "loki": loki.name, "alloy": alloy.name})
