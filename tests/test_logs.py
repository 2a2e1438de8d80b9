"""Log collection (issue 16, `logs: {enabled: true}`): the fleet option, the bundle's Loki and
Alloy services and configs, the retention sized from the disk, the log alerts and the Grafana side.

Neither Loki nor Alloy runs here (no Debian or PyPI package): the Alloy config is parsed with the
small River reader below, Loki's config keys are checked against the keys its configuration
reference documents (tests/data/loki_config_keys.txt), the Prometheus size guard runs under
`promtool test rules`, and tests/test_compose_live.py runs the wiring against stand-ins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.bundle import build_box
from slm_deploy.fleet import LogsOptions, load_fleet, parse_fleet
from slm_deploy.observability.logs import (
    OOM_PATTERN,
    alloy_config,
    logs_budget,
    loki_config,
    loki_rule_groups,
    pipeline_rule_groups,
    volume_rule_groups,
)
from slm_deploy.yamlout import dump
from tests.conftest import REQUIRE_TOOLS, ROOT, need_binary, run_cli

FLEET = load_fleet(ROOT / "examples" / "fleet.yaml")
LOGS_BOX = next(b for b in FLEET.boxes if b.options.logs.enabled)


def _fleet(tmp_path: Path, box: str, defaults: str = "{model: qwen3-1.7b, runtime: ollama}") -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"fleet: t\ndefaults: {defaults}\nboxes:\n  - {box}\n")
    return path


def _files(box_id: str) -> dict[str, str]:
    box = next(b for b in FLEET.boxes if b.id == box_id)
    return {k: v.decode() for k, v in build_box(box, FLEET).files.items()}


# ------------------------------------------------------------------ the fleet option


def test_logs_are_off_unless_a_fleet_turns_them_on() -> None:
    assert LogsOptions().enabled is False
    off = [b for b in FLEET.boxes if not b.options.logs.enabled]
    assert off, "the example enables logs on one box only"
    compose = yaml.safe_load(_files(off[0].id)["compose.yaml"])
    assert not {"loki", "alloy"} & set(compose["services"])
    assert "labels" not in compose["services"]["gateway"]["logging"]["options"]


def test_a_box_refines_the_fleet_defaults_key_by_key() -> None:
    fleet = parse_fleet(
        {
            "fleet": "t",
            "defaults": {"model": "qwen3-1.7b", "runtime": "ollama", "logs": {"enabled": True, "disk_share": 0.1}},
            "boxes": [
                {"id": "a", "hardware": {"cpus": 4, "memory_gib": 16, "disk_gib": 64}},
                {"id": "b", "hardware": {"cpus": 4, "memory_gib": 16, "disk_gib": 64}, "logs": {"max_retention_days": 7}},
            ],
        },
        "fleet.yaml",
    )
    a, b = (box.options.logs for box in fleet.boxes)
    assert (a.enabled, a.disk_share, a.max_retention_days) == (True, 0.1, 31)
    assert (b.enabled, b.disk_share, b.max_retention_days) == (True, 0.1, 7)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 64}, monitoring: false, logs: {enabled: true}}",
            "fleet.yaml: boxes[0].logs.enabled: logs need monitoring: true",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16}, logs: {enabled: true}}",
            "fleet.yaml: boxes[0].hardware.disk_gib: logs.enabled sizes Loki's retention from disk_gib",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 64}, logs: {enabled: true, disk_share: 0.9}}",
            "fleet.yaml: boxes[0].logs.disk_share: Input should be less than or equal to 0.5",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 64}, logs: {enabled: true, retention: 3}}",
            "fleet.yaml: boxes[0].logs.retention:",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 64}, logs: true}",
            "fleet.yaml: boxes[0].logs:",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 4}, logs: {enabled: true, gib_per_day: 1}}",
            "fleet.yaml: boxes[0].logs.disk_share: box a: 0.2 GiB of logs hold less than one day",
        ),
        (
            "{id: a, hardware: {cpus: 4, memory_gib: 16, disk_gib: 3}, logs: {enabled: true, disk_share: 0.5, gib_per_day: 0.1}}",
            "fleet.yaml: boxes[0].hardware.disk_gib: box a: the model cache needs",
        ),
    ],
    ids=["no-monitoring", "no-disk", "share-too-big", "unknown-key", "not-a-mapping", "under-a-day", "cache-and-logs"],
)
def test_bad_logs_settings_are_one_line_errors(tmp_path: Path, box: str, message: str) -> None:
    out = tmp_path / "out"
    result = run_cli("bundle", str(_fleet(tmp_path, box)), "--out", str(out), "--allow-unlocked")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), "nothing may be written for a bad fleet file"


# ------------------------------------------------------------------ retention sized from the disk


@pytest.mark.parametrize(
    ("disk", "options", "expected"),
    [
        (256, LogsOptions(enabled=True), (12.8, 31)),  # capped at max_retention_days
        (128, LogsOptions(enabled=True), (6.4, 25)),
        (64, LogsOptions(enabled=True, disk_share=0.1, gib_per_day=1), (6.4, 6)),
    ],
)
def test_retention_is_the_disk_share_over_the_daily_volume(
    disk: float, options: LogsOptions, expected: tuple[float, int]
) -> None:
    budget = logs_budget(options, disk)
    assert (budget.disk_gib, budget.retention_days) == expected
    limits = loki_config(budget)["limits_config"]
    assert limits["retention_period"] == f"{expected[1] * 24}h"
    assert loki_config(budget)["compactor"]["retention_enabled"] is True


def test_the_bundle_says_how_the_retention_was_sized() -> None:
    files = _files(LOGS_BOX.id)
    header = files["loki/loki.yaml"].splitlines()[0]
    budget = logs_budget(LOGS_BOX.options.logs, LOGS_BOX.hardware.disk_gib or 0)
    assert f"{budget.disk_gib:g} GiB of the disk for logs hold {budget.retention_days} days" in header


# ------------------------------------------------------------------ the compose services


def test_loki_and_alloy_are_hardened_internal_and_unpublished() -> None:
    services = yaml.safe_load(_files(LOGS_BOX.id)["compose.yaml"])["services"]
    for name in ("loki", "alloy"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["networks"] == ["logs"] and "ports" not in service, name
        assert "cap_add" not in service, name
        assert service["deploy"]["resources"]["limits"]["memory"], name
    assert services["loki"]["user"] == "10001:10001"
    alloy = services["alloy"]
    assert alloy["user"] == "0:0" and "CAP_DAC_READ_SEARCH" in alloy["x-hardening-exceptions"]["user"]
    binds = [v for v in alloy["volumes"] if v["type"] == "bind"]
    assert all(v["read_only"] for v in binds)
    assert [v["source"] for v in binds if v["source"].startswith("/")] == ["/var/lib/docker/containers"]
    assert not any("docker.sock" in str(v) or str(v.get("source", "")).startswith(("/run", "/var/run")) for v in alloy["volumes"])


def test_only_the_services_that_need_loki_share_its_network() -> None:
    """Loki is unauthenticated: a container that reaches it reads every log or pushes forged lines (a fake
    "CUDA out of memory" pages ModelServerOutOfMemory). Alloy pushes, Grafana queries, Prometheus scrapes
    Loki and Alloy, Loki's ruler notifies Alertmanager; nothing else shares their network."""
    compose = yaml.safe_load(_files(LOGS_BOX.id)["compose.yaml"])
    services, networks = compose["services"], compose["networks"]
    (logs_network,) = services["loki"]["networks"]
    assert networks[logs_network] == {"driver": "bridge", "internal": True}
    on_it = {name for name, service in services.items() if logs_network in service.get("networks", [])}
    assert on_it == {"loki", "alloy", "grafana", "prometheus", "alertmanager"}
    assert {"open-webui", "vllm", "gateway"} <= set(services) - on_it
    assert services["alloy"]["networks"] == [logs_network]


