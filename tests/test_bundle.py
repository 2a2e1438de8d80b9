"""Edge bundles from examples/fleet.yaml: validated by the real tools, hardened, reproducible."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.bundle import build_box
from slm_deploy.bundle.writer import build_fleet, tar_bytes, write_box
from slm_deploy.catalog import load_catalog
from slm_deploy.fleet import Fleet, load_fleet, parse_fleet
from tests.conftest import ROOT, compose_binary, hadolint_binary, need_binary, run_cli

FLEET_PATH = ROOT / "examples" / "fleet.yaml"
FLEET = load_fleet(FLEET_PATH)
BUNDLES = {b.box.id: b for b in build_fleet(FLEET, FLEET.boxes)}


def compose_of(box_id: str) -> dict[str, Any]:
    return yaml.safe_load(BUNDLES[box_id].files["compose.yaml"])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    for bundle in BUNDLES.values():
        write_box(out, bundle)
    return out


def test_example_fleet_is_diverse() -> None:
    runtimes = {(b.plans[0].runtime, b.plans[0].resources.gpu_count > 0) for b in BUNDLES.values()}
    assert {("vllm", True), ("ollama", True), ("ollama", False), ("llamacpp", False)} <= runtimes
    assert any(b.box.options.offline for b in BUNDLES.values())
    assert any(len(b.plans) == 2 for b in BUNDLES.values())
    assert any(b.box.hardware.cpu_arch.value == "arm64" and not b.box.hardware.gpu for b in BUNDLES.values())
    assert len(BUNDLES) >= 6


@pytest.mark.tools
def test_every_bundle_passes_docker_compose_config(written: Path) -> None:
    binary = compose_binary()
    for box_id in BUNDLES:
        result = subprocess.run(
            [binary, "--profile", "*", "config", "-q"],
            cwd=written / box_id,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{box_id}: {result.stderr}"


@pytest.mark.tools
def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator can fail: a misspelled key in a generated file is caught."""
    binary = compose_binary()
    broken = compose_of("store-0001")
    broken["services"]["gateway"]["read_onyl"] = True
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = subprocess.run([binary, "--profile", "*", "config", "-q"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "read_onyl" in result.stderr


def _dockerfiles() -> dict[str, str]:
    """The example's Dockerfiles plus an offline box of every runtime, so each template is linted."""
    synthetic = yaml.safe_load(FLEET_PATH.read_text())
    for box in synthetic["boxes"]:
        box["offline"] = True
    fleet = parse_fleet(synthetic, "fleet.yaml")
    found = {f"{b.box.id}/Dockerfile": b.files["Dockerfile"].decode() for b in build_fleet(fleet, fleet.boxes)}
    assert {"vllm", "ollama", "llamacpp"} <= {p.runtime for b in build_fleet(fleet, fleet.boxes) for p in b.plans}
    return found


@pytest.mark.tools
def test_every_dockerfile_passes_hadolint_without_a_warning(tmp_path: Path) -> None:
    binary = hadolint_binary()
    for name, text in _dockerfiles().items():
        path = tmp_path / name.replace("/", "_")
        path.write_text(text)
        result = subprocess.run(
            [binary, "--failure-threshold", "style", "-f", "json", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], f"{name}: {result.stdout}"


def test_offline_dockerfile_is_pinned_non_root_with_healthcheck() -> None:
    text = BUNDLES["clinic-0007"].files["Dockerfile"].decode()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(":" in ref and not ref.endswith(":latest") for ref in froms)
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users[-1] == "USER 10001:10001"
    assert "HEALTHCHECK" in text and "ADD " not in text
    compose = compose_of("clinic-0007")
    assert "model-fetch" not in compose["services"]
    assert compose["services"]["llamacpp"]["pull_policy"] == "never"


@pytest.mark.tools
def test_prometheus_config_and_rules_pass_promtool(written: Path) -> None:
    promtool = need_binary("promtool")
    for box_id, bundle in BUNDLES.items():
        if "prometheus/prometheus.yml" not in bundle.files:
            continue
        config = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(written / box_id / "prometheus/prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert config.returncode == 0, config.stdout + config.stderr
        rules = subprocess.run(
            [promtool, "check", "rules", str(written / box_id / "prometheus/rules/slm.rules.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert rules.returncode == 0, rules.stdout + rules.stderr


LONG_RUNNING_EXEMPT = {"volume-init", "model-fetch"}


@pytest.mark.parametrize("box_id", sorted(BUNDLES))
def test_every_service_is_hardened(box_id: str) -> None:
    services = compose_of(box_id)["services"]
    for name, svc in services.items():
        exceptions = svc.get("x-hardening-exceptions", {})
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
        assert svc["user"] != "0:0" or "user" in exceptions, name
        assert svc["read_only"] is True or "read_only" in exceptions, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert not svc.get("privileged") and svc.get("network_mode") in (None, "none"), name
        assert not {"pid", "ipc", "uts"} & set(svc), name
        for volume in svc.get("volumes", []):
            assert "docker.sock" not in volume["source"], name
            if volume["type"] == "bind" and not volume["source"].startswith("./"):
                assert volume.get("read_only") is True and "volumes" in exceptions, name
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"] and limits["pids"] > 0, name
        assert svc["logging"]["options"]["max-size"], name
        if name in LONG_RUNNING_EXEMPT:
            assert svc["restart"] == "no"
        else:
            assert svc["restart"] == "unless-stopped" and svc["healthcheck"]["test"][0] == "CMD", name
        assert "ports" not in svc or name == "gateway", name


@pytest.mark.parametrize("box_id", sorted(BUNDLES))
def test_only_the_gateway_publishes_one_port_on_an_explicit_interface(box_id: str) -> None:
    compose = compose_of(box_id)
    published = [(name, p) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert len(published) == 1
    name, port = published[0]
    assert name == "gateway" and port["host_ip"] and port["published"] == "8443"
    assert compose["networks"]["internal"]["internal"] is True
    # Loki and Alloy sit on their own internal network, which only their peers join (tests/test_logs.py).
    logs = ["logs"] if "loki" in compose["services"] else []
    if logs:
        assert compose["networks"]["logs"]["internal"] is True
    for svc_name, svc in compose["services"].items():
        if svc_name == "alertmanager":  # sends to the fleet file's receiver, outside the box
            assert svc["networks"] == ["internal", "alerts", *logs], svc_name
        elif svc_name in ("loki", "alloy"):
            assert svc["networks"] == ["logs"], svc_name
        elif svc_name in ("grafana", "prometheus"):
            assert svc["networks"] == ["internal", *logs], svc_name
        elif svc_name not in ("gateway", "model-fetch", "volume-init"):
            assert svc["networks"] == ["internal"], svc_name


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _all_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _all_strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("box_id", sorted(BUNDLES))
def test_secrets_reach_containers_only_as_compose_secrets(box_id: str) -> None:
    bundle = BUNDLES[box_id]
    compose = compose_of(box_id)
    assert all(v["file"].startswith("./secrets/") for v in compose["secrets"].values())
    assert not any(path.startswith("secrets/") for path in bundle.files)
    for svc in compose["services"].values():
        for key in svc.get("environment", {}):
            assert not any(word in key for word in ("TOKEN", "PASSWORD", "API_KEY", "SECRET")) or key.endswith(
                ("__FILE", "_PATH")
            ), key
    text = b"\n".join(bundle.files.values()).decode()
    assert "hf_" not in " ".join(w for w in text.split() if w.startswith("hf_") and len(w) > 20)
    gateway = compose["services"]["gateway"]
    assert set(gateway["secrets"]) == {"api_key", "tls_cert", "tls_key"}


def test_runtime_is_sized_by_the_plan() -> None:
    vllm = BUNDLES["store-0001"]
    plan = vllm.plans[0]
    svc = compose_of("store-0001")["services"]["vllm"]
    assert svc["command"][1:-4] == list(plan.runtime_args[1:])
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert svc["healthcheck"]["start_period"] == f"{plan.resources.startup_budget_seconds}s"
    assert svc["depends_on"]["model-fetch"]["condition"] == "service_completed_successfully"
    assert svc["shm_size"] == "2048m"
    ollama = compose_of("factory-0009")["services"]["ollama"]
    assert ollama["environment"]["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert ollama["environment"]["OLLAMA_NUM_PARALLEL"] == "4"
    assert "OLLAMA_KV_CACHE_TYPE" in ollama["environment"]
    modelfile = BUNDLES["factory-0009"].files["ollama/Modelfile.qwen3-4b"].decode()
    assert "FROM qwen3:4b-q8_0" in modelfile and "PARAMETER num_ctx 8192" in modelfile
    llama = compose_of("clinic-0007")["services"]["llamacpp"]
    assert llama["command"][llama["command"].index("-np") + 1] == "2"
    cpu_only = compose_of("kiosk-0003")["services"]["ollama"]
    assert "devices" not in cpu_only["deploy"]["resources"]["reservations"]


def test_monitoring_services_follow_the_hardware() -> None:
    assert "dcgm-exporter" in compose_of("store-0002")["services"]
    assert "dcgm-exporter" not in compose_of("kiosk-0003")["services"]
    assert "dcgm-exporter" not in compose_of("depot-0011")["services"]  # Jetson: DCGM does not support Tegra
    assert "open-webui" not in compose_of("kiosk-0003")["services"]
    assert "open-webui" in compose_of("store-0002")["services"]
    scrape = yaml.safe_load(BUNDLES["store-0001"].files["prometheus/prometheus.yml"])
    jobs = {c["job_name"] for c in scrape["scrape_configs"]}
    assert {"gateway", "vllm", "node", "dcgm"} <= jobs


def test_same_input_gives_byte_identical_bundles_and_tarballs() -> None:
    again = {b.box.id: b for b in build_fleet(load_fleet(FLEET_PATH), FLEET.boxes)}
    for box_id, bundle in BUNDLES.items():
        assert again[box_id].files == bundle.files
        assert tar_bytes(again[box_id]) == tar_bytes(bundle)


def test_cli_writes_bundles_and_tarballs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("bundle", str(FLEET_PATH), "--out", str(out), "--tar", "--box", "kiosk-0003", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["boxes"][0]["box"] == "kiosk-0003"
    assert sorted(p.name for p in out.iterdir()) == ["kiosk-0003", "kiosk-0003.tar.gz"]
    assert (out / "kiosk-0003" / "init-secrets.sh").stat().st_mode & 0o111
    first = (out / "kiosk-0003.tar.gz").read_bytes()
    run_cli("bundle", str(FLEET_PATH), "--out", str(out), "--tar", "--box", "kiosk-0003")
    assert (out / "kiosk-0003.tar.gz").read_bytes() == first


def _fleet_with(tmp_path: Path, mutate: Any) -> Path:
    data = yaml.safe_load(FLEET_PATH.read_text())
    mutate(data)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["boxes"][3]["hardware"]["gpu"].update(count=0),
            "error: fleet.yaml: boxes[3].hardware.gpu.count: Input should be greater than 0",
        ),
        (lambda d: d["boxes"][1].update(webiu=True), "error: fleet.yaml: boxes[1].webiu: unknown field"),
        (
            lambda d: d["boxes"][0]["serving"].update(contxt=10),
            "error: fleet.yaml: boxes[0].serving.contxt: unknown field",
        ),
        (
            lambda d: d["boxes"][2].update(id="store-0001"),
            "error: fleet.yaml: boxes[2].id: duplicate box id 'store-0001' (first at boxes[0])",
        ),
        (lambda d: d["boxes"][2].update(id="Store 1"), "error: fleet.yaml: boxes[2].id: String should match pattern"),
        (
            lambda d: d["defaults"].update(quantization="q3"),
            "error: fleet.yaml: defaults.quantization: Input should be",
        ),
        (
            lambda d: d["boxes"][1]["hardware"]["gpu"].update(model="rtx-9090"),
            "error: fleet.yaml: boxes[1].hardware.gpu.model: unknown GPU or VM size 'rtx-9090'",
        ),
        (
            lambda d: d["boxes"][2]["serving"].update(model="qwen3-32b", quantization="fp16"),
            "error: fleet.yaml: boxes[2].serving: box kiosk-0003: qwen3-32b does not fit:",
        ),
    ],
)
def test_bad_fleet_is_one_line_exit_2_and_nothing_written(tmp_path: Path, mutate: Any, expected: str) -> None:
    path = _fleet_with(tmp_path, mutate)
    out = tmp_path / "out"
    result = run_cli("bundle", str(path), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_model_that_does_not_fit_names_the_box_reason_and_suggestions(tmp_path: Path) -> None:
    path = _fleet_with(tmp_path, lambda d: d["boxes"][0]["serving"].update(model="qwen3-32b", quantization="bf16"))
    result = run_cli("bundle", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "box store-0001: qwen3-32b does not fit" in result.stderr and "try:" in result.stderr


def test_a_failed_run_leaves_the_previous_bundle_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("bundle", str(FLEET_PATH), "--out", str(out)).returncode == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    bad = _fleet_with(tmp_path, lambda d: d["boxes"][-1]["hardware"].update(memory_gib=-4))
    assert run_cli("bundle", str(bad), "--out", str(out)).returncode == 2
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert before == after


def test_regenerating_keeps_the_secrets_created_on_the_box(tmp_path: Path) -> None:
    bundle = BUNDLES["kiosk-0003"]
    write_box(tmp_path, bundle)
    (tmp_path / "kiosk-0003" / "secrets").mkdir()
    (tmp_path / "kiosk-0003" / "secrets" / "api_key").write_text("x" * 40)
    write_box(tmp_path, bundle)
    assert (tmp_path / "kiosk-0003" / "secrets" / "api_key").read_text() == "x" * 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_several_models_on_a_vllm_box_are_refused() -> None:
    data = yaml.safe_load(FLEET_PATH.read_text())
    data["boxes"][0].pop("serving")
    data["boxes"][0]["models"] = [
        {"runtime": "vllm", "model": "qwen3-0.6b", "quantization": "bf16"},
        {"runtime": "vllm", "model": "qwen3-1.7b", "quantization": "bf16"},
    ]
    fleet: Fleet = parse_fleet(data, "fleet.yaml")
    with pytest.raises(Exception, match=r"boxes\[0\]\.models: several models on one box need runtime ollama"):
        build_box(fleet.boxes[0], fleet)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "error: fleet.yaml: expected a mapping with `fleet`, `defaults` and `boxes`"),
        ("- a\n- b\n", "error: fleet.yaml: expected a mapping with `fleet`, `defaults` and `boxes`"),
        ("fleet: x\n  boxes: [\n", "error: fleet.yaml: line 2: not valid YAML"),
        ("fleet: x\nboxes: {a: 1}\n", "error: fleet.yaml: boxes: Input should be a valid list"),
        ("fleet: x\nboxes:\n  - id: a\n", "error: fleet.yaml: boxes[0].hardware: required field is missing"),
    ],
)
def test_malformed_inventories_are_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    result = run_cli("bundle", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_an_image_not_published_for_the_box_architecture_is_refused(tmp_path: Path) -> None:
    """llama.cpp's CUDA build is amd64-only: a Jetson (arm64) box cannot run it."""
    data = yaml.safe_load(FLEET_PATH.read_text())
    data["boxes"][-1]["serving"] = {"runtime": "llamacpp", "model": "qwen3-4b"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli("bundle", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    cuda = load_catalog().images["llamacpp-cuda"]
    assert (
        f"boxes[7].hardware.cpu_arch: box depot-0011: {cuda.repository}:{cuda.tag} has no linux/arm64 "
        "manifest (the registry lists linux/amd64 under sha256:" in result.stderr
    )
