"""`slm-deploy smoke URL`: test a deployed endpoint the way an operator would after `up`.

TLS and its certificate, 401 without the key (and with a wrong one), the model list, one chat
completion without and one with streaming (SSE), then a short bounded burst of streamed
completions for time to first token (p50/p95) and tokens/s (p50/p5), and the metrics endpoint: refused at
the gateway, served on the internal metrics address when one is given and reachable.

Every request has a timeout and every stream a deadline, so a slow or dead server fails in
bounded time. Only the standard library talks HTTP, so nothing here depends on a client package.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.netclient import Client, CutShort, NetError, Stream, Watchdog, command_deadline
from slm_deploy.netclient import Unreachable as NoAnswer
from slm_deploy.safejson import NotAJsonObject, json_object
from slm_deploy.safeyaml import read_bytes

PROMPT = "Reply with one short sentence: what is a smoke test?"
CERT_MIN_DAYS = 14  # default: a certificate closer than this to expiry fails the check
BURST_PARALLEL = 4  # the burst's concurrency; the burst stays short whatever --requests says
WRONG_KEY = "slm-smoke-wrong-key-" + "0" * 32
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_CA_FILE_BYTES = 4 * 1024 * 1024  # a CA bundle (Mozilla's holds ~150 certificates in ~220 KB)
MAX_BODY_BYTES = 1_000_000  # what is read of a plain answer (a model list, a completion, an error)
MAX_SSE_LINE = 1024 * 1024  # one event of a stream: a token's delta, a few hundred bytes
MAX_STREAM_BYTES = 64 * 1024 * 1024
PASS, FAIL, SKIP = "pass", "fail", "skip"
# Where OpenAI-compatible servers put a reasoning model's thinking, apart from `content`: llama.cpp
# (--reasoning-format deepseek) and vLLM (--reasoning-parser) `reasoning_content`, Ollama
# `reasoning`. Within a short max_tokens a thinking model may send nothing else; those tokens are
# generated tokens all the same (time to first token, tokens/s).
REASONING_FIELDS = ("reasoning_content", "reasoning")


def _generated(part: dict[str, Any]) -> tuple[str, str]:
    """(content, reasoning) of a message or a stream delta."""
    content = part.get("content")
    reasoning = next((part[f] for f in REASONING_FIELDS if isinstance(part.get(f), str) and part[f]), "")
    return (content if isinstance(content, str) else ""), reasoning


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, fail, skip
    detail: str


@dataclass
class SmokeReport:
    url: str
    model: str | None = None
    checks: list[Check] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "passed": self.passed,
            "checks": [vars(c) for c in self.checks],
            "latency": self.latency,
        }


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class StreamResult:
    ttft: float  # seconds to the first content token
    total: float  # seconds to the end of the stream
    tokens: int  # completion tokens (the server's usage when it reports it, else content chunks)
    text: str

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token (the whole stream when only one token came)."""
        span = self.total - self.ttft
        if self.tokens > 1 and span > 0:
            return (self.tokens - 1) / span
        return self.tokens / self.total if self.total > 0 else 0.0


class Unreachable(Exception):
    """The endpoint did not answer (refused, timed out, TLS failed): later checks are skipped."""


def read_api_key(path: Path) -> str:
    # A regular file only (a FIFO is refused, never waited on), and small: a key is one line.
    data = read_bytes(path, str(path), MAX_KEY_FILE_BYTES)
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(str(path), "api key", "not UTF-8 text") from None
    if not key or any(c.isspace() for c in key):
        raise InputError(str(path), "api key", "the file must hold one key on one line")
    return key


