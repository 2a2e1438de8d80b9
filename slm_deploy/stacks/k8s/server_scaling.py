"""A model server's autoscaler: KEDA on vLLM's in-flight requests where KEDA and monitoring are
on, a CPU HorizontalPodAutoscaler for the runtimes without a queue metric, none for a fixed count."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.autoscaling.v2 import (
    CrossVersionObjectReferenceArgs,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehaviorArgs,
    HorizontalPodAutoscalerSpecArgs,
    HPAScalingRulesArgs,
    MetricSpecArgs,
    MetricTargetArgs,
    ResourceMetricSourceArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.planner import Plan
from slm_deploy.spec import Runtime
from slm_deploy.stacks.k8s.server_settings import ServerSettings

PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"


def server_autoscaler(
    owner: pulumi.Resource, name: str, ns: str, plan: Plan, settings: ServerSettings, deployment: Deployment
) -> None:
    scaling = settings.autoscaling
    queue_metric = plan.runtime == Runtime.VLLM.value and settings.keda and settings.monitoring
    if queue_metric:
        # In-flight requests (running + waiting), not the queue alone: a replica serving at full
        # slots has an empty queue, so a queue-only query reads 0 under steady load, scales the
        # deployment down (or to zero) and oscillates (the simulator's autoscaling check,
        # SLM-SIM-008). The target per replica is its slots plus queueThreshold waiting.
        selector = f'{{namespace="{ns}",model_name="{plan.model}"}}'
        query = f"sum(vllm:num_requests_running{selector}) + sum(vllm:num_requests_waiting{selector})"
        target = plan.concurrency + scaling.queue_threshold
        triggers = [
            {
                "type": "prometheus",
                "metadata": {"serverAddress": PROMETHEUS_URL, "query": query, "threshold": str(target)},
            }
        ]
        if scaling.min_replicas == 0 and settings.activation_query:
            # Activation only: a threshold no request rate reaches never sizes the deployment.
            triggers.append(
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": PROMETHEUS_URL,
                        "query": settings.activation_query,
                        "threshold": "1000000",
                        "activationThreshold": "0",
                    },
                }
            )
        CustomResource(
            f"{name}-scaler",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata=ObjectMetaArgs(name=name, namespace=ns),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicaCount": scaling.min_replicas,
                "maxReplicaCount": scaling.max_replicas,
                "pollingInterval": scaling.polling_interval_seconds,
                "cooldownPeriod": scaling.cooldown_seconds,
                "triggers": triggers,
            },
            opts=pulumi.ResourceOptions(parent=owner, depends_on=[deployment]),
        )
        return
    if scaling.max_replicas > max(scaling.min_replicas, 1):
        behavior = load_aks_facts().autoscaling.hpa_server_behavior
        HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=ObjectMetaArgs(name=name, namespace=ns),
            spec=HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=CrossVersionObjectReferenceArgs(api_version="apps/v1", kind="Deployment", name=name),
                min_replicas=max(scaling.min_replicas, 1),
                max_replicas=scaling.max_replicas,
                # A replica costs a node and a model load: scale up on sustained load, keep it a while (aks.yaml).
                behavior=HorizontalPodAutoscalerBehaviorArgs(
                    scale_up=HPAScalingRulesArgs(stabilization_window_seconds=behavior.scale_up_stabilization_seconds),
                    scale_down=HPAScalingRulesArgs(stabilization_window_seconds=behavior.scale_down_stabilization_seconds),
                ),
                metrics=[
                    MetricSpecArgs(
                        type="Resource",
                        resource=ResourceMetricSourceArgs(
                            name="cpu",
                            target=MetricTargetArgs(type="Utilization", average_utilization=scaling.cpu_utilization_percent),
                        ),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=owner, depends_on=[deployment]),
        )
