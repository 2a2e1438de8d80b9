"""Every metric our rules and dashboards may use, by exporter, with where the name comes from.

A test parses every expression and fails on a metric that is not listed here, so a renamed
upstream metric (vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc in 0.9) is caught
in one place. Counters are listed with the `_total` suffix they carry on the wire; histograms
with their `_bucket`, `_sum` and `_count` series.
"""

from __future__ import annotations


def _histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


SOURCES = {
    "vllm": "vLLM v0.11 docs, usage/metrics (V1 engine metric names)",
    "llamacpp": "llama.cpp tools/server README, `--metrics` endpoint",
    "caddy": "Caddy 2.6+ docs, metrics (servers { metrics })",
    "dcgm": "NVIDIA dcgm-exporter default-counters.csv",
    "node": "prometheus/node_exporter collectors (cpu, meminfo, filesystem, netdev, loadavg)",
    "kubelet": "Kubernetes kubelet volume stats (scraped by kube-prometheus-stack)",
    "prometheus": "Prometheus synthetic series",
}

KNOWN_METRICS: dict[str, set[str]] = {
    "vllm": {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        *_histogram("vllm:time_to_first_token_seconds"),
        *_histogram("vllm:inter_token_latency_seconds"),
        *_histogram("vllm:e2e_request_latency_seconds"),
        *_histogram("vllm:request_queue_time_seconds"),
    },
    "llamacpp": {
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    },
    "caddy": {
        "caddy_http_requests_total",
        "caddy_http_requests_in_flight",
        *_histogram("caddy_http_request_duration_seconds"),
    },
    "dcgm": {
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_XID_ERRORS",
    },
    "node": {
        "node_cpu_seconds_total",
        "node_load1",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
    },
    "kubelet": {"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"},
    "prometheus": {"up"},
}


def all_known() -> set[str]:
    return set().union(*KNOWN_METRICS.values())
