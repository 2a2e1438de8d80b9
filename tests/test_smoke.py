"""`slm-deploy smoke` against the generated gateway run live (caddy on 127.0.0.1, the box's
Caddyfile byte for byte, see test_gateway_live.py) in front of a fake OpenAI-compatible server
that streams, and against broken endpoints: wrong key, server down, slow server, no auth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slm_deploy.smoke import StreamResult, percentile, run_smoke
from tests.conftest import ROOT
from tests.test_gateway_live import API_KEY, FakeOpenAI, free_port, running_gateway, serving

pytestmark = pytest.mark.tools


class StreamingOpenAI(FakeOpenAI):
    """Lists one model; answers chat completions plainly or as SSE, after `delay` seconds."""

    delay = 0.0
    words = ("A ", "smoke ", "test ", "checks ", "the ", "basics.")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        time.sleep(self.delay)
        if not body.get("stream"):
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "".join(self.words)}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.stream()
        self.close_connection = True

    def stream(self) -> None:
        for word in self.words:
            self.wfile.write(b"data: " + json.dumps({"choices": [{"delta": {"content": word}}]}).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(0.005)
        usage = {"choices": [], "usage": {"completion_tokens": len(self.words)}}
        self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")


class SlowOpenAI(StreamingOpenAI):
    delay = 5.0


def smoke_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "smoke", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api_key"
    path.write_text(API_KEY + "\n")
    return path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with running_gateway("store-0001", tmp_path / "gw", StreamingOpenAI) as gw:
        yield gw.base, tmp_path / "gw" / "tls_cert"


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_smoke_passes_against_the_live_gateway(live: tuple[str, Path], key_file: Path) -> None:
    url, cert = live
    out = smoke_cli(
        url, "--api-key-file", str(key_file), "--cacert", str(cert), "--min-cert-days", "1", "--requests", "6", "--json"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    found = checks(out)
    assert [c["status"] for c in report["checks"]] == ["pass"] * 7, report
    assert found["tls"]["detail"].startswith("TLSv1.3, certificate commonName=test valid for 1 more days")
    assert report["model"] == "fake-model"
    assert found["auth"]["detail"] == "401 without a key and with a wrong key"
    assert "HTTP 403" in found["metrics"]["detail"]  # the gateway refuses /metrics on the public port
    assert report["latency"]["succeeded"] == 6
    assert 0 < report["latency"]["ttft_seconds"]["p50"] <= report["latency"]["ttft_seconds"]["p95"] < 5
    assert report["latency"]["tokens_per_second"]["p50"] > 0


class HangingUpOpenAI(StreamingOpenAI):
    """A plain chat completion whose connection closes after its headers and a few bytes of its
    announced body: an upstream that hangs up mid-answer (the gateway then closes the client's
    connection inside the body). Streams are answered whole."""

    def _reply(self, status: int, body: dict[str, object]) -> None:
        if self.command != "POST":
            super()._reply(status, body)
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:7])
        self.wfile.flush()
        self.close_connection = True


def test_an_answer_cut_short_behind_the_gateway_fails_its_check_and_says_so(tmp_path: Path, key_file: Path) -> None:
    """Through the real Caddy and the box's Caddyfile. Before: http.client read the rest of a cut
    Content-Length body as b"", and the chat check said "not a chat completion: " with nothing
    after it (seen on the example llama.cpp boxes in CI). Now it says the connection closed, and
    the checks after it still run."""
    with running_gateway("store-0001", tmp_path / "gw", HangingUpOpenAI) as gw:
        out = smoke_cli(gw.base, "--api-key-file", str(key_file), "--cacert", str(tmp_path / "gw" / "tls_cert"),
                        "--min-cert-days", "1", "--requests", "2", "--json")  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    found = checks(out)
    assert found["chat"]["status"] == "fail", found["chat"]
    assert "the connection closed" in found["chat"]["detail"] and "before its end" in found["chat"]["detail"], found["chat"]
    assert (found["stream"]["status"], found["burst"]["status"]) == ("pass", "pass"), found


class BrokenStreamOpenAI(StreamingOpenAI):
    """A chunked event stream that breaks off after its first event (no last chunk): what a
    gateway sends on when its upstream hangs up mid-stream. Plain answers are whole."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if not body.get("stream"):
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "whole"}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        event = b"data: " + json.dumps({"choices": [{"delta": {"content": "A "}}]}).encode() + b"\n\n"
        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.wfile.flush()
        self.close_connection = True


