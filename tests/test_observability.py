"""Alert rules proven by promtool unit tests, dashboards checked against the metrics that really
exist, and a live Prometheus evaluating a bundle's configuration against a fake vLLM exporter."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.fleet import SloThresholds
from slm_deploy.observability.dashboards import all_expressions, dashboards
from slm_deploy.observability.metrics import all_known
from slm_deploy.observability.rules import alert_names, rule_groups
from slm_deploy.yamlout import dump
from tests.conftest import need_binary

SLO = SloThresholds()
EDGE_RULES = rule_groups(["vllm"], SLO, gpus=True, edge=True)
EDGE_OLLAMA_RULES = rule_groups(["ollama"], SLO, gpus=False, edge=True)  # ModelServerUnhealthy (no /metrics)
K8S_RULES = rule_groups(["vllm", "ollama"], SLO, gpus=True, edge=False)
L = {"model_name": "m", "instance": "i"}  # labels of the vLLM test series


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def hist(name: str, buckets: dict[str, str]) -> list[dict[str, str]]:
    return [series(f"{name}_bucket", {**L, "le": le}, values) for le, values in buckets.items()]


# alert -> (eval time, firing input, expected labels, expected summary, quiet input)
CASES: dict[str, tuple[str, list[dict[str, str]], dict[str, str], str, list[dict[str, str]]]] = {
    "VllmTimeToFirstTokenHigh": (
        "20m",
        hist("vllm:time_to_first_token_seconds", {"1": "0+0x30", "5": "0+10x30", "+Inf": "0+10x30"}),
        L,
        "m: p95 time to first token is 4.8s",
        hist("vllm:time_to_first_token_seconds", {"1": "0+10x30", "5": "0+10x30", "+Inf": "0+10x30"}),
    ),
    "VllmRequestQueueBackingUp": (
        "10m",
        [series("vllm:num_requests_waiting", L, "10x20")],
        L,
        "m: 10 requests waiting",
        [series("vllm:num_requests_waiting", L, "2x20")],
    ),
    "VllmKvCacheNearlyFull": (
        "15m",
        [series("vllm:kv_cache_usage_perc", L, "0.95x30")],
        L,
        "m: KV cache 95% full",
        [series("vllm:kv_cache_usage_perc", L, "0.5x30")],
    ),
    "VllmPreemptionsRising": (
        "25m",
        [series("vllm:num_preemptions_total", L, "0+5x40")],
        L,
        "m: requests are being preempted",
        [series("vllm:num_preemptions_total", L, "3x40")],
    ),
    "GatewayErrorRatioHigh": (
        "20m",
        [
            series(
                "caddy_http_request_duration_seconds_count",
                {"handler": "subroute", "code": "200", "instance": "g"},
                "0+90x30",
            ),
            series(
                "caddy_http_request_duration_seconds_count",
                {"handler": "subroute", "code": "502", "instance": "g"},
                "0+10x30",
            ),
        ],
        {"instance": "g"},
        "g: 10% of requests fail",
        [
            series(
                "caddy_http_request_duration_seconds_count",
                {"handler": "subroute", "code": "200", "instance": "g"},
                "0+99x30",
            ),
            series(
                "caddy_http_request_duration_seconds_count",
                {"handler": "subroute", "code": "502", "instance": "g"},
                "0+1x30",
            ),
        ],
    ),
    "GatewayDown": (
        "5m",
        [series("up", {"slm_role": "gateway", "instance": "g", "job": "gateway"}, "0x10")],
        {"slm_role": "gateway", "instance": "g", "job": "gateway"},
        "gateway g is down",
        [series("up", {"slm_role": "gateway", "instance": "g", "job": "gateway"}, "1x10")],
    ),
    "GatewayTargetMissing": (
        "15m",
        [series("up", {"slm_role": "model-server", "instance": "v", "job": "vllm"}, "1x20")],
        {"slm_role": "gateway"},
        "no gateway target is being scraped",
        [series("up", {"slm_role": "gateway", "instance": "g", "job": "gateway"}, "1x20")],
    ),
    "ModelServerDown": (
        "5m",
        [series("up", {"slm_role": "model-server", "instance": "v", "job": "vllm"}, "0x10")],
        {"slm_role": "model-server", "instance": "v", "job": "vllm"},
        "model server v is down or not ready",
        [series("up", {"slm_role": "model-server", "instance": "v", "job": "vllm"}, "1x10")],
    ),
    "ExporterDown": (
        "10m",
        [series("up", {"slm_role": "gpu", "instance": "d", "job": "dcgm"}, "0x10")],
        {"slm_role": "gpu", "instance": "d", "job": "dcgm"},
        "dcgm on d cannot be scraped",
        [series("up", {"slm_role": "gpu", "instance": "d", "job": "dcgm"}, "1x10")],
    ),
    "ModelServerUnhealthy": (
        "5m",
        [
            series(
                "caddy_reverse_proxy_upstreams_healthy",
                {"slm_role": "gateway", "instance": "g", "upstream": "ollama:11434"},
                "0x10",
            )
        ],
        {"instance": "g", "upstream": "ollama:11434"},
        "model server ollama:11434 fails the gateway's health check",
        [
            series(
                "caddy_reverse_proxy_upstreams_healthy",
                {"slm_role": "gateway", "instance": "g", "upstream": "ollama:11434"},
                "1x10",
            )
        ],
    ),
    "ModelServerTargetMissing": (
        "15m",
        [series("up", {"slm_role": "gateway", "instance": "g", "job": "gateway"}, "1x20")],
        {"slm_role": "model-server"},
        "no model-server target is being scraped",
        [series("up", {"slm_role": "model-server", "instance": "v", "job": "vllm"}, "1x20")],
    ),
    "GpuTooHot": (
        "8m",
        [series("DCGM_FI_DEV_GPU_TEMP", {"gpu": "0", "instance": "n"}, "90x10")],
        {"gpu": "0", "instance": "n"},
        "GPU 0 on n at 90 °C",
        [series("DCGM_FI_DEV_GPU_TEMP", {"gpu": "0", "instance": "n"}, "70x10")],
    ),
    "GpuMemoryExhausted": (
        "20m",
        [
            series("DCGM_FI_DEV_FB_USED", {"gpu": "0", "instance": "n"}, "990x30"),
            series("DCGM_FI_DEV_FB_FREE", {"gpu": "0", "instance": "n"}, "10x30"),
        ],
        {"gpu": "0", "instance": "n"},
        "GPU 0 on n: memory 99% used",
        [
            series("DCGM_FI_DEV_FB_USED", {"gpu": "0", "instance": "n"}, "500x30"),
            series("DCGM_FI_DEV_FB_FREE", {"gpu": "0", "instance": "n"}, "500x30"),
        ],
    ),
    "GpuXidErrors": (
        "3m",
        [series("DCGM_FI_DEV_XID_ERRORS", {"gpu": "0", "instance": "n"}, "0 0 79x5")],
        {"gpu": "0", "instance": "n"},
        "GPU 0 on n reported XID 79",
        [series("DCGM_FI_DEV_XID_ERRORS", {"gpu": "0", "instance": "n"}, "0x10")],
    ),
    "ModelCacheDiskNearlyFull": (
        "15m",
        [
            series("node_filesystem_avail_bytes", {"fstype": "ext4", "mountpoint": "/", "instance": "n"}, "5x20"),
            series("node_filesystem_size_bytes", {"fstype": "ext4", "mountpoint": "/", "instance": "n"}, "100x20"),
        ],
        {"mountpoint": "/", "instance": "n"},
        "model cache disk 5% free",
        [
            series("node_filesystem_avail_bytes", {"fstype": "ext4", "mountpoint": "/", "instance": "n"}, "50x20"),
            series("node_filesystem_size_bytes", {"fstype": "ext4", "mountpoint": "/", "instance": "n"}, "100x20"),
        ],
    ),
}
K8S_DISK = (
    "15m",
    [
        series("kubelet_volume_stats_available_bytes", {"namespace": "slm", "persistentvolumeclaim": "a-models"}, "5x20"),
        series("kubelet_volume_stats_capacity_bytes", {"namespace": "slm", "persistentvolumeclaim": "a-models"}, "100x20"),
    ],
    {"namespace": "slm", "persistentvolumeclaim": "a-models"},
    "model cache disk 5% free",
    [
        series("kubelet_volume_stats_available_bytes", {"namespace": "slm", "persistentvolumeclaim": "a-models"}, "60x20"),
        series("kubelet_volume_stats_capacity_bytes", {"namespace": "slm", "persistentvolumeclaim": "a-models"}, "100x20"),
    ],
)


def _rule(groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def _unit_tests(groups: list[dict[str, Any]], cases: dict[str, Any]) -> dict[str, Any]:
    tests = []
    for name, (at, firing, labels, summary, quiet) in cases.items():
        rule = _rule(groups, name)
        annotations = {**rule["annotations"], "summary": summary}
        expected = {"exp_labels": {**labels, "severity": rule["labels"]["severity"]}, "exp_annotations": annotations}
        tests.append(
            {
                "interval": "1m",
                "input_series": firing,
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": [expected]}],
            }
        )
        tests.append(
            {
                "interval": "1m",
                "input_series": quiet,
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []}],
            }
        )
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}


def _promtool(tmp_path: Path, groups: list[dict[str, Any]], cases: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    promtool = need_binary("promtool")
    (tmp_path / "rules.yml").write_text(dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(dump(_unit_tests(groups, cases)))
    return subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False)


def test_every_alert_has_a_case_and_a_runbook_section() -> None:
    runbooks = (Path(__file__).resolve().parents[1] / "docs" / "runbooks.md").read_text().lower()
    for groups in (EDGE_RULES, K8S_RULES, EDGE_OLLAMA_RULES):
        for name in alert_names(groups):
            assert name in CASES
            rule = _rule(groups, name)
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
            assert f"## {anchor}" in runbooks, anchor


@pytest.mark.tools
@pytest.mark.parametrize(
    ("groups", "disk"),
    [(EDGE_RULES, None), (K8S_RULES, K8S_DISK), (EDGE_OLLAMA_RULES, None)],
    ids=["edge", "kubernetes", "edge-ollama"],
)
def test_promtool_unit_tests_fire_and_stay_quiet_for_every_alert(tmp_path: Path, groups: list[dict[str, Any]], disk: Any) -> None:
    cases = {name: CASES[name] for name in alert_names(groups)}
    if disk is not None:
        cases["ModelCacheDiskNearlyFull"] = disk
    result = _promtool(tmp_path, groups, cases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.tools
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation is reported: the harness does not pass everything."""
    at, firing, labels, _summary, quiet = CASES["VllmRequestQueueBackingUp"]
    result = _promtool(tmp_path, EDGE_RULES, {"VllmRequestQueueBackingUp": (at, quiet, labels, "m: 2 requests waiting", firing)})
    assert result.returncode != 0