def test_every_service_tags_its_log_lines_with_its_compose_service() -> None:
    services = yaml.safe_load(_files(LOGS_BOX.id)["compose.yaml"])["services"]
    for name, service in services.items():
        options = service["logging"]["options"]
        assert service["logging"]["driver"] == "json-file", name
        assert options["labels"] == "com.docker.compose.project,com.docker.compose.service", name
        assert options["max-size"] and options["max-file"], name


def test_loki_data_is_given_to_loki_and_alloy_keeps_a_root_owned_volume() -> None:
    compose = yaml.safe_load(_files(LOGS_BOX.id)["compose.yaml"])
    chowned = compose["services"]["volume-init"]["entrypoint"]
    assert "/volumes/loki-data" in chowned and "/volumes/alloy-data" not in chowned
    assert {"loki-data", "alloy-data"} <= set(compose["volumes"])


def test_the_review_of_the_logs_box_is_clean(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    assert run_cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out)).returncode == 0
    result = run_cli("review", str(out / LOGS_BOX.id))
    assert result.returncode == 0, result.stdout[-3000:]
    if shutil.which("promtool") or REQUIRE_TOOLS:
        assert "clean: zero findings" in result.stdout + result.stderr
    else:  # promtool is Debian's, optional: the review says what it could not run (README)
        assert "INCOMPLETE: zero findings, but not run: promtool" in result.stdout


# ------------------------------------------------------------------ Alloy: a structural read of its syntax

