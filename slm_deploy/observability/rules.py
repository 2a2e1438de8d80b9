"""Prometheus recording and alert rules for the model servers, the gateway, GPUs and disks.

Built once and used by both targets: edge bundles write them to prometheus/rules/, the stacks
wrap them in a PrometheusRule. Thresholds come from SloThresholds (fleet or stack config).
Every alert carries `summary`, `description` and a `runbook_url` into docs/runbooks.md, and is
exercised by `promtool test rules` (tests/test_observability.py): a series that fires it and one
that does not.

Targets carry an `slm_role` label (model-server, gateway, gpu, host) set by the scrape config
(edge) or the monitors' relabelings (Kubernetes), so rules do not depend on job names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slm_deploy.fleet import SloThresholds

RUNBOOK_BASE = "https://github.com/slm-deploy/slm-deploy/blob/main/docs/runbooks.md"
# Caddy counts each request once, under the top-level `handle` block (see templates/Caddyfile.jinja).
GATEWAY_SERIES = 'caddy_http_request_duration_seconds_count{handler="subroute"}'

# Recording rules: the expensive expressions, evaluated once and reused by alerts and dashboards.
RECORD_TTFT_P95 = "slm:vllm_time_to_first_token_seconds:p95_5m"
RECORD_WAITING = "slm:vllm_requests_waiting:max"
RECORD_GATEWAY_RATE = "slm:gateway_requests:rate5m"
RECORD_GATEWAY_ERRORS = "slm:gateway_errors:ratio_rate5m"
RECORD_TOKENS = "slm:vllm_generation_tokens:rate5m"


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}",
        },
    }


def _vllm_groups(slo: SloThresholds) -> list[dict[str, Any]]:
    recording = [
        {
            "record": RECORD_TTFT_P95,
            "expr": "histogram_quantile(0.95, sum by (le, model_name, instance) "
            "(rate(vllm:time_to_first_token_seconds_bucket[5m])))",
        },
        {"record": RECORD_WAITING, "expr": "max by (model_name, instance) (vllm:num_requests_waiting)"},
        {
            "record": RECORD_TOKENS,
            "expr": "sum by (model_name, instance) (rate(vllm:generation_tokens_total[5m]))",
        },
    ]
    alerts = [
        _alert(
            "VllmTimeToFirstTokenHigh",
            f"{RECORD_TTFT_P95} > {slo.ttft_p95_seconds:g}",
            "10m",
            "warning",
            "{{ $labels.model_name }}: p95 time to first token is {{ $value | humanizeDuration }}",
            f"p95 time to first token has been above the {slo.ttft_p95_seconds:g} s SLO for 10 minutes.",
        ),
        _alert(
            "VllmRequestQueueBackingUp",
            f"{RECORD_WAITING} > {slo.queue_waiting}",
            "5m",
            "warning",
            "{{ $labels.model_name }}: {{ $value }} requests waiting",
            f"More than {slo.queue_waiting} requests have waited for a slot for 5 minutes: the server is saturated.",
        ),
        _alert(
            "VllmKvCacheNearlyFull",
            f"max by (model_name, instance) (vllm:kv_cache_usage_perc) > {slo.kv_cache_usage:g}",
            "10m",
            "warning",
            "{{ $labels.model_name }}: KV cache {{ $value | humanizePercentage }} full",
            f"KV-cache usage has stayed above {slo.kv_cache_usage:.0%} for 10 minutes; preemptions follow.",
        ),
        _alert(
            "VllmPreemptionsRising",
            "sum by (model_name, instance) (rate(vllm:num_preemptions_total[5m])) > 0",
            "15m",
            "warning",
            "{{ $labels.model_name }}: requests are being preempted",
            "vLLM has preempted running requests for 15 minutes because the KV cache ran out.",
        ),
    ]
    return [
        {"name": "slm-vllm-recording", "rules": recording},
        {"name": "slm-vllm-alerts", "rules": alerts},
    ]


def _gateway_groups(slo: SloThresholds) -> list[dict[str, Any]]:
    recording = [
        {"record": RECORD_GATEWAY_RATE, "expr": f"sum by (instance, code) (rate({GATEWAY_SERIES}[5m]))"},
        {
            "record": RECORD_GATEWAY_ERRORS,
            # `or ... * 0`: 0 rather than no value while nothing has failed (the live test reads it).
            "expr": f'(sum by (instance) ({RECORD_GATEWAY_RATE}{{code=~"5.."}}) or sum by (instance) ({RECORD_GATEWAY_RATE}) * 0)'
            f" / sum by (instance) ({RECORD_GATEWAY_RATE})",
        },
    ]
    alerts = [
        _alert(
            "GatewayErrorRatioHigh",
            f"{RECORD_GATEWAY_ERRORS} > {slo.error_ratio:g}",
            "10m",
            "critical",
            "{{ $labels.instance }}: {{ $value | humanizePercentage }} of requests fail",
            f"More than {slo.error_ratio:.0%} of gateway requests have returned 5xx for 10 minutes.",
        ),
    ]
    return [{"name": "slm-gateway-recording", "rules": recording}, {"name": "slm-gateway-alerts", "rules": alerts}]


def _duration(seconds: int) -> str:
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _edge_liveness(server_metrics: bool, startup_seconds: int) -> list[dict[str, Any]]:
    """What only an edge box needs: its model server checked even without /metrics, through the
    gateway's active health check of it (Caddy's caddy_reverse_proxy_upstreams_healthy gauge), and
    every exporter's own scrape (E10)."""
    rules = []
    if not server_metrics:
        rules.append(
            _alert(
                "ModelServerUnhealthy",
                'max by (instance, upstream) (caddy_reverse_proxy_upstreams_healthy{slm_role="gateway"}) == 0',
                _duration(max(startup_seconds, 120)),
                "critical",
                "model server {{ $labels.upstream }} fails the gateway's health check",
                "The gateway's health check of the model server has failed for longer than its start-up budget: "
                "it is down, restarting or cannot load the model.",
            )
        )
    rules.append(
        _alert(
            "ExporterDown",
            'up{slm_role!~"model-server|gateway"} == 0',
            "5m",
            "warning",
            "{{ $labels.job }} on {{ $labels.instance }} cannot be scraped",
            "An exporter or monitoring service is down: the alerts that read its metrics (GPU, host, logs) "
            "stay silent meanwhile.",
        )
    )
    return rules


