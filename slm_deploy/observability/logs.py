"""Log collection of an edge box (opt-in, `logs: {enabled: true}`): the Loki and Alloy configs, the
retention sized from the box's disk, Grafana's Loki datasource and the log-based alert rules.

How logs are collected without the Docker socket (the compose rules refuse docker.sock and /run):
every service keeps Docker's json-file driver, with the `labels` log option naming the compose
service and project, so each line in /var/lib/docker/containers/<id>/<id>-json.log carries
`attrs: {com.docker.compose.service: ...}` (Docker's json-file driver documentation). Alloy tails
those files through a read-only bind and pushes them to Loki on the internal network. The files
are root-owned (0640), so Alloy runs as uid 0 with no capabilities at all (a listed
x-hardening-exceptions entry): as the files' owner it reads them without CAP_DAC_READ_SEARCH, the
capability a non-root reader would need and the one the "shocker" container escape used.

Loki has no size-based retention: the retention period is sized from the share of the disk given
to logs and the daily volume the operator expects; a Prometheus alert fires when Loki receives
more a day than that sizing assumed (the size guard: an alert, not a cap), and Loki's per-tenant rate
limit, derived from the same daily volume, bounds how fast a runaway service can fill the disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slm_deploy.fleet import LogsOptions
from slm_deploy.observability.rules import RUNBOOK_BASE
from slm_deploy.observability.rules import _alert as prometheus_alert

LOKI_PORT = 3100
ALLOY_PORT = 12345
LOKI_URL = f"http://loki:{LOKI_PORT}"
# The edge Prometheus's scrape jobs for them (bundle/__init__.py _scrape_targets); the pipeline alerts name them.
LOKI_JOB = "loki"
ALLOY_JOB = "alloy"
LOKI_DATA = "/loki"
LOKI_CONFIG = "/etc/loki/loki.yaml"
LOKI_RULES = "/etc/loki/rules"
ALLOY_CONFIG = "/etc/alloy/config.alloy"
ALLOY_DATA = "/alloy-data"  # a fresh named volume (root-owned); the image's /var/lib/alloy/data is 473:473 0770
DOCKER_CONTAINERS = "/var/lib/docker/containers"
# Docker's json-file `labels` option: these container labels travel with every log line (attrs).
COMPOSE_LABELS = ("com.docker.compose.project", "com.docker.compose.service")
# Loki's tenant when auth_enabled is false; the ruler's local storage is <directory>/<tenant>/.
TENANT = "fake"
GIB = 1024**3
# Loki's per-tenant limit is a token bucket in MiB/s (limits_config.ingestion_rate_mb). Sustained: the
# whole day's budget within one hour (24 times the average: room for a busy hour, a restart's
# backlog), so a runaway service fills the disk at most 24 times faster than the retention assumes;
# the burst takes Alloy's 1 MiB push batches and a model server's start-up output at once.
RATE_HEADROOM = 24
BURST_MB = 8


@dataclass(frozen=True)
class LogsBudget:
    disk_gib: float  # what Loki may fill
    retention_days: int
    gib_per_day: float  # the daily volume the retention is sized for (as received)


def budget_for(disk_gib: float, gib_per_day: float, max_retention_days: int) -> LogsBudget:
    """How many days of `gib_per_day` fit on `disk_gib`, at most `max_retention_days`."""
    days = min(max_retention_days, math.floor(disk_gib / gib_per_day))
    return LogsBudget(disk_gib, days, gib_per_day)


def logs_budget(options: LogsOptions, disk_gib: float) -> LogsBudget:
    """The share of the box's disk given to logs, and how many days of `gib_per_day` it holds."""
    return budget_for(round(disk_gib * options.disk_share, 1), options.gib_per_day, options.max_retention_days)


def ingestion_rate_mb(gib_per_day: float) -> float:
    """`gib_per_day` times RATE_HEADROOM, in MiB/s, rounded up to 0.001."""
    return math.ceil(gib_per_day * 1024 * RATE_HEADROOM / 86400 * 1000) / 1000


