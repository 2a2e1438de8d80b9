"""Foundry Local for real: a tiny ONNX Runtime GenAI model generated here (tests/tiny_onnx_genai.py,
built with `onnx`, no torch), loaded by the real Foundry Local library (PyPI foundry-local-sdk,
with its onnxruntime and onnxruntime-genai-core) through our launcher on 127.0.0.1, behind the
generated gateway Caddyfile run by Debian's caddy.

Needs `foundry_local_sdk` and `onnx` importable, either in this venv or in a folder named by
SLM_FOUNDRY_PYTHONPATH (`pip install --target DIR foundry-local-sdk==2.2.1 onnx==1.23.2`); skipped
without them unless SLM_REQUIRE_TOOLS=1. The telemetry test also needs root (unshare -n), strace and ip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slm_deploy.bundle.writer import build_fleet
from slm_deploy.fleet import load_fleet
from tests.conftest import ROOT, need, need_binary, stop
from tests.test_gateway_live import API_KEY, Gateway, _caddy, free_port, lost_streams, self_signed_cert
from tests.tiny_onnx_genai import CONTEXT, EXTRA_PATH, foundry_env, generate

pytestmark = [pytest.mark.foundry, pytest.mark.tools]
MODEL_ID = "tiny-generic-cpu:1"
VARIANT = "cpu_and_mobile/tiny-int4"
MAX_LENGTH = 2560  # the shortest context the planner allows for onnx: 2048 reserved output + a 512-token prompt


def _importable(name: str) -> bool:
    if importlib.util.find_spec(name) is not None:
        return True
    return bool(EXTRA_PATH) and (Path(EXTRA_PATH) / name).is_dir()


@dataclass
class Served:
    model_dir: Path
    scratch: Path
    launcher: subprocess.Popen[bytes]
    direct: str
    gateway: Gateway
    log: Path
    gateway_dir: Path


def _wait(check: object, proc: subprocess.Popen[bytes], what: str, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up: {log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    need(_importable("foundry_local_sdk") and _importable("onnx"), "foundry-local-sdk and onnx are not installed")
    caddy = need_binary("caddy")
    tmp = tmp_path_factory.mktemp("foundry")
    repo = tmp / "repo"
    model_dir = repo / VARIANT
    made = generate(model_dir)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = tmp / "launcher.log"
    scratch = tmp / "scratch"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slm_deploy.launcher.foundry",
                "--model-dir",
                str(repo),
                "--variant",
                VARIANT,
                "--max-length",
                str(MAX_LENGTH),
                "--model-id",
                MODEL_ID,
                "--listen",
                f"http://127.0.0.1:{port}",
                "--scratch",
                str(scratch),
            ],
            env=foundry_env(tmp),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == "branch-0013"))
    caddyfile = tmp / "Caddyfile"
    caddyfile.write_bytes(bundle.files["gateway/Caddyfile"])
    self_signed_cert(tmp)
    try:
        _wait(lambda: (scratch / "ready").exists(), launcher, "the launcher", log)
        with _caddy(caddy, caddyfile, tmp, f"127.0.0.1:{port}", ()) as gateway:
            yield Served(model_dir, scratch, launcher, f"http://127.0.0.1:{port}", gateway, log, tmp)
    finally:
        if launcher.poll() is None:
            stop(launcher, timeout=60)


def _chat(content: str, stream: bool = False, model: str = MODEL_ID) -> bytes:
    request = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16, "stream": stream}
    return json.dumps(request).encode()


def test_launcher_loads_the_model_and_foundry_local_reports_status(served: Served) -> None:
    ready = json.loads((served.scratch / "ready").read_text())
    # The generated model declares 8192 tokens; the launcher capped the KV cache at the planned 2560.
    assert ready == {"model": MODEL_ID, "context_length": MAX_LENGTH, "urls": [served.direct]}
    staged = served.scratch / "cache" / "slm-deploy" / "tiny-generic-cpu-1"
    assert json.loads((staged / "genai_config.json").read_text())["search"]["max_length"] == MAX_LENGTH
    assert json.loads((served.model_dir / "genai_config.json").read_text())["search"]["max_length"] == CONTEXT
    with urllib.request.urlopen(served.direct + "/status", timeout=10) as resp:
        status = json.loads(resp.read())
    assert status["endpoints"] == [served.direct]
    with urllib.request.urlopen(served.direct + "/models/loaded", timeout=10) as resp:
        assert json.loads(resp.read()) == [MODEL_ID]
    # Foundry Local has no Prometheus endpoint: the gateway's metrics carry the dashboard.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(served.direct + "/metrics", timeout=10)
    assert err.value.code == 404
    healthcheck = [sys.executable, "-m", "slm_deploy.launcher.foundry", "--scratch", str(served.scratch), "--check"]
    assert subprocess.run([*healthcheck, served.direct], env=foundry_env(served.scratch), check=False).returncode == 0
    closed = f"http://127.0.0.1:{free_port()}"
    assert subprocess.run([*healthcheck, closed], env=foundry_env(served.scratch), check=False).returncode == 1


def test_gateway_passes_the_openai_api_to_foundry_local_with_the_key_only(served: Served) -> None:
    assert served.gateway.request("/v1/models")[0] == 401
    status, body = served.gateway.request("/v1/models", key=API_KEY)
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [MODEL_ID]
    for path in ("/status", "/models/loaded", "/shutdown"):  # Foundry Local's admin API stays inside
        assert served.gateway.request(path, key=API_KEY)[0] == 404, path


def test_foundry_local_web_service_answers_a_chat_completion_through_the_gateway(served: Served) -> None:
    """The real library + ONNX Runtime GenAI run the staged, capped folder; Foundry Local's own web service answers."""
    assert served.gateway.request("/v1/chat/completions", body=_chat("ping"))[0] == 401
    status, body = served.gateway.request("/v1/chat/completions", key=API_KEY, body=_chat("ping"))
    assert status == 200, body
    reply = json.loads(body)
    assert reply["model"] == MODEL_ID and reply["choices"][0]["message"]["content"] == "pong"