@pytest.mark.tools
@pytest.mark.parametrize("runtimes", [["vllm"], ["ollama"], ["llamacpp"], ["vllm", "ollama"]])
@pytest.mark.parametrize("edge", [True, False])
def test_promtool_check_rules_accepts_every_variant(tmp_path: Path, runtimes: list[str], edge: bool) -> None:
    promtool = need_binary("promtool")
    path = tmp_path / "rules.yml"
    path.write_text(dump({"groups": rule_groups(runtimes, SLO, gpus=True, edge=edge)}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    text = _RANGES.sub(" ", _GROUPING.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function, or an operator keyword
        names.add(match.group())
    return names


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le) (rate(a_bucket{x="y{"}[5m])) / on (i) b') == {"a_bucket", "b"}


BOARDS = dashboards(["vllm", "llamacpp"], gpus=True, edge=True)
RECORDED = {r["record"] for g in rule_groups(["vllm"], SLO, gpus=True, edge=True) for r in g["rules"] if "record" in r}


def test_dashboards_refer_only_to_metrics_that_exist() -> None:
    known = all_known() | RECORDED
    expressions = all_expressions(BOARDS) + [
        ("rules", r.get("alert") or r["record"], r["expr"]) for g in EDGE_RULES + K8S_RULES for r in g["rules"]
    ]
    for board, panel, expr in expressions:
        unknown = metric_names(expr) - known
        assert not unknown, f"{board}/{panel}: {sorted(unknown)}"


@pytest.mark.tools
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    rules = [
        {"record": f"slm_test:query_{i}", "expr": expr.replace("$model", ".*").replace("$instance", ".*")}
        for i, (_, _, expr) in enumerate(all_expressions(BOARDS))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_have_stable_uids_panel_ids_and_variables() -> None:
    assert {b["uid"] for b in BOARDS.values()} == {"slm-gateway", "slm-serving", "slm-gpu", "slm-host"}
    for board in BOARDS.values():
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and "instance" in variables
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
    assert "model" in {v["name"] for v in BOARDS["serving"]["templating"]["list"]}
    serving = {p["title"] for p in BOARDS["serving"]["panels"]}
    assert {"Time to first token", "KV-cache usage", "Prefix-cache hit rate", "Requests by finish reason"} <= serving
    assert dashboards(["vllm"], gpus=True, edge=True) == dashboards(["vllm"], gpus=True, edge=True)


def test_bundles_ship_rules_and_grafana_provisioning() -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet
    from tests.conftest import ROOT

    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == "store-0001"))
    rules = yaml.safe_load(bundle.files["prometheus/rules/slm.rules.yml"])
    assert "VllmRequestQueueBackingUp" in alert_names(rules["groups"])
    assert "GpuTooHot" in alert_names(rules["groups"])
    provisioned = {p for p in bundle.files if p.startswith("grafana/provisioning/dashboards/")}
    assert {"grafana/provisioning/dashboards/serving.json", "grafana/provisioning/dashboards/host.json"} <= provisioned
