"""Grafana dashboards, built with grafana-foundation-sdk (pinned to the Grafana 11.6 build our
images run). Stable uids and panel ids; the datasource is a variable; model and instance
variables filter every query. Every expression here is parsed and its metrics checked against
slm_deploy/observability/metrics.py by the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import logs as logs_panel
from grafana_foundation_sdk.builders import loki, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LogsSortOrder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from slm_deploy.observability.rules import GATEWAY_SERIES, RECORD_GATEWAY_ERRORS, RECORD_TTFT_P95

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = DataSourceRef(type_val="loki", uid="loki")  # provisioned with the logs (observability/logs.py)
M = 'model_name=~"$model", instance=~"$instance"'  # the vLLM filter every serving query carries
QUANTILES = (0.5, 0.95, 0.99)
INST = 'instance=~"$instance"'


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (expr, legend)
    description: str = ""


def _quantiles(metric: str, by: str = "le") -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{M}}}[5m])))", f"p{int(q * 100)}") for q in QUANTILES
    )


SERVING = (
    PanelSpec(
        "Request rate",
        "reqps",
        ((f"sum by (model_name) (rate(vllm:request_success_total{{{M}}}[5m]))", "{{model_name}}"),),
    ),
    PanelSpec(
        "Time to first token",
        "s",
        (*_quantiles("vllm:time_to_first_token_seconds"), (f"{RECORD_TTFT_P95}{{{M}}}", "p95 (recorded)")),
        "p50/p95/p99 over 5 minutes; the TTFT alert fires on the recorded p95.",
    ),
    PanelSpec("Inter-token latency", "s", _quantiles("vllm:inter_token_latency_seconds")),
    PanelSpec("End-to-end latency", "s", _quantiles("vllm:e2e_request_latency_seconds")),
    PanelSpec(
        "Running and waiting requests",
        "short",
        (
            (f"sum by (model_name) (vllm:num_requests_running{{{M}}})", "running {{model_name}}"),
            (f"sum by (model_name) (vllm:num_requests_waiting{{{M}}})", "waiting {{model_name}}"),
        ),
        "Waiting requests are what KEDA scales on.",
    ),
    PanelSpec(
        "KV-cache usage",
        "percentunit",
        ((f"max by (model_name, instance) (vllm:kv_cache_usage_perc{{{M}}})", "{{model_name}} {{instance}}"),),
    ),
    PanelSpec(
        "Prefix-cache hit rate",
        "percentunit",
        (
            (
                f"sum by (model_name) (rate(vllm:prefix_cache_hits_total{{{M}}}[5m])) "
                f"/ sum by (model_name) (rate(vllm:prefix_cache_queries_total{{{M}}}[5m]))",
                "{{model_name}}",
            ),
        ),
    ),
    PanelSpec(
        "Preemptions",
        "short",
        ((f"sum by (model_name) (rate(vllm:num_preemptions_total{{{M}}}[5m]))", "{{model_name}}"),),
    ),
    PanelSpec(
        "Tokens per second",
        "short",
        (
            (f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{M}}}[5m]))", "prompt {{model_name}}"),
            (f"sum by (model_name) (rate(vllm:generation_tokens_total{{{M}}}[5m]))", "generation {{model_name}}"),
        ),
    ),
    PanelSpec(
        "Requests by finish reason",
        "reqps",
        ((f"sum by (finished_reason) (rate(vllm:request_success_total{{{M}}}[5m]))", "{{finished_reason}}"),),
    ),
)

G = f"{GATEWAY_SERIES[:-1]}, {INST}}}"  # the gateway's request counter with the instance filter
GATEWAY_BUCKETS = f'caddy_http_request_duration_seconds_bucket{{handler="subroute", {INST}}}'
GATEWAY = (
    PanelSpec(
        "Requests by status",
        "reqps",
        ((f"sum by (code) (rate({G}[5m]))", "{{code}}"),),
        "Every request through the gateway, counted once. This is the view for Ollama, which exports no metrics of its own.",
    ),
    PanelSpec("Error ratio (5xx)", "percentunit", ((f"{RECORD_GATEWAY_ERRORS}{{{INST}}}", "{{instance}}"),)),
    PanelSpec(
        "Rejected requests (401/403)",
        "reqps",
        ((f'sum by (code) (rate({G[:-1]}, code=~"401|403"}}[5m]))', "{{code}}"),),
    ),
    PanelSpec(
        "Latency",
        "s",
        tuple((f"histogram_quantile({q}, sum by (le) (rate({GATEWAY_BUCKETS}[5m])))", f"p{int(q * 100)}") for q in QUANTILES),
    ),
    PanelSpec(
        "Requests in flight",
        "short",
        ((f"sum by (instance) (caddy_http_requests_in_flight{{{INST}}})", "{{instance}}"),),
    ),
    PanelSpec("Targets up", "short", (('sum by (slm_role) (up{slm_role=~"gateway|model-server"})', "{{slm_role}}"),)),
)

GPU = (
    PanelSpec("GPU utilization", "percent", ((f"DCGM_FI_DEV_GPU_UTIL{{{INST}}}", "{{instance}} GPU {{gpu}}"),)),
    PanelSpec("GPU memory used", "decmbytes", ((f"DCGM_FI_DEV_FB_USED{{{INST}}}", "{{instance}} GPU {{gpu}}"),)),
    PanelSpec("GPU temperature", "celsius", ((f"DCGM_FI_DEV_GPU_TEMP{{{INST}}}", "{{instance}} GPU {{gpu}}"),)),
    PanelSpec("GPU power", "watt", ((f"DCGM_FI_DEV_POWER_USAGE{{{INST}}}", "{{instance}} GPU {{gpu}}"),)),
    PanelSpec(
        "XID errors",
        "short",
        ((f"max_over_time(DCGM_FI_DEV_XID_ERRORS{{{INST}}}[5m])", "{{instance}} GPU {{gpu}}"),),
        "The last XID the driver reported; any non-zero value is a fault worth a look.",
    ),
)

HOST = (
    PanelSpec(
        "CPU busy",
        "percentunit",
        ((f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", {INST}}}[5m]))', "{{instance}}"),),
    ),
    PanelSpec(
        "Memory available",
        "bytes",
        (
            (f"node_memory_MemAvailable_bytes{{{INST}}}", "available"),
            (f"node_memory_MemTotal_bytes{{{INST}}}", "total"),
        ),
    ),
    PanelSpec(
        "Model-cache disk free",
        "percentunit",
        (
            (
                f'node_filesystem_avail_bytes{{fstype!~"tmpfs|overlay|squashfs", {INST}}} '
                f'/ node_filesystem_size_bytes{{fstype!~"tmpfs|overlay|squashfs", {INST}}}',
                "{{mountpoint}}",
            ),
        ),
    ),
    PanelSpec(
        "Network",
        "Bps",
        (
            (f'rate(node_network_receive_bytes_total{{device!="lo", {INST}}}[5m])', "in {{device}}"),
            (f'rate(node_network_transmit_bytes_total{{device!="lo", {INST}}}[5m])', "out {{device}}"),
        ),
    ),
    PanelSpec("Load", "short", ((f"node_load1{{{INST}}}", "{{instance}}"),)),
)


def _variables(builder: db.Dashboard, model_metric: str | None, instance_metric: str) -> db.Dashboard:
    builder = builder.with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    if model_metric:
        builder = builder.with_variable(
            db.QueryVariable("model")
            .label("Model")
            .datasource(DATASOURCE)
            .query(f"label_values({model_metric}, model_name)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    return builder.with_variable(
        db.QueryVariable("instance")
        .label("Instance")
        .datasource(DATASOURCE)
        .query(f"label_values({instance_metric}, instance)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _board(
    uid: str,
    title: str,
    panels: tuple[PanelSpec, ...],
    model_metric: str | None,
    instance_metric: str,
    description: str,
    logs: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """`logs`: (title, LogQL selector) pairs; a logs panel (Loki datasource) under the graphs for each."""
    builder = db.Dashboard(title).uid(uid).tags(["slm-deploy"]).description(description).refresh("30s")
    builder = builder.time("now-6h", "now").timezone("browser")
    builder = _variables(builder, model_metric, instance_metric)
    for index, spec in enumerate(panels):
        panel = (
            timeseries.Panel()
            .id(index + 1)
            .title(spec.title)
            .datasource(DATASOURCE)
            .unit(spec.unit)
            .grid_pos(GridPos(h=8, w=12, x=(index % 2) * 12, y=(index // 2) * 8))
        )
        if spec.description:
            panel = panel.description(spec.description)
        for ref, (expr, legend) in zip("ABCDEFGH", spec.queries, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
        builder = builder.with_panel(panel)
    for index, (logs_title, selector) in enumerate(logs):
        builder = builder.with_panel(
            logs_panel.Panel()
            .id(len(panels) + 1 + index)
            .title(logs_title)
            .description(f"Log lines of {selector} (Loki, collected by Alloy).")
            .datasource(LOKI)
            .grid_pos(GridPos(h=10, w=24, x=0, y=((len(panels) + 1) // 2) * 8 + index * 10))
            .show_time(True)
            .wrap_log_message(True)
            .enable_log_details(True)
            .sort_order(LogsSortOrder.DESCENDING)
            .with_target(loki.Dataquery().expr(selector).ref_id("A").datasource(LOKI))
        )
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder, sort_keys=True))
    return data


# Model servers that export no Prometheus metrics: the gateway board is their only one, and says so.
NO_SERVER_METRICS = {
    "onnx": "Foundry Local (runtime onnx) exports no Prometheus metrics: these gateway panels are the model "
    "server's request, error and latency metrics; its health is the container healthcheck (model loaded, "
    "Foundry Local's /status answering), shown by `docker compose ps`.",
}


def dashboards(
    runtimes: Iterable[str], *, gpus: bool, edge: bool, logs: bool = False, server_service: str = ""
) -> dict[str, dict[str, Any]]:
    """`logs`: Loki is provisioned, so the Serving and Edge host boards end with a logs panel; on an edge
    box without a Serving board (every runtime but vLLM) the host board also shows the model server's
    lines, `server_service` being its compose service (the `service` label Alloy gives them)."""
    kinds = set(runtimes)
    every_line = ("Logs", '{service=~".+"}')
    # Kubernetes has no host board: the servers without a Serving board get their logs on the gateway's.
    others = sorted(kinds - {"vllm"})
    gateway_logs: tuple[tuple[str, str], ...] = ()
    if logs and not edge and others:
        selector = f'{{service="{others[0]}"}}' if len(others) == 1 else f'{{service=~"{"|".join(others)}"}}'
        gateway_logs = (("Model server logs", selector),)
    gateway = "Requests, errors and latency at the gateway in front of every model server."
    boards = {
        "gateway": _board(
            "slm-gateway",
            "SLM / Gateway",
            GATEWAY,
            None,
            "caddy_http_requests_in_flight",
            " ".join([gateway, *(NO_SERVER_METRICS[k] for k in sorted(kinds & NO_SERVER_METRICS.keys()))]),
            gateway_logs,
        ),
    }
    if "vllm" in kinds:
        boards["serving"] = _board(
            "slm-serving",
            "SLM / Serving (vLLM)",
            SERVING,
            "vllm:num_requests_running",
            "vllm:num_requests_running",
            "Latency, queues and KV cache of the vLLM servers.",
            (("Logs", f'{{service="{server_service or "vllm"}"}}'),) if logs else (),
        )
    if gpus:
        boards["gpu"] = _board(
            "slm-gpu",
            "SLM / GPU",
            GPU,
            None,
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization, memory, temperature, power and XID errors (DCGM exporter).",
        )
    if edge:
        host_logs: tuple[tuple[str, str], ...] = (every_line,) if logs else ()
        if logs and server_service and "serving" not in boards:
            host_logs = (("Model server logs", f'{{service="{server_service}"}}'), every_line)
        boards["host"] = _board(
            "slm-host",
            "SLM / Edge host",
            HOST,
            None,
            "node_load1",
            "CPU, memory, model-cache disk and network of the edge box (node-exporter).",
            host_logs,
        )
    return boards


def all_expressions(boards: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every query, for the tests."""
    return [
        (name, panel["title"], target["expr"])
        for name, board in boards.items()
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target.get("datasource", {}).get("type") != "loki"  # LogQL, not PromQL
    ]