def test_a_chat_without_max_tokens_is_answered_when_the_context_holds_foundry_locals_default_reply(served: Served) -> None:
    """Foundry Local reserves 2048 output tokens when a request has no max_tokens (catalog
    default_output_tokens); the planned context (2048 + a 512-token prompt) holds it, so it answers."""
    request = {"model": MODEL_ID, "messages": [{"role": "user", "content": "ping"}]}
    status, body = served.gateway.request("/v1/chat/completions", key=API_KEY, body=json.dumps(request).encode())
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "pong"


def test_foundry_local_streams_a_chat_completion_through_the_gateway(served: Served) -> None:
    status, body = served.gateway.request("/v1/chat/completions", key=API_KEY, body=_chat("ping", stream=True))
    assert status == 200, body
    events = [line.removeprefix(b"data: ") for line in body.splitlines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "pong"


def test_foundry_local_keeps_its_connection_after_a_streamed_reply_as_the_catalog_says(served: Served) -> None:
    """The gateway reuses its connections to Foundry Local (catalog upstream_keepalive) because the web
    service keeps one after a streamed reply: a second request on the same connection is answered."""
    import http.client

    from slm_deploy.onnx_builds import load_onnx_server

    host, port = served.direct.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", _chat("ping", stream=True), {"Content-Type": "application/json"})
        first = conn.getresponse()
        assert first.status == 200 and first.read().rstrip().endswith(b"data: [DONE]")
        sock = conn.sock
        kept = sock is not None and not first.will_close
        if kept:
            conn.request("GET", "/v1/models")
            second = conn.getresponse()
            kept = conn.sock is sock and second.status == 200 and MODEL_ID.encode() in second.read()
    finally:
        conn.close()
    assert kept is load_onnx_server().upstream_keepalive
    generated = (served.gateway_dir / "Caddyfile").read_text()
    assert ("keepalive off" not in generated) is kept, "the gateway's reuse of upstream connections does not follow the catalog"


def test_a_burst_of_streams_through_the_gateway_loses_none(served: Served) -> None:
    """256 streamed chats, 4 at a time, through the generated gateway (connections to Foundry Local
    kept alive), read the way `slm-deploy smoke` reads them: every one ends with [DONE]. Before the
    gateway read request bodies whole, Caddy cut about 1 in 100 after its headers, kept alive or
    not ("aborting with incomplete response": "use of closed network connection"), which read as
    Foundry Local losing streams (docs/onnx-runtime.md)."""
    lost = lost_streams(served.gateway, MODEL_ID, 256)
    assert lost == [], f"{len(lost)} of 256 streams lost: {sorted(set(lost))}"


def test_a_model_foundry_local_does_not_serve_is_refused(served: Served) -> None:
    status, body = served.gateway.request("/v1/chat/completions", key=API_KEY, body=_chat("ping", model="phi-4-mini"))
    assert status == 404 and b"Model not found" in body


def test_sigterm_stops_the_launcher_cleanly(served: Served) -> None:
    served.launcher.terminate()
    assert served.launcher.wait(timeout=60) == 0
    assert not (served.scratch / "ready").exists()
    assert "stopping" in served.log.read_text()


# Runs inside `unshare -n` (a network namespace holding only loopback): brings lo up, starts the
# launcher under strace (connect/sendto/sendmsg of every thread), sends one chat, keeps serving for
# QUIET_SECONDS, then stops the launcher with SIGTERM. Nothing it tries can leave the machine.
QUIET_SECONDS = 20
_NETNS_DRIVER = r"""
import json, os, signal, subprocess, sys, time, urllib.request
from pathlib import Path
trace, scratch, port, quiet = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
launcher = sys.argv[5:]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", trace, *launcher])
deadline = time.monotonic() + 90
while not (scratch / "ready").exists():
    if tracer.poll() is not None or time.monotonic() > deadline:
        sys.exit("the launcher did not come up")
    time.sleep(0.2)
chat = {"model": "tiny-generic-cpu:1", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8}
request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(chat).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as resp:
    print(json.loads(resp.read())["choices"][0]["message"]["content"])
time.sleep(quiet)
children = Path(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read_text().split()
for child in children:
    os.kill(int(child), signal.SIGTERM)
sys.exit(tracer.wait(timeout=60))
"""
LOOPBACK = ('inet_addr("127.0.0.1")', 'inet_pton(AF_INET6, "::1"')


def test_the_launcher_sends_nothing_beyond_loopback_while_serving(tmp_path: Path) -> None:
    """foundry-local-sdk 2.2.1's native library looks up mobile.events.data.microsoft.com every few
    seconds even with non-essential telemetry disabled, and writes a device id under $HOME, unless
    CI=true is in its environment; the launcher sets it. Under strace in a loopback-only network
    namespace: no connect or sendto to any address but 127.0.0.1 and ::1 (a DNS lookup is one, to
    the resolver's address), and nothing written in HOME."""
    need(_importable("foundry_local_sdk") and _importable("onnx"), "foundry-local-sdk and onnx are not installed")
    need(os.geteuid() == 0, "a network namespace (unshare -n) needs root")
    for tool in ("unshare", "strace", "ip"):
        need_binary(tool)
    repo = tmp_path / "repo"
    made = generate(repo / VARIANT)
    assert made.returncode == 0, made.stderr
    home = tmp_path / "home"
    home.mkdir()
    scratch, trace, port = tmp_path / "scratch", tmp_path / "trace", free_port()
    launcher = [sys.executable, "-m", "slm_deploy.launcher.foundry", "--model-dir", str(repo), "--variant", VARIANT]
    launcher += ["--max-length", str(MAX_LENGTH), "--model-id", MODEL_ID, "--listen", f"http://127.0.0.1:{port}"]
    launcher += ["--scratch", str(scratch)]
    driver = ["unshare", "-n", "--", sys.executable, "-c", _NETNS_DRIVER, str(trace), str(scratch), str(port)]
    result = subprocess.run(
        [*driver, str(QUIET_SECONDS), *launcher], env=foundry_env(home), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "pong", result.stderr[-3000:]
    calls = trace.read_text().splitlines()
    assert any("connect(" in line and LOOPBACK[0] in line for line in calls)  # strace saw the catalog query
    beyond = [line for line in calls if ("AF_INET" in line) and not any(address in line for address in LOOPBACK)]
    assert beyond == [], "\n".join(beyond[:10])
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