class Endpoint:
    def __init__(self, url: str, cacert: Path | None, timeout: float, address: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError("arguments", "URL", f"{url!r} is not an http(s) URL")
        if parsed.query or parsed.fragment:
            raise InputError("arguments", "URL", "give the base URL without a query or fragment")
        try:
            port = parsed.port
        except ValueError:
            raise InputError("arguments", "URL", f"{url!r} has a bad port") from None
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname
        self.port = port or (443 if self.https else 80)
        self.origin = f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}"
        # The base path (e.g. /phi4mini on a shared gateway) comes before /v1/...
        self.base = parsed.path.rstrip("/").removesuffix("/v1")
        self.timeout = timeout
        self.address = address  # connect here instead of resolving host (a load balancer, a container)
        self.context: ssl.SSLContext | None = None
        if self.https:
            pem = read_bytes(cacert, str(cacert), MAX_CA_FILE_BYTES).decode("ascii", "replace") if cacert else None
            try:
                self.context = ssl.create_default_context(cadata=pem)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise InputError(str(cacert), "cacert", f"not a readable PEM certificate ({exc.__class__.__name__})") from None
        # Every request and stream ends within `timeout` seconds (and the command's deadline),
        # whatever pace the server sends at (slm_deploy/netclient.py).
        self.client = Client(
            "endpoint",
            timeout=timeout,
            deadline=command_deadline(),
            context=self.context,
            connect_to=address,
            use_proxies=False,
        )

    def request(self, method: str, path: str, key: str | None = None, body: Any = None) -> Response:
        headers = {"Accept": "application/json"}
        data = None
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            with self.client.open(method, self.origin + self.base + path, headers, data) as answer:
                payload = answer.read(MAX_BODY_BYTES, truncate=True)  # a model list, a completion: kilobytes
                return Response(answer.status, payload, answer.headers)
        except CutShort as exc:  # this answer failed; the endpoint answers, so the next checks run
            raise StreamError(exc.message) from None
        except NetError as exc:
            raise Unreachable(exc.message) from None

    def stream_chat(self, key: str, model: str, max_tokens: int) -> StreamResult:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "text/event-stream"}
        start = time.monotonic()
        try:
            with self.client.open(
                "POST", self.origin + self.base + "/v1/chat/completions", headers, json.dumps(body).encode()
            ) as answer:
                if answer.status != 200:
                    raise StreamError(f"HTTP {answer.status}: {_snippet(answer.read(MAX_BODY_BYTES, truncate=True))}")
                if "text/event-stream" not in answer.header("Content-Type"):
                    raise StreamError(f"Content-Type {answer.header('Content-Type')!r}, not text/event-stream")
                return _read_sse(answer, start, self.timeout)
        except NetError as exc:
            raise Unreachable(exc.message) from None


class StreamError(Exception):
    pass


def _read_sse(answer: Stream, start: float, timeout: float) -> StreamResult:
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    text: list[str] = []
    done = False
    try:
        # An event line is at most a few KB (one token's delta); a line without end or a stream
        # without end is cut off, so memory stays bounded.
        for line in answer.lines(MAX_SSE_LINE, MAX_STREAM_BYTES):
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                event = json_object(data)
            except NotAJsonObject as exc:
                raise StreamError(f"an SSE event is {exc}: {_snippet(data)}") from None
            if event.get("error"):
                # A failure after the 200 status line (vLLM, llama.cpp): an error event, then [DONE].
                error = event["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise StreamError(f"the server sent an error in the stream: {_snippet(str(message).encode())}")
            usage = event.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int) and usage["completion_tokens"] >= 0:
                usage_tokens = usage["completion_tokens"]
            choices = event.get("choices") or []
            for choice in choices if isinstance(choices, list) else []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                content, reasoning = _generated(delta if isinstance(delta, dict) else {})
                if content or reasoning:
                    if first is None:
                        first = time.monotonic() - start
                    chunks += 1
                    text.append(content)
    except CutShort as exc:  # before NoAnswer, whose kind it is: the stream broke off, it was not late
        raise StreamError(f"the stream: {exc.message}") from None
    except NoAnswer:
        raise StreamError(f"stream not finished within {timeout:g} s") from None
    except NetError as exc:
        raise StreamError(f"the stream {exc.message}") from None
    if not done:
        raise StreamError("the stream ended without `data: [DONE]`")
    if first is None:
        raise StreamError("the stream carried no content (nor reasoning)")
    return StreamResult(first, time.monotonic() - start, usage_tokens or chunks, "".join(text))


def _snippet(data: bytes, size: int = 120) -> str:
    text = data.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text if len(text) <= size else text[: size - 3] + "..."


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was measured)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------


