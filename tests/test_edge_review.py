"""The defects an expert review found in the example bundles (issue 12), each pinned by what the
bundle must contain; the live test (test_compose_live.py) shows the same boxes working."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.bundle import build_box
from slm_deploy.catalog import load_catalog
from slm_deploy.fleet import load_fleet
from slm_deploy.policies.compose_rules import profile_rules
from tests.conftest import ROOT, run_cli

FLEET = load_fleet(ROOT / "examples" / "fleet.yaml")
BOXES = {b.id: b for b in FLEET.boxes}


def compose(box_id: str) -> dict[str, Any]:
    return yaml.safe_load(build_box(BOXES[box_id], FLEET).files["compose.yaml"])


def files(box_id: str) -> dict[str, str]:
    return {k: v.decode() for k, v in build_box(BOXES[box_id], FLEET).files.items()}


def test_1_gateway_can_exec_caddy_with_its_file_capability() -> None:
    gateway = compose("store-0001")["services"]["gateway"]
    assert gateway["cap_drop"] == ["ALL"]
    assert gateway["cap_add"] == ["NET_BIND_SERVICE"]
    assert "file capability" in gateway["x-hardening-exceptions"]["cap_add"]


def test_1_profile_rule_flags_a_dropped_file_capability() -> None:
    service = compose("store-0001")["services"]["gateway"]
    broken = {k: v for k, v in service.items() if k not in ("cap_add", "x-hardening-exceptions")}
    problems = profile_rules({"services": {"gateway": broken}}, load_catalog())
    assert any("cap_net_bind_service" in p for p in problems), problems
    assert profile_rules({"services": {"gateway": service}}, load_catalog()) == []


def test_2_vllm_runs_as_an_unnamed_uid_with_user_and_caches_set() -> None:
    env = compose("store-0001")["services"]["vllm"]["environment"]
    for key in ("USER", "LOGNAME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert env.get(key), key


def test_3_vllm_compile_caches_on_an_exec_mount_and_only_vllm_gets_exec() -> None:
    # Edge review E11: a named volume (exec, kept across restarts, not charged to the memory limit).
    services = compose("store-0001")["services"]
    env = services["vllm"]["environment"]
    exec_mounts = [v["target"] for v in services["vllm"]["volumes"] if v["type"] == "volume" and not v.get("read_only")]
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE"):
        assert any(env[key].startswith(m + "/") for m in exec_mounts), (key, services["vllm"]["volumes"])
    assert "compile-cache" in services["volume-init"]["entrypoint"][-1] or any(
        "compile-cache" in a for a in services["volume-init"]["entrypoint"]
    )
    for name, service in services.items():
        assert not any("exec" in t.split(":", 1)[-1].split(",") for t in service.get("tmpfs", [])), name


def test_5_arm64_llamacpp_box_is_refused_clearly(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "fleet": "f",
                "boxes": [
                    {
                        "id": "arm-1",
                        "hardware": {"cpu_arch": "arm64", "cpus": 8, "memory_gib": 32},
                        "serving": {"runtime": "llamacpp", "model": "qwen3-4b", "context": 4096},
                    }
                ],
            }
        )
    )
    result = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    # Refused by the architecture guard: the lock (what the registry publishes) has no linux/arm64.
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "llama.cpp" in result.stderr and "arm64" in result.stderr, result.stderr
    assert not (tmp_path / "out" / "arm-1").exists()


def test_6_air_gapped_box_pulls_nothing_and_says_how_to_carry_every_image() -> None:
    box = files("clinic-0007")
    services = yaml.safe_load(box["compose.yaml"])["services"]
    for name, service in services.items():
        assert service.get("pull_policy") == "never", name
    readme = box["README.md"]
    for name, service in services.items():
        if "build" not in service:
            assert service["image"] in box["images.txt"], name
    assert "docker save" in readme and "docker load" in readme and "images.txt" in readme
    assert "--platform linux/amd64" in readme


def test_8_unpublished_ollama_tag_is_refused() -> None:
    result = run_cli(
        "plan",
        "--model",
        "qwen3-4b",
        "--runtime",
        "ollama",
        "--cpu",
        "--cpus",
        "8",
        "--memory-gib",
        "16",
        "--quantization",
        "q5_k_m",
    )
    assert result.returncode == 2
    assert "publishes no qwen3:4b-q5_K_M" in result.stderr


def test_13_open_webui_admin_from_a_secret_and_signup_closed() -> None:
    box = files("store-0002")
    webui = yaml.safe_load(box["compose.yaml"])["services"]["open-webui"]
    assert webui["environment"]["ENABLE_SIGNUP"] == "false"
    assert "webui_admin_password" in webui["secrets"]
    assert "WEBUI_ADMIN_PASSWORD" in " ".join(webui["entrypoint"])
    assert webui["environment"]["WEBUI_ADMIN_EMAIL"]
    assert "create webui_admin_password" in box["init-secrets.sh"]


def test_14_alertmanager_receives_the_rules_and_routes_to_the_fleet_receiver() -> None:
    box = files("store-0001")
    services = yaml.safe_load(box["compose.yaml"])["services"]
    assert "alertmanager" in services
    prom = yaml.safe_load(box["prometheus/prometheus.yml"])
    targets = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    am = yaml.safe_load(box["alertmanager/alertmanager.yml"])
    receivers = {r["name"]: r for r in am["receivers"]}
    hooks = [w["url"] for r in receivers.values() for w in r.get("webhook_configs", [])]
    assert hooks == [FLEET.boxes[0].options.alerts.webhook]


@pytest.mark.parametrize("box_id", [b.id for b in FLEET.boxes])
def test_profile_rules_hold_for_every_example_box(box_id: str) -> None:
    assert profile_rules(compose(box_id), load_catalog()) == []


def test_4_jetson_uses_the_nvidia_runtime_and_tells_ollama_the_jetpack() -> None:
    box = files("depot-0011")
    ollama = yaml.safe_load(box["compose.yaml"])["services"]["ollama"]
    assert ollama["runtime"] == "nvidia"
    assert "devices" not in ollama["deploy"]["resources"]["reservations"]
    assert ollama["environment"]["JETSON_JETPACK"] == "6"
    assert "daemon.json" in box["README.md"]
    # a discrete GPU keeps the device reservation
    assert "runtime" not in compose("store-0002")["services"]["ollama"]


def test_7_offline_build_names_the_box_platform() -> None:
    service = compose("clinic-0007")["services"]["llamacpp"]
    assert service["platform"] == "linux/amd64"
    assert service["build"]["platforms"] == ["linux/amd64"]


def test_9_gated_model_needs_a_token_and_can_replace_it(tmp_path: Path) -> None:
    import shutil
    import subprocess

    box = files("lab-0005")
    assert "sudo --preserve-env=HF_TOKEN ./init-secrets.sh" in box["README.md"]
    script = tmp_path / "init-secrets.sh"
    script.write_text(box["init-secrets.sh"])
    script.chmod(0o755)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    env = {"PATH": "/usr/bin:/bin"}
    empty = subprocess.run([str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert empty.returncode != 0 and "gated" in empty.stderr
    assert not (tmp_path / "secrets" / "hf_token").exists()
    first = subprocess.run([str(script)], env={**env, "HF_TOKEN": "hf_first"}, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([str(script)], env={**env, "HF_TOKEN": "hf_second"}, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "secrets" / "hf_token").read_text() == "hf_second"
    fetch = " ".join(yaml.safe_load(box["compose.yaml"])["services"]["model-fetch"]["entrypoint"])
    assert "401" in fetch and "403" in fetch and "/run/secrets/hf_token has no access" in fetch


def test_10_dcgm_exporter_skips_the_root_only_ldconfig_entrypoint() -> None:
    dcgm = compose("store-0001")["services"]["dcgm-exporter"]
    assert dcgm["entrypoint"] == ["/usr/bin/dcgm-exporter"]


def test_11_awq_uses_the_marlin_kernel_on_gpus_that_have_it() -> None:
    command = compose("store-0001")["services"]["vllm"]["command"]
    assert command[command.index("--quantization") + 1] == "awq_marlin"


def test_12_ollama_fetch_skips_models_already_present() -> None:
    script = " ".join(compose("kiosk-0003")["services"]["model-fetch"]["entrypoint"])
    assert "/bin/ollama show" in script and "|| /bin/ollama pull" in script


def test_15_grafana_does_not_try_to_install_plugins() -> None:
    assert compose("store-0001")["services"]["grafana"]["environment"]["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"


def test_16_readme_rotation_recreates_only_the_gateway_and_the_ca_is_readable() -> None:
    box = files("store-0001")
    readme = box["README.md"]
    assert "--force-recreate --no-deps gateway" in readme
    # the README's next command is the health check: the rotation returns once the new gateway is
    # healthy, not while it starts (the live test ran into "connection refused" there)
    assert "docker compose up -d --wait --force-recreate --no-deps gateway" in readme
    assert "--cacert secrets/tls_cert" not in readme
    assert "--cacert gateway/tls_cert.pem" in readme
    assert "gateway/tls_cert.pem" in box["init-secrets.sh"] and "chmod 0644 gateway/tls_cert.pem" in box["init-secrets.sh"]
    # the gateway and Grafana do not wait for the model download
    services = compose("store-0001")["services"]
    assert "vllm" not in services["gateway"].get("depends_on", {})


def test_15_node_exporter_reads_the_host_network_and_mounts_only_what_its_collectors_read() -> None:
    service = compose("store-0001")["services"]["node-exporter"]
    binds = {v["source"]: v["target"] for v in service["volumes"] if v["type"] == "bind"}
    assert "/" not in binds and "/sys" not in binds  # the disk through a named volume; sysfs is the host's anyway
    assert binds["/proc/1/net"] == "/host/proc/net"  # PID 1's view: the host's interfaces, not the container's
    assert "/proc" not in binds  # only the files the enabled collectors read
    assert all(v["read_only"] for v in service["volumes"])
    assert "--collector.disable-defaults" in service["command"]
    assert "--no-collector.netdev.netlink" in service["command"]  # netlink would read the container's own netns
    flags = [a.removeprefix("--collector.") for a in service["command"] if a.startswith("--collector.")]
    enabled = sorted(f for f in flags if "." not in f and "-" not in f)
    # textfile: the box agent's release metrics, for the fleet view (docs/rollout.md)
    assert enabled == ["cpu", "filesystem", "loadavg", "meminfo", "netdev", "textfile"]
    reason = service["x-hardening-exceptions"]["volumes"]
    for source in binds:
        assert source in reason, source


def test_aks01_kubernetes_gateway_keeps_the_file_capability_and_the_profile_rule_reads_pod_specs() -> None:
    """AKS-01: the gateway's caddy carries cap_net_bind_service=+ep (image profile); the Kubernetes
    container keeps exactly that capability, and SLM-K8S-016 (the compose profile rule on pod
    specs) fails the container that drops it."""
    from slm_deploy.policies.k8s_rules import image_profile_needs
    from tests.test_stacks import manifest

    deployment = manifest("dev", "Deployment", "slm-dev-gateway")
    caddy = deployment["spec"]["template"]["spec"]["containers"][0]
    assert caddy["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    env = {e["name"]: e["value"] for e in caddy["env"]}
    mounts = {m["mountPath"] for m in caddy["volumeMounts"]}
    assert {env["XDG_CONFIG_HOME"], env["XDG_DATA_HOME"]} <= mounts  # the profile's writable folders
    assert "CKV_K8S_25=" in deployment["metadata"]["annotations"]["checkov.io/skip1"]
    assert image_profile_needs(deployment) == []
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"]}
    problems = image_profile_needs(broken)
    assert any("cap_net_bind_service" in p and "container caddy" in p for p in problems), problems