TOKEN = re.compile(
    r'\s*(?:(?P<comment>//[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<number>\d+(?:\.\d+)?)'
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<punct>[{}\[\](),=]))"
)
# The components and pipeline stages of Alloy v1.10 the bundle uses (Alloy's component reference).
COMPONENTS = {
    "local.file_match": {"targets"},
    "loki.source.file": set(),
    "loki.process": {"receiver"},
    "loki.write": {"receiver"},
}
BLOCKS = {"stage.json", "stage.labels", "stage.match", "stage.timestamp", "stage.output", "stage.label_drop", "endpoint"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        assert match and match.end() > pos, f"cannot read Alloy syntax at {text[pos : pos + 40]!r}"
        pos = match.end()
        kind = match.lastgroup
        if kind and kind != "comment":
            out.append((kind, match.group(kind)))
    return out


def parse_alloy(
    text: str, components: dict[str, set[str]] = COMPONENTS, blocks: set[str] = BLOCKS
) -> tuple[dict[str, str], list[str]]:
    """Components declared (`name "label"` -> name) and references used (`a.b.label.export`)."""
    tokens = _tokens(text)
    declared: dict[str, str] = {}
    references: list[str] = []
    depth, i = 0, 0
    while i < len(tokens):
        kind, value = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and nxt[0] == "string" and tokens[i + 2] == ("punct", "{"):
            assert depth == 0 and value in components, f"unknown component {value}"
            declared[f"{value}.{nxt[1].strip(chr(34))}"] = value
            depth, i = depth + 1, i + 3
            continue
        if kind == "ident" and nxt == ("punct", "{"):
            assert depth > 0 and value in blocks, f"unknown block {value}"
            depth, i = depth + 1, i + 2
            continue
        if kind == "ident" and nxt == ("punct", "="):
            assert tokens[i + 2][0] in ("string", "number", "ident", "punct"), value
            i += 2
            continue
        if kind == "ident" and value not in ("true", "false", "null"):
            references.append(value)
        if value == "{" and kind == "punct":
            depth += 1
        if value == "}" and kind == "punct":
            depth -= 1
            assert depth >= 0, "unbalanced }"
        i += 1
    assert depth == 0, "unbalanced {"
    return declared, references


def check_alloy(text: str, components: dict[str, set[str]] = COMPONENTS, blocks: set[str] = BLOCKS) -> dict[str, str]:
    """Parse, then resolve every reference to a declared component's export."""
    declared, references = parse_alloy(text, components, blocks)
    for ref in references:
        component, export = ref.rsplit(".", 1)
        assert component in declared, f"{ref} names no declared component"
        assert export in components[declared[component]], f"{ref}: {declared[component]} exports no {export}"
    return declared


def test_the_alloy_pipeline_reads_the_json_logs_and_writes_to_loki() -> None:
    text = _files(LOGS_BOX.id)["alloy/config.alloy"]
    assert set(check_alloy(text).values()) == set(COMPONENTS)
    assert '"__path__" = "/var/lib/docker/containers/*/*-json.log"' in text
    assert 'service = "attrs.\\"com.docker.compose.service\\""' in text
    assert 'url = "http://loki:3100/loki/api/v1/push"' in text
    assert f'box   = "{LOGS_BOX.id}"' in text


def test_the_alloy_reader_rejects_what_alloy_would() -> None:
    good = alloy_config("b", "f")
    check_alloy(good)
    for broken in (
        good.replace("loki.write.box.receiver", "loki.write.nothing.receiver"),  # dangling reference
        good.replace("local.file_match.containers.targets", "local.file_match.containers.receiver"),  # no such export
        good.rstrip().removesuffix("}"),  # unbalanced
        good.replace("stage.json", "stage.jsn"),  # unknown stage
        good.replace('url = "http', "url = http"),  # unterminated string
    ):
        with pytest.raises(AssertionError):
            check_alloy(broken)


# ------------------------------------------------------------------ Loki: config keys and rules


def _key_paths(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return set()
    paths = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if not (isinstance(value, list)):
            paths |= _key_paths(value, path + ".")
        else:
            for item in value:
                paths |= _key_paths(item, path + "[].")
    return paths


def test_every_loki_config_key_is_documented() -> None:
    documented = {
        line.strip()
        for line in (ROOT / "tests" / "data" / "loki_config_keys.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    config = yaml.safe_load(_files(LOGS_BOX.id)["loki/loki.yaml"])
    assert _key_paths(config) <= documented, sorted(_key_paths(config) - documented)


def test_loki_rules_are_log_queries_on_the_model_server() -> None:
    rules = yaml.safe_load(_files(LOGS_BOX.id)["loki/rules/fake/slm-logs.rules.yml"])["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["ModelServerOutOfMemory", "ModelServerCudaError"]
    for rule in rules:
        assert re.fullmatch(
            r'sum by \(box, service\) \(count_over_time\(\{service="vllm"\} \|~ `[^`]+` \[5m\]\)\) > 0', rule["expr"]
        )
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
    oom = re.compile(OOM_PATTERN)
    assert oom.search("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert oom.search(
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc failed: out of memory"
    )
    assert not oom.search("INFO: 10.0.0.2 - POST /v1/chat/completions 200 OK")


def test_runbooks_cover_the_log_alerts() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text().lower()
    names = [r["alert"] for r in loki_rule_groups(["vllm"])[0]["rules"]]
    names += [r["alert"] for r in volume_rule_groups(logs_budget(LogsOptions(), 100))[0]["rules"]]
    names += [r["alert"] for edge in (True, False) for r in pipeline_rule_groups("loki", "alloy", edge=edge)[0]["rules"]]
    for name in names:
        assert f"## {name.lower()}" in runbooks


@pytest.mark.tools
def test_the_size_guard_fires_above_the_daily_budget_and_not_below(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    budget = logs_budget(LogsOptions(enabled=True, gib_per_day=1), 100)
    (tmp_path / "rules.yml").write_text(dump({"groups": volume_rule_groups(budget)}))
    gib_a_minute = 1024**3 // 1440
    cases = {
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'loki_distributor_bytes_received_total{tenant="fake"}', "values": f"0+{gib_a_minute * 2}x1600"}
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1540m",
                        "alertname": "LogVolumeAboveBudget",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": volume_rule_groups(budget)[0]["rules"][0]["annotations"],
                            }
                        ],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'loki_distributor_bytes_received_total{tenant="fake"}', "values": f"0+{gib_a_minute // 2}x1600"}
                ],
                "alert_rule_test": [{"eval_time": "1540m", "alertname": "LogVolumeAboveBudget", "exp_alerts": []}],
            },
        ],
        "rule_files": ["rules.yml"],
    }
    (tmp_path / "tests.yml").write_text(dump(cases))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ Grafana


