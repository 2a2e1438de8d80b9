"""Issue 25, the health gate's second half: the model server's own start-up report against the plan
the bundle carries (plan.json), judged on the box by slm-plan-gate.py (slm_deploy/rollout/planguard.py).

The log excerpts are in the engines' own formats at the pinned versions (the format strings are
cited in planguard.py); their figures are worked out from the models' architectures, not taken
from our planner: Qwen3-4B has 36 layers, 8 KV heads of 128 (docs REFERENCE), so one f16 token
costs 2 x 36 x 8 x 128 x 2 = 147,456 bytes, and llama.cpp's 2 slots of 8192 cells hold 2304 MiB.
The checker runs as the box runs it: `python3 -I -S` (no site packages: the standard library only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slm_deploy.rollout import planguard
from tests.conftest import ROOT, run_cli

FLEET = ROOT / "examples" / "fleet.yaml"
CHECKER = Path(planguard.__file__)

LLAMACPP_START = """\
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors:   CPU_Mapped model buffer size =  {weights_mib:8.2f} MiB
llama_context: n_ctx_seq             = 8192
llama_kv_cache:        CPU KV buffer size =  {kv_mib:8.2f} MiB
llama_kv_cache: size = {kv_mib:7.2f} MiB (  {cells:4d} cells,  36 layers,  2/2 seqs), K (f16): {half:7.2f} MiB, V (f16): {half:7.2f} MiB
llama_context:        CPU compute buffer size =   316.01 MiB
srv  log_server_r: request: GET /health 127.0.0.1 200
"""
# llama-server at its default verbosity (3): only the server's own lines, none of the library's.
LLAMACPP_QUIET = """\
main: HTTP server is listening, hostname: 0.0.0.0, port: 8080, http threads: 7
srv  update_slots: all slots are idle
"""


def llamacpp_log(kv_mib: float, weights_mib: float = 2345.0, cells: int = 8192) -> str:
    return LLAMACPP_START.format(kv_mib=kv_mib, half=kv_mib / 2, weights_mib=weights_mib, cells=cells)


# Boxes the example fleet lacks: llama.cpp on a GPU with a tied-embedding model (Qwen3-4B) and an
# untied one (Phi-3.5-mini), Gemma 3 (sliding window) on llama.cpp, vLLM over two GPUs, and a phi3
# model on Ollama (its older runner).
GATE_FLEET = """\
fleet: gate-lab
defaults: {webui: false, monitoring: false}
boxes:
  - id: gpu-tied
    hardware: {cpu_arch: amd64, cpus: 8, memory_gib: 32, disk_gib: 256, gpu: {model: l4, count: 1}}
    serving: {runtime: llamacpp, model: qwen3-4b, context: 8192, concurrency: 2}
  - id: gpu-untied
    hardware: {cpu_arch: amd64, cpus: 8, memory_gib: 32, disk_gib: 256, gpu: {model: l4, count: 1}}
    serving: {runtime: llamacpp, model: phi-3.5-mini-instruct, context: 4096, concurrency: 2}
  - id: cpu-gemma
    hardware: {cpu_arch: amd64, cpus: 8, memory_gib: 32, disk_gib: 256}
    serving: {runtime: llamacpp, model: gemma-3-1b-it, context: 4096, concurrency: 2}
  - id: vllm-tp2
    hardware: {cpu_arch: amd64, cpus: 16, memory_gib: 64, disk_gib: 256, gpu: {model: l4, count: 2}}
    serving: {runtime: vllm, model: qwen3-8b, context: 8192, concurrency: 4, tensor_parallel: 2}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gatelab")
    (out / "fleet.yaml").write_text(GATE_FLEET)
    (out / "images.lock.yaml").write_text("version: 1\nimages: {}\n")
    done = run_cli("bundle", str(out / "fleet.yaml"), "--out", str(out / "b"), "--allow-unlocked")
    assert done.returncode == 0, done.stderr
    return out / "b"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("planguard")
    boxes = ("clinic-0007", "store-0001", "store-0002", "kiosk-0003", "factory-0009", "branch-0013")
    done = run_cli("bundle", str(FLEET), "--out", str(out), "--allow-example-lock", *[a for b in boxes for a in ("--box", b)])
    assert done.returncode == 0, done.stderr
    return out