def loki_config(budget: LogsBudget) -> dict[str, Any]:
    """Single-binary Loki 3.5 on the filesystem, retention by the compactor, ruler -> Alertmanager."""
    return {
        "auth_enabled": False,
        "server": {"http_listen_port": LOKI_PORT, "grpc_listen_port": 9095, "log_level": "warn"},
        "common": {
            "path_prefix": LOKI_DATA,
            "instance_addr": "127.0.0.1",
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
            "storage": {"filesystem": {"chunks_directory": f"{LOKI_DATA}/chunks"}},
        },
        "schema_config": {
            "configs": [
                {
                    "from": "2024-01-01",
                    "store": "tsdb",
                    "object_store": "filesystem",
                    "schema": "v13",
                    "index": {"prefix": "index_", "period": "24h"},
                }
            ]
        },
        "limits_config": {
            "retention_period": f"{budget.retention_days * 24}h",
            "reject_old_samples": True,
            "reject_old_samples_max_age": "168h",
            "ingestion_rate_mb": ingestion_rate_mb(budget.gib_per_day),
            "ingestion_burst_size_mb": BURST_MB,
            "per_stream_rate_limit": "1MB",
            "max_query_lookback": f"{budget.retention_days * 24}h",
        },
        "compactor": {
            "working_directory": f"{LOKI_DATA}/compactor",
            "compaction_interval": "10m",
            "retention_enabled": True,
            "retention_delete_delay": "2h",
            "delete_request_store": "filesystem",
        },
        "ruler": {
            "storage": {"type": "local", "local": {"directory": LOKI_RULES}},
            "rule_path": f"{LOKI_DATA}/rules-temp",
            "alertmanager_url": "http://alertmanager:9093",
            "enable_alertmanager_v2": True,
            "ring": {"kvstore": {"store": "inmemory"}},
            "evaluation_interval": "1m",
        },
        "analytics": {"reporting_enabled": False},
    }


def _river_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alloy_config(box_id: str, fleet: str) -> str:
    """Alloy's pipeline: tail the json-file logs, keep this bundle's containers, push to Loki."""
    attrs = {
        "output": "log",
        "stream": "stream",
        "time": "time",
        "project": 'attrs."com.docker.compose.project"',
        "service": 'attrs."com.docker.compose.service"',
    }
    expressions = "\n".join(f"      {key} = {_river_string(value)}," for key, value in attrs.items())
    return f"""// Alloy configuration, generated by slm-deploy: the containers' json-file logs -> Loki.
// No docker.sock: the compose service comes from the `attrs` the json-file driver writes
// (logging option `labels`); lines without it belong to other containers and are dropped.

local.file_match "containers" {{
  path_targets = [{{"__path__" = "{DOCKER_CONTAINERS}/*/*-json.log"}}]
  sync_period  = "10s"
}}

loki.source.file "containers" {{
  targets    = local.file_match.containers.targets
  forward_to = [loki.process.containers.receiver]
}}

loki.process "containers" {{
  stage.json {{
    expressions = {{
{expressions}
    }}
  }}

  stage.labels {{
    values = {{
      project = "",
      service = "",
      stream  = "",
    }}
  }}

  stage.match {{
    selector = "{{service=\\"\\"}}"
    action   = "drop"
    drop_counter_reason = "not_a_bundle_container"
  }}

  stage.timestamp {{
    source = "time"
    format = "RFC3339Nano"
  }}

  stage.output {{
    source = "output"
  }}

  stage.label_drop {{
    values = ["filename"]
  }}

  forward_to = [loki.write.box.receiver]
}}

{_loki_write("box", LOKI_URL, {"box": box_id, "fleet": fleet})}"""