def run_smoke(
    url: str,
    api_key: str,
    *,
    cacert: Path | None = None,
    model: str | None = None,
    requests: int = 8,
    max_tokens: int = 32,
    timeout: float = 30.0,
    metrics_url: str | None = None,
    min_cert_days: int = CERT_MIN_DAYS,
    connect_to: str | None = None,
) -> SmokeReport:
    endpoint = Endpoint(url, cacert, timeout, connect_to)
    report = SmokeReport(url=url)
    add = report.checks.append
    steps: list[tuple[str, Callable[[], tuple[str, str]]]] = [
        ("tls", lambda: _check_tls(endpoint, min_cert_days)),
        ("auth", lambda: _check_auth(endpoint, api_key)),
        ("models", lambda: _check_models(endpoint, api_key, model, report)),
        ("chat", lambda: _check_chat(endpoint, api_key, report)),
        ("stream", lambda: _check_stream(endpoint, api_key, report, max_tokens)),
        ("burst", lambda: _check_burst(endpoint, api_key, report, requests, max_tokens)),
        ("metrics", lambda: _check_metrics(endpoint, api_key)),
    ]
    unreachable: str | None = None
    for name, step in steps:
        if unreachable is not None:
            add(Check(name, SKIP, f"endpoint unreachable ({unreachable})"))
            continue
        if name in ("chat", "stream", "burst") and report.model is None:
            add(Check(name, SKIP, "no model to call (the models check failed)"))
            continue
        try:
            status, detail = step()
        except Unreachable as exc:
            unreachable = str(exc)
            status, detail = FAIL, str(exc)
        except StreamError as exc:
            status, detail = FAIL, str(exc)
        add(Check(name, status, detail))
    if metrics_url is not None:
        add(_check_internal_metrics(metrics_url, cacert, timeout))
    return report


def _check_tls(endpoint: Endpoint, min_days: int) -> tuple[str, str]:
    if not endpoint.https:
        return SKIP, "plain http URL: TLS terminates in front of this address"
    assert endpoint.context is not None
    seconds = endpoint.timeout
    try:
        raw = socket.create_connection((endpoint.address or endpoint.host, endpoint.port), timeout=seconds)
    except OSError as exc:
        raise Unreachable(endpoint.client.failure(exc, endpoint.host, None, seconds).message) from None
    tls = endpoint.context.wrap_socket(raw, server_hostname=endpoint.host, do_handshake_on_connect=False)
    watchdog = Watchdog(tls, seconds)  # a handshake sent one byte a second still ends in time
    try:
        with tls:
            tls.do_handshake()
            cert = tls.getpeercert() or {}
            version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        raise Unreachable(endpoint.client.failure(exc, endpoint.host, watchdog, seconds).message) from None
    finally:
        watchdog.cancel()
    expires = ssl.cert_time_to_seconds(str(cert.get("notAfter")))
    days = math.floor((expires - time.time()) / 86400)
    subject = ", ".join(f"{pair[0]}={pair[1]}" for rdn in cert.get("subject", ()) for pair in rdn)
    detail = f"{version}, certificate {subject or 'without subject'} valid for {days} more days"
    if days < min_days:
        return FAIL, f"{detail} (renew it: fewer than {min_days} days left)"
    return PASS, detail


def _check_auth(endpoint: Endpoint, key: str) -> tuple[str, str]:
    without = endpoint.request("GET", "/v1/models")
    wrong = endpoint.request("GET", "/v1/models", key=WRONG_KEY if key != WRONG_KEY else WRONG_KEY + "x")
    if without.status != 401 or wrong.status != 401:
        return FAIL, f"expected 401 without a key and with a wrong key, got {without.status} and {wrong.status}"
    return PASS, "401 without a key and with a wrong key"


def _check_models(endpoint: Endpoint, key: str, wanted: str | None, report: SmokeReport) -> tuple[str, str]:
    resp = endpoint.request("GET", "/v1/models", key=key)
    if resp.status != 200:
        hint = " (is the API key right?)" if resp.status == 401 else ""
        return FAIL, f"GET /v1/models: HTTP {resp.status}{hint}: {_snippet(resp.body)}"
    try:
        ids = [str(m["id"]) for m in json_object(resp.body)["data"]]
    except (ValueError, KeyError, TypeError):
        return FAIL, f"GET /v1/models: not an OpenAI model list: {_snippet(resp.body)}"
    if not ids:
        return FAIL, "GET /v1/models: no models listed"
    if wanted is not None and wanted not in ids:
        return FAIL, f"model {wanted!r} is not listed (listed: {', '.join(ids)})"
    report.model = wanted or ids[0]
    return PASS, f"{len(ids)} listed: {', '.join(ids)}"