def gate(plan: Path, log: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    logs = tmp_path / "model-server.log"
    logs.write_text(log)
    return subprocess.run(
        [sys.executable, "-I", "-S", str(CHECKER), "--plan", str(plan), "--logs", str(logs)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def verdict(done: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(done.stdout.splitlines()[-1])


def planned(plan: Path, name: str) -> int:
    (server,) = json.loads(plan.read_text())["servers"]
    return next(c["planned"] for c in server["checks"] if c["name"] == name)


def test_the_bundle_carries_the_plan_with_its_tolerances(bundles: Path) -> None:
    plan = json.loads((bundles / "clinic-0007" / "plan.json").read_text())
    (server,) = plan["servers"]
    assert (server["engine"], server["service"], server["context"], server["slots"]) == ("llamacpp", "llamacpp", 8192, 2)
    kv = next(c for c in server["checks"] if c["name"] == "kv_cache_bytes")
    assert kv["planned"] == 2304 * 2**20  # 2 slots x 8192 tokens x 147,456 bytes
    assert kv["tolerance"] == 0.05 and "llama-kv-cache.cpp" in kv["why"]
    manifest = json.loads((bundles / "clinic-0007" / "MANIFEST.json").read_text())
    assert "plan.json" in manifest["files"]
    # The server prints the lines the gate reads.
    compose = yaml.safe_load((bundles / "clinic-0007" / "compose.yaml").read_text())
    command = compose["services"]["llamacpp"]["command"]
    assert command[command.index("--log-verbosity") + 1] == "4"


def test_plan_json_is_byte_identical_for_the_same_fleet(bundles: Path, tmp_path: Path) -> None:
    done = run_cli("bundle", str(FLEET), "--out", str(tmp_path), "--allow-example-lock", "--box", "store-0001")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "store-0001" / "plan.json").read_bytes() == (bundles / "store-0001" / "plan.json").read_bytes()


def test_llamacpp_start_up_as_planned_passes(bundles: Path, tmp_path: Path) -> None:
    weights_mib = planned(bundles / "clinic-0007" / "plan.json", "weights_bytes") / 2**20 * 1.02  # f32 norms besides
    done = gate(bundles / "clinic-0007" / "plan.json", llamacpp_log(2304.0, weights_mib), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plan vs actual on box clinic-0007: passed" in done.stdout
    assert re.search(r"kv_cache_bytes +2304.00 MiB +2304.00 MiB +0.0%", done.stdout), done.stdout
    assert verdict(done)["result"] == "passed"


def test_a_server_with_much_less_kv_cache_than_planned_fails(bundles: Path, tmp_path: Path) -> None:
    # The engine came up with a quarter of the cache: -c 4096 for 2 slots instead of 16384.
    done = gate(bundles / "clinic-0007" / "plan.json", llamacpp_log(576.0, cells=2048), tmp_path)
    assert done.returncode == 1
    assert "llamacpp: failed: kv_cache_bytes 576.00 MiB reported, 2304.00 MiB planned (75.0% off, tolerance 5%)" in done.stdout
    assert verdict(done)["result"] == "failed"


def test_no_start_up_line_is_a_failure_not_a_pass(bundles: Path, tmp_path: Path) -> None:
    done = gate(bundles / "clinic-0007" / "plan.json", LLAMACPP_QUIET, tmp_path)
    assert done.returncode == 1
    assert "no start-up report: llama-server's 'llama_kv_cache: size = ...' line" in done.stdout


def test_the_last_start_up_is_judged(bundles: Path, tmp_path: Path) -> None:
    plan = bundles / "clinic-0007" / "plan.json"
    weights_mib = planned(plan, "weights_bytes") / 2**20
    good, bad = llamacpp_log(2304.0, weights_mib), llamacpp_log(576.0, weights_mib, cells=2048)
    assert gate(plan, bad + good, tmp_path).returncode == 0
    assert gate(plan, good + bad, tmp_path).returncode == 1


def test_a_sliding_window_model_counts_both_caches() -> None:
    # src/llama-kv-cache-iswa.cpp creates the non-SWA cache, then the SWA one; each prints its size line.
    log = (
        "load_tensors:   CPU_Mapped model buffer size =  4000.00 MiB\n"
        "llama_kv_cache: size =  192.00 MiB (  4096 cells,   6 layers,  1/1 seqs), K (f16):   96.00 MiB, V (f16):   96.00 MiB\n"
        "llama_kv_cache: size =  336.00 MiB (  1536 cells,  28 layers,  1/1 seqs), K (f16):  168.00 MiB, V (f16):  168.00 MiB\n"
    )
    figures = planguard.parse_llamacpp(log)
    assert figures["kv_cache_bytes"] == 528 * 2**20 and figures["kv_cells_per_slot"] == 4096


def vllm_log(tokens: int, loaded_gib: float) -> str:
    return (
        f"(EngineCore_DP0 pid=88) INFO 12-06 10:00:01 [gpu_model_runner.py:2653] Model loading took {loaded_gib:.4f} GiB "
        "and 4.180519 seconds\n"
        f"(EngineCore_DP0 pid=88) INFO 12-06 10:00:09 [kv_cache_utils.py:1087] GPU KV cache size: {tokens:,} tokens\n"
        "(EngineCore_DP0 pid=88) INFO 12-06 10:00:09 [kv_cache_utils.py:1091] Maximum concurrency for 8,192 tokens per request: 13.20x\n"
    )


def test_vllm_within_and_beyond_its_tolerance(bundles: Path, tmp_path: Path) -> None:
    plan = bundles / "store-0001" / "plan.json"
    tokens, weights = planned(plan, "kv_cache_tokens"), planned(plan, "weights_bytes") / 2**30
    done = gate(plan, vllm_log(round(tokens * 0.95), weights * 1.04), tmp_path)
    assert done.returncode == 0, done.stdout
    done = gate(plan, vllm_log(tokens // 2, weights), tmp_path)
    assert done.returncode == 1
    assert "store-0001: failed" in done.stdout and "kv_cache_tokens" in done.stdout


def test_ollama_memory_summary(bundles: Path, tmp_path: Path) -> None:
    plan = bundles / "kiosk-0003" / "plan.json"
    kv = planned(plan, "kv_cache_bytes")

    def summary(kv_bytes: float) -> str:
        return (
            'time=2026-12-06T10:00:00.000Z level=INFO source=device.go:211 msg="model weights" device=CPU size="1.3 GiB"\n'
            f'time=2026-12-06T10:00:00.000Z level=INFO source=device.go:222 msg="kv cache" device=CPU size="{kv_bytes / 2**20:.1f} MiB"\n'
            'time=2026-12-06T10:00:00.000Z level=INFO source=device.go:233 msg="compute graph" device=CPU size="300.0 MiB"\n'
            'time=2026-12-06T10:00:00.000Z level=INFO source=device.go:238 msg="total memory" size="2.1 GiB"\n'
        )

    assert gate(plan, summary(kv), tmp_path).returncode == 0
    done = gate(plan, summary(kv / 3), tmp_path)
    assert done.returncode == 1 and "ollama: failed: kv_cache_bytes" in done.stdout


def test_what_cannot_be_checked_says_so(bundles: Path, tmp_path: Path) -> None:
    for box, why in (
        ("factory-0009", "several models share one Ollama server"),
        ("branch-0013", "no start-up line of onnx with its KV cache is known"),
    ):
        done = gate(bundles / box / "plan.json", "", tmp_path)
        assert done.returncode == 0, done.stdout
        assert f"plan vs actual on box {box}: not checked" in done.stdout and why in done.stdout
        assert verdict(done)["result"] == "not checked"


def test_an_unknown_engine_fails(bundles: Path, tmp_path: Path) -> None:
    plan = json.loads((bundles / "clinic-0007" / "plan.json").read_text())
    plan["servers"][0]["engine"] = "sglang"
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = gate(tmp_path / "plan.json", llamacpp_log(2304.0), tmp_path)
    assert done.returncode == 1 and "unknown engine 'sglang'" in done.stdout


def test_no_plan_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = gate(tmp_path / "missing.json", "", tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {tmp_path / 'missing.json'}: ") and done.stderr.count("\n") == 1


def test_the_playbook_runs_the_plan_gate_after_smoke_inside_the_rolled_back_block() -> None:
    from slm_deploy.fleet import load_fleet
    from slm_deploy.rollout.playbook import playbook

    (play,) = playbook(load_fleet(FLEET), "2026.12.06-1")
    block = next(task for task in play["tasks"] if "block" in task)
    names = [t["name"] for t in block["block"]]
    smoke = names.index("Health gate: smoke against the gateway")
    gate_task = block["block"][names.index("Health gate: the model server's start-up report against the plan")]
    assert smoke < names.index("Health gate: the model server's start-up report against the plan") < names.index("Gate passed")
    assert gate_task["ansible.builtin.command"].startswith(
        "python3 {{ slm_root }}/bin/slm-plan-gate.py --project {{ slm_project }}"
    )
    failing = block["block"][names.index("Plan gate passed")]
    assert failing["when"] == "slm_plan_run.rc != 0" and "ansible.builtin.fail" in failing
    # A failure anywhere in the block runs the rescue, which rolls back and brings the previous release up.
    assert any("rollback" in str(t.get("ansible.builtin.command", "")) for t in block["rescue"])
    report = next(task for task in play["tasks"] if task["name"] == "Report")["ansible.builtin.copy"]["content"]
    assert "'smoke': slm_smoke_gate" in report and "'plan': slm_plan_gate" in report


def test_fleet_status_shows_smoke_and_plan_apart(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    row = {
        "box": "clinic-0007",
        "ring": "canary",
        "release": "r2",
        "installed": True,
        "gate": "failed",
        "smoke": "passed",
        "plan": "failed",
        "rolled_back": True,
        "error": "plan gate: llamacpp: failed: kv_cache_bytes 576.00 MiB reported",
    }
    (reports / "clinic-0007.json").write_text(json.dumps(row))
    done = run_cli("fleet", "status", str(reports), "--json")
    assert done.returncode == 1
    (shown,) = json.loads(done.stdout)
    assert (shown["smoke"], shown["plan"]) == ("passed", "failed")
    done = run_cli("fleet", "status", str(reports))
    header = next(line for line in done.stdout.splitlines() if "smoke" in line)
    assert header.index("gate") < header.index("smoke") < header.index("plan")


def run_gate_tasks(
    tmp_path: Path, bundles: Path, log: str, smoke: str = "/bin/true", started: str = "2099-01-01T00:00:00Z"
) -> dict:  # type: ignore[type-arg]
    """The playbook's own plan-gate tasks and its rescue's record of the failure, run by the real
    ansible-playbook on this machine; `docker compose logs` is a stand-in printing `log`."""
    import shutil

    from slm_deploy.fleet import load_fleet
    from slm_deploy.rollout.playbook import playbook
    from tests.conftest import need

    binary = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    need(Path(binary).is_file(), "ansible is not installed (pip install ansible)")
    (play,) = playbook(load_fleet(FLEET), "r2")
    block = next(task for task in play["tasks"] if "block" in task)
    names = [t["name"] for t in block["block"]]
    gate_tasks = block["block"][names.index("Gates reached") : names.index("Gate passed") + 2]  # + its metric
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copyfile(CHECKER, root / "bin" / "slm-plan-gate.py")
    # release r2 installed by the agent (its metrics record the gate of the release it runs)
    from slm_deploy.rollout import boxagent
    from slm_deploy.rollout.playbook import copy_agent

    copy_agent(root / "bin" / "slm-box")
    (root / "releases" / "r2" / "clinic-0007").mkdir(parents=True)
    (root / "current").symlink_to("releases/r2/clinic-0007")
    boxagent.record_state(str(root), "installed", {"fleet": "f", "box": "clinic-0007", "release": "r2", "bundle": "sha256:ab"})
    env = fake_docker(tmp_path, log, started)
    for task in gate_tasks:
        task.pop("become", None)
    mini = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {
                "slm_root": str(root),
                "slm_project": str(bundles / "clinic-0007"),
                "slm_installed": True,
                "slm_ring": "canary",
                "slm_release": "r2",
                "slm_reports": str(tmp_path),
                "slm_work": str(tmp_path),
                "slm_gateway_port": 8443,
                "slm_deploy": smoke,  # the smoke gate's program: passes or fails
                "ansible_python_interpreter": sys.executable,
            },
            "tasks": [
                {"name": "Gate", "block": gate_tasks, "rescue": block["rescue"][:2]},  # the failure, its metric
                {
                    k: v
                    for k, v in next(t for t in play["tasks"] if t["name"] == "Report").items()
                    if k not in ("delegate_to", "become")
                },
            ],
        }
    ]
    (tmp_path / "mini.yml").write_text(yaml.safe_dump(mini))
    env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    done = subprocess.run(
        [binary, "-i", "localhost,", "mini.yml"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "localhost.json").read_text())
    metrics = (root / "metrics" / "slm-release.prom").read_text()
    report["metric"] = next((line for line in metrics.splitlines() if line.startswith("slm_release_gate_passed{")), None)
    return report


def test_ansible_records_a_passed_plan_gate(bundles: Path, tmp_path: Path) -> None:
    weights_mib = planned(bundles / "clinic-0007" / "plan.json", "weights_bytes") / 2**20
    report = run_gate_tasks(tmp_path, bundles, llamacpp_log(2304.0, weights_mib))
    assert (report["gate"], report["smoke"], report["plan"]) == ("passed", "passed", "passed"), report
    assert report["metric"] is not None and 'release="r2"' in report["metric"] and report["metric"].endswith(" 1")


def test_ansible_fails_the_box_on_a_plan_gate_failure_with_the_reason(bundles: Path, tmp_path: Path) -> None:
    report = run_gate_tasks(tmp_path, bundles, llamacpp_log(576.0, cells=2048))
    assert (report["gate"], report["smoke"], report["plan"]) == ("failed", "passed", "failed"), report
    assert report["metric"] is not None and 'release="r2"' in report["metric"] and report["metric"].endswith(" 0")
    assert "kv_cache_bytes 576.00 MiB reported, 2304.00 MiB planned" in report["error"]


def test_ansible_passes_a_box_whose_model_server_this_release_did_not_restart(bundles: Path, tmp_path: Path) -> None:
    # Outside review B4, through the playbook's own command: its --since is the `current` link.
    report = run_gate_tasks(tmp_path, bundles, LLAMACPP_QUIET, started="2026-01-02T03:04:05Z")
    assert (report["gate"], report["smoke"], report["plan"]) == ("passed", "passed", "not checked"), report
    assert "the model server was not restarted by this release" in report["plan_detail"]


def test_ansible_records_a_failed_smoke_and_no_plan_gate(bundles: Path, tmp_path: Path) -> None:
    report = run_gate_tasks(tmp_path, bundles, llamacpp_log(2304.0), smoke="/bin/false")
    assert (report["gate"], report["smoke"], report["plan"]) == ("failed", "failed", "not run"), report


def test_the_ollama_stand_in_prints_the_summary_the_rollout_lab_is_gated_on(tmp_path: Path) -> None:
    """tests/test_rollout_live.py runs its boxes on the Ollama stand-in: after the smoke gate's chat
    it must print Ollama's memory summary, which then passes the gate for that fleet's plan."""
    import time
    import urllib.request

    from tests.conftest import stop
    from tests.test_gateway_live import free_port
    from tests.test_rollout_live import FLEET as LAB_FLEET

    (tmp_path / "fleet.yaml").write_text(LAB_FLEET)
    (tmp_path / "images.lock.yaml").write_text("version: 1\nimages: {}\n")
    done = run_cli("bundle", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "b"), "--allow-unlocked", "--box", "box-a")
    assert done.returncode == 0, done.stderr
    env = yaml.safe_load((tmp_path / "b" / "box-a" / "compose.yaml").read_text())["services"]["ollama"]["environment"]
    port = free_port()
    env = {
        **env,
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "STANDIN_OLLAMA_TAGS": "qwen3:0.6b",
        "STANDIN_OLLAMA_KV_BYTES_PER_TOKEN": "114688",  # as the lab's override sets it
    }
    log = tmp_path / "ollama.log"
    standin = ROOT / "tests" / "standins" / "fakes" / "standin.py"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(standin), "ollama", "serve"], env=env, stdout=out, stderr=out)
    try:

        def post(path: str, body: dict) -> bytes:  # type: ignore[type-arg]
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()

        for _ in range(100):
            try:
                post("/api/pull", {"model": "qwen3:0.6b"})
                break
            except OSError:
                time.sleep(0.1)
        post("/v1/chat/completions", {"model": "qwen3:0.6b", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        stop(proc)
    done = gate(tmp_path / "b" / "box-a" / "plan.json", log.read_text(), tmp_path)
    assert done.returncode == 0, done.stdout + log.read_text()
    assert "ollama   ollama  kv_cache_bytes  224.00 MiB  224.00 MiB" in done.stdout


def test_ollama_on_its_older_runner_is_not_checked(bundles: Path, tmp_path: Path) -> None:
    """Outside review B1: Ollama v0.12.6 prints its memory summary only for models on its own engine
    (llm/server.go:586-589), which phi3 models (Phi-4-mini) are not on (fs/ggml/ggml.go:241-252): a
    healthy box's log has no summary, and the gate must not roll it back for that."""
    log = 'time=2026-12-06T10:00:00.000Z level=INFO source=server.go:400 msg="starting runner"\n'
    done = gate(bundles / "store-0002" / "plan.json", log, tmp_path)
    assert done.returncode == 0, done.stdout
    assert "plan vs actual on box store-0002: not checked" in done.stdout
    assert "ollama: not checked: Ollama's older runner prints no memory summary: phi3 models" in done.stdout
    # A qwen3 model runs on Ollama's own engine: still checked (test_ollama_memory_summary).
    assert planned(bundles / "kiosk-0003" / "plan.json", "kv_cache_bytes") > 0


def test_llamacpp_on_a_gpu_with_tied_embeddings_checks_the_kv_cache_only(lab: Path, tmp_path: Path) -> None:
    """Outside review B2: with -ngl = layers + 1 the output layer is on the GPU and token_embd on the
    CPU, so llama.cpp keeps a second copy of a tied embedding table (src/llama-model-loader.cpp:
    1370-1386): the model buffers are the file plus that copy, which the plan cannot size."""
    plan = json.loads((lab / "gpu-tied" / "plan.json").read_text())
    (server,) = plan["servers"]
    assert [c["name"] for c in server["checks"]] == ["kv_cache_bytes", "kv_cells_per_slot"]
    weights_mib = 2400.0  # any: Qwen3-4B Q4_K_M's buffers, the Q6_K embedding table counted twice
    log = (
        "load_tensors: offloaded 37/37 layers to GPU\n"
        "load_tensors:   CPU_Mapped model buffer size =   304.28 MiB\n"
        f"load_tensors:        CUDA0 model buffer size =  {weights_mib:8.2f} MiB\n"
        "llama_kv_cache: size = 2304.00 MiB (  8192 cells,  36 layers,  2/2 seqs), K (f16): 1152.00 MiB, V (f16): 1152.00 MiB\n"
    )
    done = gate(lab / "gpu-tied" / "plan.json", log, tmp_path)
    assert done.returncode == 0, done.stdout
    assert "weights_bytes not compared: on a GPU llama.cpp keeps a second copy of the tied embedding table" in done.stdout
    assert re.search(r"weights_bytes +- +2704.28 MiB +- +- +not checked", done.stdout), done.stdout
    done = gate(lab / "gpu-tied" / "plan.json", log.replace("2304.00 MiB (  8192", " 576.00 MiB (  2048"), tmp_path)
    assert done.returncode == 1 and "kv_cache_bytes 576.00 MiB reported, 2304.00 MiB planned" in done.stdout
    # An untied model (Phi-3.5-mini) has no copy: its weights are still compared on a GPU.
    untied = json.loads((lab / "gpu-untied" / "plan.json").read_text())
    assert "weights_bytes" in [c["name"] for c in untied["servers"][0]["checks"]]
    assert untied["servers"][0]["skipped"] == {}


def test_vllm_weights_are_compared_per_gpu_under_tensor_parallel(lab: Path, tmp_path: Path) -> None:
    """Outside review B3 (not a defect): the plan's weights for vLLM are already per GPU (the model
    over tensor_parallel, slm_deploy/planner/vllm.py), as is each worker's `Model loading took` line."""
    plan = lab / "vllm-tp2" / "plan.json"
    full = json.loads(run_cli("plan", "--model", "qwen3-8b", "--gpu", "l4", "--tensor-parallel", "1", "--json").stdout)
    per_gpu = planned(plan, "weights_bytes") / 2**30
    assert abs(per_gpu - full["weights_gib"] / 2) < 0.01
    tokens = planned(plan, "kv_cache_tokens")
    worker = "(EngineCore_DP0 pid=88) (Worker_TP{n} pid=9{n}) INFO 12-06 10:00:01 [gpu_model_runner.py:2653] "
    log = "".join(f"{worker.format(n=n)}Model loading took {per_gpu * 1.03:.4f} GiB and 4.1 seconds\n" for n in (0, 1))
    log += f"(EngineCore_DP0 pid=88) INFO 12-06 10:00:09 [kv_cache_utils.py:1087] GPU KV cache size: {tokens:,} tokens\n"
    done = gate(plan, log, tmp_path)
    assert done.returncode == 0, done.stdout


def test_vllm_with_more_kv_cache_than_planned_passes_and_says_so(bundles: Path, tmp_path: Path) -> None:
    """Outside review H2: a GPU with more free memory than planned holds more tokens; that serves
    the plan. Only less than planned (beyond the tolerance) fails."""
    plan = bundles / "store-0001" / "plan.json"
    tokens, weights = planned(plan, "kv_cache_tokens"), planned(plan, "weights_bytes") / 2**30
    done = gate(plan, vllm_log(round(tokens * 1.5), weights), tmp_path)
    assert done.returncode == 0, done.stdout
    assert "ok (more)" in done.stdout
    assert "note: kv_cache_tokens" in done.stdout and "50.0% more than the" in done.stdout
    done = gate(plan, vllm_log(round(tokens * 0.85), weights), tmp_path)
    assert done.returncode == 1 and "kv_cache_tokens" in done.stdout


def test_gemma_3_on_llamacpp_passes_with_llama_cpps_own_cache_sizes(lab: Path, tmp_path: Path) -> None:
    """Outside review H1: the tolerance's reason said a Gemma 3 box fails the gate; the planner now
    sizes llama.cpp's SWA cache. Gemma-3-1B: 26 layers, 4 global (every 6th), 22 sliding (window
    512), 1 KV head of 256, f16: 1 KiB per cell and layer; 2 slots of 4096 cells; the SWA cache
    holds 512 + n_ubatch 512 = 1024 cells per slot (src/llama-kv-cache-iswa.cpp:73)."""
    plan = lab / "cpu-gemma" / "plan.json"
    log = (
        f"load_tensors:   CPU_Mapped model buffer size =  {planned(plan, 'weights_bytes') / 2**20:8.2f} MiB\n"
        "llama_kv_cache: size =   32.00 MiB (  4096 cells,   4 layers,  2/2 seqs), K (f16):   16.00 MiB, V (f16):   16.00 MiB\n"
        "llama_kv_cache: size =   44.00 MiB (  1024 cells,  22 layers,  2/2 seqs), K (f16):   22.00 MiB, V (f16):   22.00 MiB\n"
    )
    done = gate(plan, log, tmp_path)
    assert done.returncode == 0, done.stdout
    why = next(c["why"] for c in json.loads(plan.read_text())["servers"][0]["checks"] if c["name"] == "kv_cache_bytes")
    assert "fails the gate" not in why and "llamacpp_swa_cells" in why


def test_a_server_with_the_planned_kv_bytes_but_other_slots_fails(bundles: Path, tmp_path: Path) -> None:
    """Nit: the cells per slot were parsed but never planned. -c 16384 -np 1 holds the same bytes
    as the planned -c 16384 -np 2, but one slot of 16384 cells, not two of 8192."""
    plan = bundles / "clinic-0007" / "plan.json"
    assert planned(plan, "kv_cells_per_slot") == 8192
    log = llamacpp_log(2304.0, planned(plan, "weights_bytes") / 2**20, cells=16384).replace("2/2 seqs", "1/1 seqs")
    done = gate(plan, log, tmp_path)
    assert done.returncode == 1
    assert "kv_cells_per_slot 16,384 reported, 8,192 planned" in done.stdout


def fake_docker(tmp_path: Path, log: str, started: str) -> dict[str, str]:
    """A `docker` on PATH answering the three calls the gate makes: compose logs, compose ps -q, inspect."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "model.log").write_text(log)
    script = (
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        f'  "compose logs") cat {tmp_path / "model.log"} ;;\n'
        '  "compose ps") echo 0123456789ab ;;\n'
        f'  "inspect -f") echo {started} ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    (bin_dir / "docker").write_text(script)
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_model_server_not_restarted_by_the_release_is_not_checked(bundles: Path, tmp_path: Path) -> None:
    """Outside review B4: at verbosity 4 llama-server logs every request, so on a busy box the start-up
    lines rotate out of the json-file log; a release that leaves the llama.cpp service unchanged does
    not restart it. Its container started before the release was installed: not checked, exit 0."""
    current = tmp_path / "current"
    current.symlink_to(bundles / "clinic-0007")
    command = [sys.executable, "-I", "-S", str(CHECKER), "--project", str(bundles / "clinic-0007"), "--since", str(current)]
    env = fake_docker(tmp_path, LLAMACPP_QUIET, "2026-01-02T03:04:05.123456789Z")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plan vs actual on box clinic-0007: not checked" in done.stdout
    assert (
        "llamacpp: not checked: the model server was not restarted by this release "
        "(its container started 2026-01-02T03:04:05Z, before the release was installed"
    ) in done.stdout
    # Started after the install (this release restarted it) and still no lines: a failure, as before.
    env = fake_docker(tmp_path, LLAMACPP_QUIET, "2099-01-01T00:00:00Z")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "no start-up report" in done.stdout
    # The playbook passes the install time: the `current` link the agent re-creates on install.
    from slm_deploy.rollout.playbook import _plan_gate_command

    assert "--since {{ slm_root }}/current" in _plan_gate_command("slm-plan-gate.py")
