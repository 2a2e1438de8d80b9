"""Alert rules as a PrometheusRule and dashboards as ConfigMaps for the Grafana sidecar, both
built by generator/observability (the same content the edge bundles ship)."""

from __future__ import annotations

import json

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import ConfigMap
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from slm_deploy.catalog import Catalog
from slm_deploy.environment import Environment
from slm_deploy.observability.dashboards import dashboards
from slm_deploy.observability.rules import rule_groups
from slm_deploy.stacks.k8s.monitoring import NAMESPACE as MONITORING_NAMESPACE


def publish_observability(name: str, env: Environment, catalog: Catalog, opts: pulumi.ResourceOptions) -> None:
    runtimes = sorted({m.plan.runtime for m in env.models})
    gpus = any(m.plan.resources.gpu_count for m in env.models)
    groups = rule_groups(runtimes, env.spec.monitoring.slo, gpus=gpus, edge=False)
    if env.spec.logs.enabled:
        from slm_deploy.stacks.k8s.logs import logs_alert_groups

        groups += logs_alert_groups(env.spec.logs, catalog)
    CustomResource(
        f"{name}-rules",
        api_version="monitoring.coreos.com/v1",
        kind="PrometheusRule",
        metadata=ObjectMetaArgs(
            name="slm-deploy", namespace=env.spec.namespace, labels={"app.kubernetes.io/part-of": "slm-deploy"}
        ),
        spec={"groups": groups},
        opts=opts,
    )
    boards = dashboards(runtimes, gpus=gpus, edge=False, logs=env.spec.logs.enabled)
    for board_name, board in sorted(boards.items()):
        ConfigMap(
            f"{name}-dashboard-{board_name}",
            metadata=ObjectMetaArgs(
                name=f"slm-dashboard-{board_name}",
                namespace=MONITORING_NAMESPACE,
                labels={"grafana_dashboard": "1", "app.kubernetes.io/part-of": "slm-deploy"},
            ),
            data={f"{board_name}.json": json.dumps(board, indent=2, sort_keys=True)},
            opts=opts,
        )
