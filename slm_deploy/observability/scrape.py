"""Prometheus scrape configuration for an edge box (Prometheus 2.42+ syntax; promtool checks it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCRAPE_INTERVAL = "15s"
EVALUATION_INTERVAL = "15s"
RULES_GLOB = "/etc/prometheus/rules/*.yml"
# Where each runtime answers "alive" (Kubernetes liveness probes; the edge gateway's health check of
# servers without /metrics): Ollama's /api/version; onnx: Foundry Local's admin /status (no /health).
HEALTH_PATH = {"vllm": "/health", "ollama": "/api/version", "llamacpp": "/health", "onnx": "/status"}
HEALTH_INTERVAL = "15s"


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    role: str  # slm_role label: model-server, gateway, gpu, host, prometheus
    metrics_path: str = "/metrics"


def prometheus_config(targets: list[ScrapeTarget], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
            "external_labels": dict(sorted(labels.items())),
        },
        "rule_files": [RULES_GLOB],
        "scrape_configs": [
            {
                "job_name": t.job,
                "metrics_path": t.metrics_path,
                "static_configs": [{"targets": [t.address], "labels": {"slm_role": t.role}}],
            }
            for t in targets
        ],
    }