def _check_chat(endpoint: Endpoint, key: str, report: SmokeReport) -> tuple[str, str]:
    assert report.model is not None
    body = {"model": report.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}
    start = time.monotonic()
    resp = endpoint.request("POST", "/v1/chat/completions", key=key, body=body)
    elapsed = time.monotonic() - start
    if resp.status != 200:
        return FAIL, f"HTTP {resp.status}: {_snippet(resp.body)}"
    try:
        message = json_object(resp.body)["choices"][0]["message"]
        content, reasoning = _generated(message)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        if not resp.body.strip():
            # A whole answer with nothing in it: llama-server sends this when it thinks the client
            # left while it generated (server-context.cpp, is_terminated: status 200, no data).
            length = resp.headers.get("content-length", "none")
            return FAIL, f"HTTP 200 with an empty body (Content-Length: {length}): not a chat completion"
        return FAIL, f"not a chat completion: {_snippet(resp.body)}"
    if content.strip():
        return PASS, f"{elapsed:.2f} s: {_snippet(content.encode(), 60)!r}"
    if reasoning.strip():
        return PASS, f"{elapsed:.2f} s: reasoning only (max_tokens spent thinking): {_snippet(reasoning.encode(), 60)!r}"
    return FAIL, "the completion is empty"


def _check_stream(endpoint: Endpoint, key: str, report: SmokeReport, max_tokens: int) -> tuple[str, str]:
    assert report.model is not None
    result = endpoint.stream_chat(key, report.model, max_tokens)
    return PASS, f"first token after {result.ttft:.2f} s, {result.tokens} tokens in {result.total:.2f} s"


def _check_burst(endpoint: Endpoint, key: str, report: SmokeReport, requests: int, max_tokens: int) -> tuple[str, str]:
    model = report.model
    assert model is not None

    def one(_: int) -> StreamResult | str:
        try:
            return endpoint.stream_chat(key, model, max_tokens)
        except (Unreachable, StreamError) as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=min(BURST_PARALLEL, requests)) as pool:
        results = list(pool.map(one, range(requests)))
    good = [r for r in results if isinstance(r, StreamResult)]
    errors = [r for r in results if isinstance(r, str)]
    if good:
        report.latency = burst_latency(good, requests)
    summary = f"{len(good)}/{requests} ok ({min(BURST_PARALLEL, requests)} at a time)"
    if good:
        ttft_pct, speed_pct = report.latency["ttft_seconds"], report.latency["tokens_per_second"]
        summary += f"; TTFT p50 {ttft_pct['p50']:.2f} s, p95 {ttft_pct['p95']:.2f} s"
        summary += f"; tokens/s p50 {speed_pct['p50']:.1f}, p5 {speed_pct['p5']:.1f}"
    if errors:
        return FAIL, f"{summary}; first error: {errors[0]}"
    return PASS, summary


def burst_latency(good: list[StreamResult], requests: int) -> dict[str, Any]:
    """Each measure's bad tail: time to first token p95 (slow to start), decode speed p5 (slow to
    generate; its p95 would be the fastest stream)."""
    ttft = [r.ttft for r in good]
    speed = [r.tokens_per_second for r in good]
    return {
        "requests": requests,
        "parallel": min(BURST_PARALLEL, requests),
        "succeeded": len(good),
        "ttft_seconds": {"p50": round(percentile(ttft, 50), 4), "p95": round(percentile(ttft, 95), 4)},
        "tokens_per_second": {"p50": round(percentile(speed, 50), 2), "p5": round(percentile(speed, 5), 2)},
    }


def _check_metrics(endpoint: Endpoint, key: str) -> tuple[str, str]:
    """The runtime's and the gateway's metrics must not be served on the public address."""
    resp = endpoint.request("GET", "/metrics", key=key)
    if resp.status in (403, 404):
        return PASS, f"/metrics refused at the gateway (HTTP {resp.status})"
    if resp.status == 200 and b"# TYPE" in resp.body:
        return FAIL, "/metrics is served on the public address: keep it on the internal network"
    return PASS, f"/metrics not served on the public address (HTTP {resp.status})"


def _check_internal_metrics(url: str, cacert: Path | None, timeout: float) -> Check:
    endpoint = Endpoint(url, cacert, timeout)
    try:
        resp = endpoint.request("GET", "")
    except (Unreachable, StreamError) as exc:
        return Check("metrics-internal", FAIL, f"{url}: {exc}")
    if resp.status != 200:
        return Check("metrics-internal", FAIL, f"{url}: HTTP {resp.status}")
    families = sum(1 for line in resp.body.splitlines() if line.startswith(b"# TYPE "))
    if not families:
        return Check("metrics-internal", FAIL, f"{url}: no Prometheus metrics in the answer")
    return Check("metrics-internal", PASS, f"{url}: {families} metric families")