def test_grafana_gets_a_loki_datasource_and_logs_panels() -> None:
    files = _files(LOGS_BOX.id)
    source = yaml.safe_load(files["grafana/provisioning/datasources/loki.yaml"])["datasources"][0]
    assert (source["uid"], source["type"], source["url"]) == ("loki", "loki", "http://loki:3100")
    for board, selector in (("host", '{service=~".+"}'), ("serving", '{service="vllm"}')):
        import json

        panels = json.loads(files[f"grafana/provisioning/dashboards/{board}.json"])["panels"]
        logs = [p for p in panels if p["type"] == "logs"]
        assert len(logs) == 1, board
        assert logs[0]["datasource"] == {"type": "loki", "uid": "loki"}
        assert logs[0]["targets"][0]["expr"] == selector
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{board}: duplicate panel ids"
    assert "grafana/provisioning/datasources/loki.yaml" not in _files("store-0002")


# ------------------------------------------------------------------ Kubernetes: the opt-in logs release

K8S_COMPONENTS = {
    "discovery.kubernetes": {"targets"},
    "discovery.relabel": {"output"},
    "loki.source.kubernetes": set(),
    "loki.write": {"receiver"},
}


@pytest.fixture(scope="module")
def dev_stack() -> Any:
    from slm_deploy.preview import run_preview

    return run_preview("dev", ROOT)


def _release(result: Any, chart: str) -> Any:
    return next(r for r in result.resources if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == chart)