def _loki_write(label: str, loki_url: str, labels: dict[str, str]) -> str:
    """The loki.write component: Loki's push endpoint, and the labels every line gets."""
    width = max(len(k) for k in labels)
    pairs = "\n".join(f"    {k.ljust(width)} = {_river_string(v)}," for k, v in labels.items())
    return f"""loki.write {_river_string(label)} {{
  endpoint {{
    url = "{loki_url}/loki/api/v1/push"
  }}
  external_labels = {{
{pairs}
  }}
}}
"""


# Lines the runtimes print when the GPU or host runs out of memory, or CUDA fails; no metric says so.
OOM_PATTERN = (
    "(?i)(CUDA out of memory|OutOfMemoryError|out of memory|cudaErrorMemoryAllocation|"
    "failed to allocate|ggml_backend_cuda_buffer_type_alloc_buffer|std::bad_alloc)"
)
CUDA_PATTERN = "(?i)(CUDA error|cudaError[A-Za-z]*|CUBLAS_STATUS_[A-Z_]+|NCCL error|illegal memory access)"


def _log_alert(name: str, expr: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": "0m",
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description, "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}"},
    }


def _line_count(selector: str, pattern: str, by: str) -> str:
    return f"sum by ({by}) (count_over_time({selector} |~ `{pattern}` [5m])) > 0"


def loki_rule_groups(services: list[str], where: str = "box") -> list[dict[str, Any]]:
    """Loki ruler alerts (LogQL) on the model servers' log lines; `where` is the label that names the
    place (the edge box, or the Kubernetes pod)."""
    selector = f'{{service="{services[0]}"}}' if len(services) == 1 else f'{{service=~"{"|".join(services)}"}}'
    by = f"{where}, service"
    return [
        {
            "name": "slm-logs",
            "interval": "1m",
            "rules": [
                _log_alert(
                    "ModelServerOutOfMemory",
                    _line_count(selector, OOM_PATTERN, by),
                    # A warning: the pattern is broad (llama.cpp logs allocation failures it recovers from,
                    # falling back to smaller buffers); an OOM that stops serving pages as ModelServerDown.
                    "warning",
                    f"The model server logged an out-of-memory error on {{{{ $labels.{where} }}}}",
                    "{{ $value }} out-of-memory lines from {{ $labels.service }} in 5 minutes.",
                ),
                _log_alert(
                    "ModelServerCudaError",
                    _line_count(selector, CUDA_PATTERN, by),
                    "critical",  # a CUDA error leaves the process's CUDA context unusable
                    f"The model server logged a CUDA error on {{{{ $labels.{where} }}}}",
                    "{{ $value }} CUDA error lines from {{ $labels.service }} in 5 minutes.",
                ),
            ],
        }
    ]


def volume_rule_groups(budget: LogsBudget) -> list[dict[str, Any]]:
    """The size guard, as a Prometheus alert on Loki's own counter (promtool checks it)."""
    limit = int(budget.gib_per_day * GIB)
    return [
        {
            "name": "slm-logs-volume",
            "rules": [
                {
                    "alert": "LogVolumeAboveBudget",
                    "expr": f"sum(increase(loki_distributor_bytes_received_total[1d])) > {limit}",
                    "for": "1h",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "Loki receives more logs a day than its disk share was sized for",
                        "description": f"More than {budget.gib_per_day:g} GiB in 24 h: {budget.retention_days} days of "
                        f"retention would outgrow the {budget.disk_gib:g} GiB given to logs.",
                        "runbook_url": f"{RUNBOOK_BASE}#logvolumeabovebudget",
                    },
                }
            ],
        }
    ]


# Alloy v1.10.2 internal/component/loki/source/file/metrics.go: a gauge, registered (at 0) when
# loki.source.file starts; Loki v3.5.8 pkg/loghttp/push/push.go: a counter per tenant, created by the first push.
FILES_TAILED = "loki_source_file_files_active_total"
LINES_RECEIVED = "loki_distributor_lines_received_total"
SILENT_FOR = "15m"