class EmptyChatOpenAI(StreamingOpenAI):
    """A whole 200 with no body for a plain chat completion: llama-server's answer when it thinks
    the client left while it generated (server-context.cpp, is_terminated)."""

    def _reply(self, status: int, body: dict[str, object]) -> None:
        if self.command != "POST":
            super()._reply(status, body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_stream_that_breaks_off_says_so_not_that_it_was_late() -> None:
    with serving(BrokenStreamOpenAI) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=2, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["chat"].status == "pass", found["chat"]
    assert found["stream"].status == "fail", found["stream"]
    assert "the stream: " in found["stream"].detail and "broke off" in found["stream"].detail, found["stream"]
    assert "within" not in found["stream"].detail and "within" not in found["burst"].detail, found


def test_an_empty_chat_answer_names_its_status_and_length() -> None:
    with serving(EmptyChatOpenAI) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=1, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["chat"].status == "fail"
    assert found["chat"].detail == "HTTP 200 with an empty body (Content-Length: 0): not a chat completion", found["chat"]


def test_internal_metrics_cut_short_fail_their_check_and_the_report_is_printed(key_file: Path) -> None:
    """Before: the cut answer's error escaped smoke as a traceback (no report at all)."""
    from tests.hostile import Hostile, serve

    metrics = b"".join(f"# TYPE m{i} counter\nm{i} 1\n".encode() for i in range(60))
    with serving(StreamingOpenAI) as address, serve(Hostile("cut-short", body=metrics, headers="")) as peer:
        out = smoke_cli(f"http://{address}", "--api-key-file", str(key_file), "--metrics-url", f"{peer.url}/metrics",
                        "--requests", "1", "--json")  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    found = checks(out)
    assert found["metrics-internal"]["status"] == "fail", found["metrics-internal"]
    assert "the connection closed" in found["metrics-internal"]["detail"], found["metrics-internal"]


def test_certificate_close_to_expiry_fails(live: tuple[str, Path], key_file: Path) -> None:
    url, cert = live  # the test certificate is valid for two days; the default asks for 14
    out = smoke_cli(url, "--api-key-file", str(key_file), "--cacert", str(cert), "--requests", "1", "--json")
    assert out.returncode == 1
    found = checks(out)
    assert found["tls"]["status"] == "fail" and "renew it: fewer than 14 days left" in found["tls"]["detail"]
    assert found["stream"]["status"] == "pass"  # the other checks still run


def test_smoke_table_and_internal_metrics(tmp_path: Path, key_file: Path) -> None:
    with running_gateway("kiosk-0003", tmp_path / "gw", StreamingOpenAI) as gw:
        cert = tmp_path / "gw" / "tls_cert"
        out = smoke_cli(
            gw.base,
            "--api-key-file",
            str(key_file),
            "--cacert",
            str(cert),
            "--min-cert-days",
            "1",
            "--requests",
            "2",
            "--metrics-url",
            gw.metrics,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "metrics-internal" in out.stdout and "metric families" in out.stdout
    assert out.stdout.rstrip().endswith("passed")


def test_smoke_through_the_kubernetes_gateway_config_with_a_model_prefix(tmp_path: Path, key_file: Path) -> None:
    """The Kubernetes gateway serves each model under /<name>/v1 over plain http (TLS ends at the
    ingress): the URL `pulumi stack output smoke` prints works as given."""
    from slm_deploy.gateway import caddyfile, route

    config = caddyfile("namespace slm", tls=False, port=8080, routes=[route("phi4mini", "phi4mini.slm:8000", prefix="/phi4mini")])
    with running_gateway("", tmp_path / "gw", StreamingOpenAI, config=config, upstream_vars=("SLM_UPSTREAM_PHI4MINI",)) as gw:
        base = gw.base.replace("https://", "http://")
        out = smoke_cli(f"{base}/phi4mini", "--api-key-file", str(key_file), "--requests", "2", "--json")
        unrouted = smoke_cli(f"{base}/other", "--api-key-file", str(key_file), "--requests", "1", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    found = checks(out)
    assert found["tls"]["status"] == "skip" and "plain http URL" in found["tls"]["detail"]
    assert {found[n]["status"] for n in ("auth", "models", "chat", "stream", "burst", "metrics")} == {"pass"}
    assert unrouted.returncode == 1 and checks(unrouted)["auth"]["status"] == "fail"


def test_wrong_key_fails_at_models_and_skips_the_calls(live: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = live
    wrong = tmp_path / "wrong"
    wrong.write_text("w" * 48)
    out = smoke_cli(url, "--api-key-file", str(wrong), "--cacert", str(cert), "--min-cert-days", "1", "--json")
    assert out.returncode == 1
    found = checks(out)
    assert found["tls"]["status"] == "pass" and found["auth"]["status"] == "pass"
    assert found["models"]["status"] == "fail" and "HTTP 401 (is the API key right?)" in found["models"]["detail"]
    assert {found[n]["status"] for n in ("chat", "stream", "burst")} == {"skip"}


def test_untrusted_certificate_fails_tls(live: tuple[str, Path], key_file: Path) -> None:
    url, _ = live
    out = smoke_cli(url, "--api-key-file", str(key_file), "--json")  # no --cacert: the self-signed cert is not trusted
    assert out.returncode == 1
    found = checks(out)
    assert found["tls"]["status"] == "fail" and "TLS certificate not trusted" in found["tls"]["detail"]
    assert found["auth"]["status"] == "skip"


def test_server_down_fails_fast(key_file: Path) -> None:
    port = free_port()  # nothing listens there
    start = time.monotonic()
    out = smoke_cli(f"https://127.0.0.1:{port}", "--api-key-file", str(key_file), "--timeout", "2")
    assert out.returncode == 1
    assert "connection refused" in out.stdout and out.stdout.rstrip().endswith("failed")
    assert time.monotonic() - start < 60


def test_slow_server_fails_within_the_timeout(tmp_path: Path, key_file: Path) -> None:
    with running_gateway("store-0001", tmp_path / "gw", SlowOpenAI) as gw:
        start = time.monotonic()
        result = run_smoke(gw.base, API_KEY, cacert=tmp_path / "gw" / "tls_cert", timeout=1.0, requests=2, min_cert_days=1)
        elapsed = time.monotonic() - start
    found = {c.name: c for c in result.checks}
    assert not result.passed
    assert found["models"].status == "pass"  # GET is fast; the completion is what is slow
    assert found["chat"].status == "fail" and "no complete answer within 1 s" in found["chat"].detail
    assert found["stream"].status == "skip" and found["burst"].status == "skip"
    assert elapsed < 15


def test_endpoint_without_auth_fails_the_auth_check(key_file: Path) -> None:
    with serving(StreamingOpenAI) as address:
        out = smoke_cli(f"http://{address}", "--api-key-file", str(key_file), "--requests", "1", "--json")
    assert out.returncode == 1
    found = checks(out)
    assert found["tls"]["status"] == "skip"
    assert found["auth"]["status"] == "fail" and "got 200 and 200" in found["auth"]["detail"]
    assert found["chat"]["status"] == "pass" and found["stream"]["status"] == "pass"


def test_bad_inputs_are_one_error_line(tmp_path: Path) -> None:
    missing = smoke_cli("https://127.0.0.1:9", "--api-key-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    key = tmp_path / "key"
    key.write_text("k" * 40)
    bad_url = smoke_cli("ftp://box", "--api-key-file", str(key))
    assert bad_url.returncode == 2 and bad_url.stderr == "error: arguments: URL: 'ftp://box' is not an http(s) URL\n"


def test_percentiles_are_nearest_rank_and_tokens_per_second_is_decode_speed() -> None:
    assert percentile([0.4, 0.1, 0.3, 0.2], 50) == 0.2
    assert percentile([0.4, 0.1, 0.3, 0.2], 95) == 0.4
    assert StreamResult(ttft=0.5, total=1.5, tokens=11, text="").tokens_per_second == 10.0


def test_bundle_readme_and_stack_outputs_print_the_smoke_command() -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.preview import run_preview
    from tests.test_gateway_live import FLEET

    (bundle,) = build_fleet(FLEET, tuple(b for b in FLEET.boxes if b.id == "kiosk-0003"))
    readme = bundle.files["README.md"].decode()
    assert (
        'sudo "$(command -v slm-deploy)" smoke https://localhost:8443 --api-key-file secrets/api_key --cacert gateway/tls_cert.pem'
        in readme
    )
    outputs = run_preview("prod", ROOT).outputs
    assert outputs["smoke"] == [
        "slm-deploy smoke https://llm.example.com/phi4mini --api-key-file api_key",
        "slm-deploy smoke https://llm.example.com/qwen3-8b --api-key-file api_key",
    ]


class ThinkingOpenAI(StreamingOpenAI):
    """A reasoning model (Qwen3 on llama.cpp's default reasoning format, Ollama, vLLM with a reasoning
    parser): within a small max_tokens everything it generates is reasoning, sent apart from the
    content (llama.cpp and vLLM: `reasoning_content`; Ollama: `reasoning`), and the content is empty."""

    field = "reasoning_content"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, self.field: "".join(self.words)}
            self._reply(200, {"choices": [{"message": message, "finish_reason": "length"}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for word in self.words:
            self.wfile.write(b"data: " + json.dumps({"choices": [{"delta": {self.field: word}}]}).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


class ThinkingOllama(ThinkingOpenAI):
    field = "reasoning"


@pytest.mark.parametrize("handler", [ThinkingOpenAI, ThinkingOllama])
def test_a_reasoning_model_that_only_thought_within_max_tokens_passes(handler: type[ThinkingOpenAI]) -> None:
    with serving(handler) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=2, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["chat"].status == "pass" and "reasoning" in found["chat"].detail, found["chat"]
    assert found["stream"].status == "pass" and f"{len(handler.words)} tokens" in found["stream"].detail, found["stream"]
    assert found["burst"].status == "pass", found["burst"]


class ScriptedOpenAI(StreamingOpenAI):
    """Streams `events` (each an SSE data field as sent), then [DONE]."""

    events: tuple[bytes, ...] = ()

    def stream(self) -> None:
        self.wfile.write(b"".join(b"data: " + event + b"\n\n" for event in self.events) + b"data: [DONE]\n\n")


class ErroringOpenAI(ScriptedOpenAI):
    """Streams a little, then an error event, then [DONE]: what vLLM and llama.cpp send when
    generation fails mid-stream (the HTTP status is already 200)."""

    events = (
        json.dumps({"choices": [{"delta": {"content": "A "}}]}).encode(),
        json.dumps({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}}).encode(),
    )


def test_an_error_event_in_the_stream_fails_the_stream_check() -> None:
    with serving(ErroringOpenAI) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=1, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["stream"].status == "fail" and "CUDA out of memory" in found["stream"].detail, found["stream"]


def test_the_burst_reports_the_slow_tail_of_tokens_per_second() -> None:
    """For latency the bad tail is the high one (TTFT p95); for decode speed it is the low one. A p95
    of tokens/s is the fastest stream, so it hid one slow stream among fast ones."""
    from slm_deploy.smoke import burst_latency

    fast = [StreamResult(ttft=0.1, total=1.1, tokens=101, text="") for _ in range(19)]  # 100 tokens/s
    slow = StreamResult(ttft=2.0, total=12.0, tokens=11, text="")  # 1 token/s
    latency = burst_latency([*fast, slow], requests=20)
    assert latency["ttft_seconds"] == {"p50": 0.1, "p95": 0.1}
    assert latency["tokens_per_second"] == {"p50": 100.0, "p5": 1.0}


class GarbledOpenAI(ScriptedOpenAI):
    events = (b"{not json",)


class ListEventOpenAI(ScriptedOpenAI):
    events = (b"[1, 2]",)


@pytest.mark.parametrize(
    ("handler", "detail"),
    [
        (GarbledOpenAI, "an SSE event is not JSON: {not json"),
        (ListEventOpenAI, "an SSE event is not a JSON object: [1, 2]"),
    ],
)
def test_an_event_that_is_not_a_json_object_fails_the_stream_check(handler: type[ScriptedOpenAI], detail: str) -> None:
    with serving(handler) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=1, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["stream"].status == "fail" and detail in found["stream"].detail, found["stream"]


class NestedModelsOpenAI(StreamingOpenAI):
    """A /v1/models answer nested beyond the JSON parser's recursion limit."""

    def do_GET(self) -> None:
        data = b"[" * 200_000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_models_answer_nested_too_deeply_fails_the_models_check_only() -> None:
    """The peer's answer is the fault: the models check fails and names it, the run reports the
    rest, and no error ends the whole smoke run (before: `error: input: nested too deeply`)."""
    with serving(NestedModelsOpenAI) as address:
        result = run_smoke(f"http://{address}", API_KEY, requests=1, timeout=10)
    found = {c.name: c for c in result.checks}
    assert found["models"].status == "fail" and "not an OpenAI model list" in found["models"].detail, found["models"]
    assert not result.passed