def test_logs_are_off_in_a_stack_unless_asked(tmp_path: Path) -> None:
    from slm_deploy.preview import run_preview

    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    data["config"].pop("slm-deploy:logs")
    (tmp_path / "Pulumi.nologs.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    result = run_preview("nologs", tmp_path)
    charts = {r.inputs.get("chart") for r in result.resources if r.type == "kubernetes:helm.sh/v3:Release"}
    assert "kube-prometheus-stack" in charts and not {"loki", "alloy"} & charts


def test_a_stack_with_logs_but_no_monitoring_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    data["config"]["slm-deploy:monitoring"] = {"enabled": False}
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    result = run_cli("preview", "bad", "--project", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Pulumi.bad.yaml: slm-deploy: logs: enabled needs monitoring (Grafana shows the logs, Prometheus watches Loki)"
    ), result.stderr


def test_the_releases_are_pinned_locked_and_wait_for_monitoring(dev_stack: Any) -> None:
    from slm_deploy.catalog import load_catalog
    from slm_deploy.supply.lock import locked_catalog

    catalog, locked = load_catalog(), locked_catalog(ROOT)
    monitoring = _release(dev_stack, "kube-prometheus-stack")
    for chart, image_path in (("loki", ("loki", "image")), ("alloy", ("image",))):
        release = _release(dev_stack, chart)
        assert release.inputs["version"] == catalog.charts[chart].version
        image = release.inputs["values"]
        for key in image_path:
            image = image[key]
        assert image["tag"] == catalog.images[chart].tag and image["digest"] == locked.images[chart].digest
        assert image["digest"], "the chart's image is locked through its values"
    assert monitoring.urn in _release(dev_stack, "loki").dependencies


def test_loki_values_pass_the_charts_own_validation(dev_stack: Any) -> None:
    """production/helm/loki/templates/validate.yaml at helm-loki-6.46.0, for the values we set."""
    values = _release(dev_stack, "loki").inputs["values"]
    single = int(values["singleBinary"]["replicas"])
    scalable = sum(int(values[k]["replicas"]) for k in ("read", "write", "backend"))
    assert values["loki"]["storage"]["type"] == "filesystem" and single == 1 and scalable == 0
    assert values["loki"]["schemaConfig"]["configs"], "the chart refuses an empty schema_config"
    assert not (values.get("test", {}).get("enabled", True) and not values["lokiCanary"]["enabled"])


def test_alloy_reads_pods_through_the_api_with_a_namespaced_role(dev_stack: Any) -> None:
    values = _release(dev_stack, "alloy").inputs["values"]
    assert values["controller"]["type"] == "deployment" and values["rbac"]["create"] is False
    assert values["alloy"]["mounts"]["varlog"] is False and values["alloy"]["mounts"]["dockercontainers"] is False
    context = values["alloy"]["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"] and context["capabilities"]["drop"] == ["ALL"]
    roles = [r.inputs for r in dev_stack.resources if r.type.endswith(":Role")]
    assert [(r["metadata"]["namespace"], r["rules"]) for r in roles] == [
        ("slm", [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}])
    ]
    config = values["alloy"]["configMap"]["content"]
    assert set(check_alloy(config, K8S_COMPONENTS, {"namespaces", "rule", "endpoint"}).values()) == set(K8S_COMPONENTS)
    assert 'names = ["slm"]' in config and "http://loki.logs.svc.cluster.local:3100/loki/api/v1/push" in config
    namespace = next(
        r.inputs for r in dev_stack.resources if r.type.endswith(":Namespace") and r.inputs["metadata"]["name"] == "logs"
    )
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_simulator_checks_the_logs_releases(dev_stack: Any) -> None:
    import copy
    from dataclasses import replace

    from slm_deploy.simulator import Stack, from_preview, simulate

    stack = from_preview(dev_stack)
    assert simulate(stack) == []
    broken = []
    for r in stack.resources:
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "loki":
            r = replace(r, inputs=copy.deepcopy(r.inputs))
            r.inputs["values"]["read"]["replicas"] = 3
            r.inputs["values"]["singleBinary"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
            r.inputs["values"]["singleBinary"]["nodeSelector"] = {"pool": "nowhere"}
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "alloy":
            r = replace(r, inputs=copy.deepcopy(r.inputs))
            del r.inputs["values"]["image"]["digest"]
        broken.append(r)
    findings = simulate(Stack(broken))
    assert any(f.rule == "SLM-SIM-015" and "grafana/alloy" in f.message for f in findings), findings
    assert any(f.rule == "SLM-SIM-012" and "read.replicas" in f.message for f in findings), findings
    assert any("single-binary" in f.resource + f.message for f in findings), findings


def test_grafana_on_kubernetes_gets_the_loki_datasource_and_the_size_guard(dev_stack: Any) -> None:
    source = next(r.inputs for r in dev_stack.resources if r.inputs.get("metadata", {}).get("name") == "slm-loki-datasource")
    assert source["metadata"]["labels"]["grafana_datasource"] == "1"
    assert "url: http://loki.logs.svc.cluster.local:3100" in source["data"]["loki.yaml"]
    rule = next(r.inputs for r in dev_stack.resources if r.inputs.get("kind") == "PrometheusRule")
    assert "LogVolumeAboveBudget" in [a.get("alert") for g in rule["spec"]["groups"] for a in g["rules"]]


def test_loki_on_kubernetes_runs_the_log_alerts_into_the_monitoring_alertmanager(dev_stack: Any) -> None:
    from slm_deploy.stacks.k8s.monitoring import NAMESPACE as MONITORING

    release = _release(dev_stack, "loki")
    values = release.inputs["values"]
    rules = next(r for r in dev_stack.resources if r.inputs.get("metadata", {}).get("name") == "slm-loki-rules")
    assert rules.urn in release.dependencies
    groups = yaml.safe_load(rules.inputs["data"]["slm-logs.rules.yml"])["groups"]
    assert [r["alert"] for r in groups[0]["rules"]] == ["ModelServerOutOfMemory", "ModelServerCudaError"]
    assert all('{service="vllm"}' in r["expr"] and "by (pod, service)" in r["expr"] for r in groups[0]["rules"])
    mount = values["singleBinary"]["extraVolumeMounts"][0]
    assert mount["mountPath"] == "/etc/loki/rules/fake" and mount["readOnly"] is True
    assert values["singleBinary"]["extraVolumes"][0]["configMap"]["name"] == "slm-loki-rules"
    ruler = values["loki"]["rulerConfig"]
    assert ruler["storage"] == {"type": "local", "local": {"directory": "/etc/loki/rules"}}
    assert ruler["alertmanager_url"] == f"http://kube-prometheus-stack-alertmanager.{MONITORING}.svc:9093"
    documented = set((ROOT / "tests" / "data" / "loki_config_keys.txt").read_text().split())
    for section, key in (("rulerConfig", "ruler"), ("limits_config", "limits_config"), ("compactor", "compactor")):
        assert {f"{key}.{p}" for p in _key_paths(values["loki"][section])} <= documented, section


def test_a_model_server_set_becomes_one_selector() -> None:
    rules = loki_rule_groups(["llamacpp", "vllm"], where="pod")[0]["rules"]
    assert rules[0]["expr"].startswith('sum by (pod, service) (count_over_time({service=~"llamacpp|vllm"} |~ `')
    assert "{{ $labels.pod }}" in rules[0]["annotations"]["summary"]


# ------------------------------------------------------------------ log collection that stops (review item 2)


def _promtool_cases(tmp_path: Path, groups: list[dict[str, Any]], tests: list[dict[str, Any]]) -> None:
    promtool = need_binary("promtool")
    (tmp_path / "rules.yml").write_text(dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(dump({"rule_files": ["rules.yml"], "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _case(
    groups: list[dict[str, Any]], series: dict[str, str], alert: str, fires: list[dict[str, str]], at: str = "40m"
) -> dict[str, Any]:
    """A promtool case: `fires` are the labels of each alert expected at `at` (the rule's own annotations)."""
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == alert)
    expected = []
    for labels in fires:
        annotations = {k: v.replace("{{ $labels.job }}", labels.get("job", "")) for k, v in rule["annotations"].items()}
        expected.append({"exp_labels": labels, "exp_annotations": annotations})
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def _edge_jobs() -> dict[str, str]:
    """The job names the bundle's Prometheus gives Loki's and Alloy's targets (read from its scrape config)."""
    config = yaml.safe_load(_files(LOGS_BOX.id)["prometheus/prometheus.yml"])
    return {
        job["static_configs"][0]["targets"][0].split(":")[0]: job["job_name"]
        for job in config["scrape_configs"]
        if job["static_configs"][0]["targets"][0].split(":")[0] in ("loki", "alloy")
    }


@pytest.mark.tools
def test_edge_alerts_when_loki_or_alloy_is_down_or_alloy_tails_nothing(tmp_path: Path) -> None:
    groups = yaml.safe_load(_files(LOGS_BOX.id)["prometheus/rules/slm-logs.rules.yml"])["groups"]
    jobs = _edge_jobs()
    assert set(jobs) == {"loki", "alloy"}
    loki, alloy = (f'up{{job="{jobs[name]}", slm_role="logs"}}' for name in ("loki", "alloy"))
    down = {"severity": "warning", "slm_role": "logs"}
    tailing = f'loki_source_file_files_active_total{{component_id="loki.source.file.containers", job="{jobs["alloy"]}"}}'
    _promtool_cases(
        tmp_path,
        groups,
        [
            _case(groups, {loki: "0x40", alloy: "1x40"}, "LogCollectorDown", [{**down, "job": jobs["loki"]}]),
            _case(groups, {loki: "1x40", alloy: "0x40"}, "LogCollectorDown", [{**down, "job": jobs["alloy"]}]),
            _case(groups, {loki: "1x40", alloy: "1x40"}, "LogCollectorDown", []),
            # down for 10 minutes (a restart, an upgrade): quiet; `for: 15m`
            _case(groups, {loki: "1x29 0x10", alloy: "1x40"}, "LogCollectorDown", []),
            _case(groups, {tailing: "0x40"}, "LogTailingNothing", [{"severity": "warning"}]),
            _case(groups, {tailing: "12x40"}, "LogTailingNothing", []),
        ],
    )
    for rule in groups[1]["rules"]:
        assert rule["for"] == "15m" and {"summary", "description", "runbook_url"} <= set(rule["annotations"])


@pytest.mark.tools
def test_kubernetes_scrapes_alloy_and_alerts_when_log_collection_stops(dev_stack: Any, tmp_path: Path) -> None:
    from slm_deploy.catalog.platform import load_chart_profiles

    assert _release(dev_stack, "alloy").inputs["values"]["serviceMonitor"] == {"enabled": True}
    assert _release(dev_stack, "loki").inputs["values"]["monitoring"]["serviceMonitor"]["enabled"] is True
    profiles = load_chart_profiles()
    # The job labels the charts' ServiceMonitors give (catalog chart_profiles.yaml, read in each chart).
    loki_job = profiles[("loki", "6.46.0")].components[0].metrics_job
    alloy_job = profiles[("alloy", "1.2.1")].components[0].metrics_job
    assert (loki_job, alloy_job) == ("logs/loki", "alloy")
    rule = next(r.inputs for r in dev_stack.resources if r.inputs.get("kind") == "PrometheusRule")
    groups = [g for g in rule["spec"]["groups"] if g["name"] == "slm-logs-pipeline"]
    assert [r["alert"] for r in groups[0]["rules"]] == ["LogCollectorDown", "LogCollectorTargetMissing", "LogsNotReceived"]
    loki, alloy = f'up{{job="{loki_job}"}}', f'up{{job="{alloy_job}"}}'
    lines = f'loki_distributor_lines_received_total{{tenant="fake", job="{loki_job}"}}'
    _promtool_cases(
        tmp_path,
        groups,
        [
            _case(groups, {loki: "1x40", alloy: "0x40"}, "LogCollectorDown", [{"severity": "warning", "job": alloy_job}]),
            _case(groups, {loki: "1x40", alloy: "1x40"}, "LogCollectorDown", []),
            _case(groups, {loki: "1x40"}, "LogCollectorTargetMissing", [{"severity": "warning", "job": alloy_job}]),
            _case(groups, {loki: "1x40", alloy: "1x40"}, "LogCollectorTargetMissing", []),
            _case(groups, {loki: "1x80", lines: "100+10x20 300x60"}, "LogsNotReceived", [{"severity": "warning"}], at="80m"),
            _case(groups, {loki: "1x80"}, "LogsNotReceived", [{"severity": "warning"}], at="80m"),  # never a line
            _case(groups, {loki: "1x80", lines: "100+10x80"}, "LogsNotReceived", [], at="80m"),
            _case(groups, {loki: "0x80"}, "LogsNotReceived", [], at="80m"),  # Loki down: LogCollectorDown says so
        ],
    )


def test_loki_and_alloy_on_kubernetes_take_traffic_only_from_who_needs_it(dev_stack: Any) -> None:
    """Ingress-only policies (egress needs the API server, whose address AKS does not fix): Loki's port
    from the Alloy pods and the monitoring namespace (Grafana queries, Prometheus scrapes); Alloy's from
    the monitoring namespace. The selectors are the charts' own pod labels for releases named after
    the charts: loki 6.46.0 single-binary/statefulset.yaml (loki.singleBinarySelectorLabels), alloy
    1.2.1 controllers/_pod.yaml (alloy.selectorLabels)."""
    loki_pods = {
        "app.kubernetes.io/name": "loki",
        "app.kubernetes.io/instance": "loki",
        "app.kubernetes.io/component": "single-binary",
    }
    alloy_pods = {"app.kubernetes.io/name": "alloy", "app.kubernetes.io/instance": "alloy"}
    assert {_release(dev_stack, chart).inputs["name"] for chart in ("loki", "alloy")} == {"loki", "alloy"}
    policies = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in dev_stack.resources
        if r.type.endswith(":NetworkPolicy") and r.inputs["metadata"].get("namespace") == "logs"
    }
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    loki = policies["loki-ingress"]
    assert loki["podSelector"] == {"matchLabels": loki_pods} and loki["policyTypes"] == ["Ingress"]
    assert loki["ingress"][0] == {
        "from": [{"podSelector": {"matchLabels": alloy_pods}}, monitoring],
        "ports": [{"port": 3100, "protocol": "TCP"}],
    }
    assert loki["ingress"][1] == {"from": [{"podSelector": {"matchLabels": loki_pods}}]}  # its own ring (memberlist)
    alloy = policies["alloy-ingress"]
    assert alloy["podSelector"] == {"matchLabels": alloy_pods} and alloy["policyTypes"] == ["Ingress"]
    assert alloy["ingress"] == [{"from": [monitoring], "ports": [{"port": 12345, "protocol": "TCP"}]}]
    assert _release(dev_stack, "loki").inputs["values"]["loki"]["server"]["http_listen_port"] == 3100
    assert _release(dev_stack, "alloy").inputs["values"]["alloy"]["listenPort"] == 12345


def test_turning_logs_off_keeps_the_stored_logs(dev_stack: Any) -> None:
    """The chart deletes the PVC with the StatefulSet unless enableStatefulSetAutoDeletePVC is false
    (helm-loki-6.46.0 values.yaml singleBinary.persistence; single-binary/statefulset.yaml writes
    persistentVolumeClaimRetentionPolicy whenDeleted: Delete only when it is true)."""
    persistence = _release(dev_stack, "loki").inputs["values"]["singleBinary"]["persistence"]
    assert persistence["enableStatefulSetAutoDeletePVC"] is False
    # Logs off removes the component: deleting the `logs` namespace would delete the PVC with it.
    namespace = next(r for r in dev_stack.resources if r.type.endswith(":Namespace") and r.inputs["metadata"]["name"] == "logs")
    assert namespace.retain_on_delete is True
    assert persistence.get("enableStatefulSetRecreationForSizeChange", False) is False  # an unpinned kubectl image
    day2 = (ROOT / "docs" / "day2.md").read_text()
    assert "kubectl -n logs delete statefulset loki --cascade=orphan" in day2


SIDECARS = {"volume-init", "model-fetch", "gateway", "open-webui", "prometheus", "grafana", "alertmanager", "node-exporter"}
SIDECARS |= {"dcgm-exporter", "loki", "alloy"}


@pytest.mark.parametrize("box_id", [b.id for b in FLEET.boxes])
def test_every_runtime_gets_a_model_server_logs_panel(box_id: str) -> None:
    """With logs on, some board shows the model server's own lines, whatever the runtime (only vLLM
    has a Serving board; the others get the panel on the Edge host board)."""
    import json
    from dataclasses import replace

    from slm_deploy.fleet import LogsOptions as Options

    box = next(b for b in FLEET.boxes if b.id == box_id)
    if not box.options.monitoring or not box.hardware.disk_gib:
        pytest.skip(f"{box_id}: logs need monitoring and disk_gib")
    options = box.options.model_copy(update={"logs": Options(enabled=True)})
    files = {k: v.decode() for k, v in build_box(replace(box, options=options), FLEET).files.items()}
    (server,) = set(yaml.safe_load(files["compose.yaml"])["services"]) - SIDECARS
    selectors = {
        target["expr"]
        for name, text in files.items()
        if name.startswith("grafana/provisioning/dashboards/") and name.endswith(".json")
        for panel in json.loads(text)["panels"]
        if panel["type"] == "logs"
        for target in panel["targets"]
    }
    assert f'{{service="{server}"}}' in selectors, (box_id, selectors)


@pytest.mark.parametrize(
    ("runtimes", "selector"), [(["llamacpp"], '{service="llamacpp"}'), (["ollama", "vllm"], '{service="ollama"}')]
)
def test_kubernetes_boards_show_the_lines_of_servers_without_a_serving_board(runtimes: list[str], selector: str) -> None:
    from slm_deploy.observability.dashboards import dashboards

    boards = dashboards(runtimes, gpus=False, edge=False, logs=True)
    exprs = {t["expr"] for b in boards.values() for p in b["panels"] if p["type"] == "logs" for t in p["targets"]}
    assert selector in exprs
    assert not any(p["type"] == "logs" for b in dashboards(runtimes, gpus=False, edge=False).values() for p in b["panels"])


@pytest.mark.parametrize("gib_per_day", [0.25, 1.0, 5.0])
def test_loki_ingestion_rate_is_derived_from_the_daily_budget(gib_per_day: float) -> None:
    """The sustained rate lets the whole day's budget arrive within about an hour, not 4 MB/s (about 337
    GiB a day against a 0.25 GiB budget); the burst still takes Alloy's 1 MiB batches and a start-up."""
    budget = logs_budget(LogsOptions(enabled=True, gib_per_day=gib_per_day), 1000)
    limits = loki_config(budget)["limits_config"]
    a_day_at_the_rate_gib = limits["ingestion_rate_mb"] * 86400 / 1024
    assert 24 * gib_per_day <= a_day_at_the_rate_gib <= 26 * gib_per_day, limits["ingestion_rate_mb"]
    assert limits["ingestion_burst_size_mb"] >= 4
    rendered = yaml.safe_load(_files(LOGS_BOX.id)["loki/loki.yaml"])["limits_config"]
    assert (
        rendered["ingestion_rate_mb"]
        == loki_config(logs_budget(LOGS_BOX.options.logs, 256))["limits_config"]["ingestion_rate_mb"]
    )
    assert rendered["ingestion_rate_mb"] < 0.1  # store-0001: 0.25 GiB a day
    day2 = " ".join((ROOT / "docs" / "day2.md").read_text().split())
    assert "an alert, not a cap" in day2


def test_an_out_of_memory_line_warns_and_a_cuda_error_pages() -> None:
    """The OOM pattern is broad (llama.cpp logs allocation failures it recovers from): a warning; the
    outage itself pages through ModelServerDown and the gateway's error ratio. A CUDA error leaves the
    CUDA context unusable, so it stays critical."""
    rules = {r["alert"]: r for r in loki_rule_groups(["llamacpp"])[0]["rules"]}
    assert rules["ModelServerOutOfMemory"]["labels"] == {"severity": "warning"}
    assert rules["ModelServerCudaError"]["labels"] == {"severity": "critical"}
    runbooks = " ".join((ROOT / "docs" / "runbooks.md").read_text().split())
    assert "recovers from" in runbooks


def test_the_bundle_names_what_log_collection_cannot_do() -> None:
    """Rootless and snap Docker fail at `compose up`, userns-remap leaves Alloy tailing nothing (the
    alert catches it), and the bind shows Alloy every container's environment (config.v2.json)."""
    files = _files(LOGS_BOX.id)
    readme = " ".join(files["README.md"].split())
    for words in ("Rootless Docker", "the snap", "bind source path does not exist", "`userns-remap`", "LogTailingNothing"):
        assert words in readme, words
    alloy = yaml.safe_load(files["compose.yaml"])["services"]["alloy"]
    assert "config.v2.json" in alloy["x-hardening-exceptions"]["volumes"]
    assert "environment" in alloy["x-hardening-exceptions"]["volumes"]
    day2 = " ".join((ROOT / "docs" / "day2.md").read_text().split())
    assert "Loki stores those lines twice" in day2