def pipeline_rule_groups(loki_job: str, alloy_job: str, *, edge: bool) -> list[dict[str, Any]]:
    """Alerts when log collection stops, so the log alerts do not go silent unseen (warning: the model
    still serves; what is lost is the log view and the out-of-memory and CUDA alerts)."""
    jobs = f"{loki_job}|{alloy_job}"
    rules = [
        prometheus_alert(
            "LogCollectorDown",
            f'up{{job=~"{jobs}"}} == 0',
            SILENT_FOR,
            "warning",
            "{{ $labels.job }} is down: container logs are not collected",
            "Prometheus cannot scrape {{ $labels.job }}: no log lines reach Loki, and the out-of-memory and CUDA log alerts "
            "are silent.",
        )
    ]
    if edge:
        rules.append(
            prometheus_alert(
                "LogTailingNothing",
                f"sum({FILES_TAILED}) == 0",
                SILENT_FOR,
                "warning",
                "Alloy tails no container log file",
                f"Alloy finds no json-file log under {DOCKER_CONTAINERS} (Docker's data-root elsewhere, userns-remap, "
                "rootless or snap Docker, SELinux): no log lines reach Loki and the log alerts are silent.",
            )
        )
    else:
        rules += [
            prometheus_alert(
                "LogCollectorTargetMissing",
                f'absent(up{{job="{loki_job}"}}) or absent(up{{job="{alloy_job}"}})',
                SILENT_FOR,
                "warning",
                "{{ $labels.job }} is not scraped",
                "Prometheus has no target for {{ $labels.job }}: its ServiceMonitor is missing or not selected, so a stopped "
                "log collection would not alert.",
            ),
            # The gateway logs every request, the kubelet's probes included (every 10 s): a silent
            # half hour means Alloy reads nothing (RBAC, the API server) or cannot push.
            prometheus_alert(
                "LogsNotReceived",
                f'(sum(increase({LINES_RECEIVED}[30m])) or on() vector(0)) == 0 and on() (up{{job="{loki_job}"}} == 1)',
                SILENT_FOR,
                "warning",
                "Loki has received no log line for 30 minutes",
                "Loki is up but no line arrived in 30 minutes although the serving namespace's probes log every few "
                "seconds: Alloy reads or pushes nothing, and the log alerts are silent.",
            ),
        ]
    return [{"name": "slm-logs-pipeline", "rules": rules}]


def datasource(url: str) -> dict[str, Any]:
    """Grafana's provisioned Loki datasource (uid `loki`, which the dashboards' logs panels name)."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Loki",
                "uid": "loki",
                "type": "loki",
                "access": "proxy",
                "url": url,
                "editable": False,
                "jsonData": {"maxLines": 1000},
            }
        ],
    }


DATASOURCE = datasource(LOKI_URL)


def alloy_kubernetes_config(namespace: str, cluster: str, loki_url: str) -> str:
    """Alloy on Kubernetes: the serving namespace's pods, tailed through the API server (pods/log),
    so no hostPath and no root; `service` is the container's name, as on the edge (vllm, ollama...)."""
    return f"""// Alloy configuration, generated by slm-deploy: the serving namespace's container logs -> Loki.
// loki.source.kubernetes reads pods/log through the API server: no hostPath, no root.

discovery.kubernetes "pods" {{
  role = "pod"
  namespaces {{
    names = [{_river_string(namespace)}]
  }}
}}

discovery.relabel "pods" {{
  targets = discovery.kubernetes.pods.targets

  rule {{
    source_labels = ["__meta_kubernetes_namespace"]
    target_label  = "namespace"
  }}

  rule {{
    source_labels = ["__meta_kubernetes_pod_name"]
    target_label  = "pod"
  }}

  rule {{
    source_labels = ["__meta_kubernetes_pod_container_name"]
    target_label  = "service"
  }}
}}

loki.source.kubernetes "pods" {{
  targets    = discovery.relabel.pods.output
  forward_to = [loki.write.cluster.receiver]
}}

{_loki_write("cluster", loki_url, {"cluster": cluster})}"""