def _availability_group(server_metrics: bool, startup_seconds: int = 0, edge: bool = False) -> dict[str, Any]:
    rules = [
        _alert(
            "GatewayDown",
            'up{slm_role="gateway"} == 0',
            "2m",
            "critical",
            "gateway {{ $labels.instance }} is down",
            "Prometheus cannot scrape the gateway: clients cannot reach any model.",
        ),
        _alert(
            "GatewayTargetMissing",
            'absent(up{slm_role="gateway"})',
            "10m",
            "warning",
            "no gateway target is being scraped",
            "The gateway's scrape target is absent: the monitor or scrape configuration lost it.",
        ),
    ]
    if server_metrics:
        rules += [
            _alert(
                "ModelServerDown",
                'up{slm_role="model-server"} == 0',
                # No page while a first download or a restart's load (compile, graph capture) runs (E11).
                _duration(max(startup_seconds, 120)),
                "critical",
                "model server {{ $labels.instance }} is down or not ready",
                "Prometheus cannot scrape the model server: it is down, restarting or still loading.",
            ),
            _alert(
                "ModelServerTargetMissing",
                'absent(up{slm_role="model-server"})',
                "10m",
                "warning",
                "no model-server target is being scraped",
                "No model server is scraped at all: scaled to zero, or the monitor lost it.",
            ),
        ]
    if edge:
        rules += _edge_liveness(server_metrics, startup_seconds)
    return {"name": "slm-availability", "rules": rules}


def _gpu_group(slo: SloThresholds) -> dict[str, Any]:
    return {
        "name": "slm-gpu",
        "rules": [
            _alert(
                "GpuTooHot",
                f"max by (instance, gpu) (DCGM_FI_DEV_GPU_TEMP) > {slo.gpu_temperature_celsius:g}",
                "5m",
                "warning",
                "GPU {{ $labels.gpu }} on {{ $labels.instance }} at {{ $value }} °C",
                f"GPU temperature has been above {slo.gpu_temperature_celsius:g} °C for 5 minutes; it will throttle.",
            ),
            _alert(
                "GpuMemoryExhausted",
                "max by (instance, gpu) (DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)) > 0.98",
                "15m",
                "warning",
                "GPU {{ $labels.gpu }} on {{ $labels.instance }}: memory {{ $value | humanizePercentage }} used",
                "GPU memory has been more than 98% used for 15 minutes (vLLM itself reserves its share up front).",
            ),
            _alert(
                "GpuXidErrors",
                "max by (instance, gpu) (max_over_time(DCGM_FI_DEV_XID_ERRORS[5m])) > 0",
                "0m",
                "critical",
                "GPU {{ $labels.gpu }} on {{ $labels.instance }} reported XID {{ $value }}",
                "The driver reported an XID error: a hardware, driver or application fault on this GPU.",
            ),
        ],
    }


def _disk_group(slo: SloThresholds, edge: bool) -> dict[str, Any]:
    if edge:
        expr = (
            'min by (instance, mountpoint) (node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} '
            '/ node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"})'
        )
    else:
        claims = '{persistentvolumeclaim=~".*-models"}'
        expr = (
            f"min by (namespace, persistentvolumeclaim) (kubelet_volume_stats_available_bytes{claims} "
            f"/ kubelet_volume_stats_capacity_bytes{claims})"
        )
    return {
        "name": "slm-disk",
        "rules": [
            _alert(
                "ModelCacheDiskNearlyFull",
                f"{expr} < {slo.disk_free_ratio:g}",
                "10m",
                "warning",
                "model cache disk {{ $value | humanizePercentage }} free",
                f"Less than {slo.disk_free_ratio:.0%} of the model-cache disk is free; the next download will fail.",
            )
        ],
    }


def rule_groups(
    runtimes: Iterable[str], slo: SloThresholds, *, gpus: bool, edge: bool, startup_seconds: int = 0
) -> list[dict[str, Any]]:
    """`startup_seconds`: the model server's start-up budget (first download and load), on edge boxes."""
    kinds = set(runtimes)
    groups: list[dict[str, Any]] = []
    if "vllm" in kinds:
        groups += _vllm_groups(slo)
    groups += _gateway_groups(slo)
    groups.append(_availability_group(bool(kinds & {"vllm", "llamacpp"}), startup_seconds, edge))
    if gpus:
        groups.append(_gpu_group(slo))
    groups.append(_disk_group(slo, edge))
    return groups


def alert_names(groups: list[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
