"""Stand-ins for the servers Debian does not carry, for the live compose test only.

One file, several programs (chosen by the first argument). Each speaks what the bundle and its
operator use (the OpenAI API, Ollama's native API, the real `/metrics` names, Grafana's health and
login page, Open WebUI's health and auth), and reproduces the start-up behaviour of the real image
that the bundle depends on. None of them makes an outbound connection: model downloads are
simulated by writing files where the real program would.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

STATS = {"prompt": 0, "generation": 0, "requests": 0, "running": 0}
LOCK = threading.Lock()


def log(msg: str) -> None:
    print(f"[standin {sys.argv[1] if len(sys.argv) > 1 else '?'}] {msg}", flush=True)


def die(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr, flush=True)
    sys.exit(code)


def arg(args: list[str], name: str, default: str | None = None) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def completion(model: str, body: dict) -> dict:
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) + 1
    text = "stand-in reply"
    with LOCK:
        STATS["prompt"] += prompt_tokens
        STATS["generation"] += 2
        STATS["requests"] += 1
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2}
    if "messages" in body:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    return {
        "id": "cmpl-standin",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": usage,
    }


def stream_events(reply: dict) -> bytes:
    """The same completion as OpenAI-style server-sent events (`stream: true`), as vLLM, Ollama's
    /v1 and llama-server send them: one chunk per word, a last chunk with finish_reason, [DONE]."""
    chat = reply["object"] == "chat.completion"
    text = reply["choices"][0]["message"]["content"] if chat else reply["choices"][0]["text"]
    kind = "chat.completion.chunk" if chat else "text_completion"
    words = text.split(" ")
    events = []
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
        events.append(
            {
                "id": reply["id"],
                "object": kind,
                "created": 0,
                "model": reply["model"],
                "choices": [{**choice, "finish_reason": None}],
            }
        )
    last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
    events.append(
        {"id": reply["id"], "object": kind, "created": 0, "model": reply["model"], "choices": [{**last, "finish_reason": "stop"}]}
    )
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


class Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        pass

    def send(self, code: int, body: object, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply(self, model: str, body: dict) -> None:
        """A completion, streamed when the request asks for it."""
        answer = completion(model, body)
        if body.get("stream"):
            # A stream is the whole connection's last response: the end of the stream is the end
            # of the connection (no keep-alive reuse behind the gateway mid-stream).
            data = stream_events(answer)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send(200, answer)

    def body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return {}

    def dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        for (m, prefix), fn in self.routes.items():
            if m == method and (path == prefix or (prefix.endswith("*") and path.startswith(prefix[:-1]))):
                fn(self, path)
                return
        self.send(404, {"error": "not found"})

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_HEAD(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")


def serve(host_port: str, routes: dict) -> None:
    host, _, port = host_port.rpartition(":")
    handler = type("H", (Handler,), {"routes": routes})
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), handler)
    log(f"listening on {host_port}")
    server.serve_forever()


def histogram(name: str, labels: str, count: int) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    for le in ("0.1", "0.5", "1.0", "+Inf"):
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {count}')
    lines += [f"{name}_sum{{{labels}}} {count * 0.05}", f"{name}_count{{{labels}}} {count}"]
    return lines


# ---------------------------------------------------------------- vLLM
def vllm(args: list[str]) -> None:
    if not args or args[0] != "serve":
        die("usage: vllm serve MODEL [options]", 2)
    args = args[1:]
    # torch resolves its inductor cache directory with getpass.getuser() while vLLM imports it;
    # without USER/LOGNAME and without a passwd entry for the uid that raises KeyError.
    user = getpass.getuser()
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or f"/tmp/torchinductor_{user}"
    triton = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    model = args[0]
    served = arg(args, "--served-model-name", model)
    quant = arg(args, "--quantization")
    if quant not in (None, "awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes"):
        die(f"ValueError: Unknown quantization method: {quant}")
    if model.startswith("/"):
        if not (Path(model) / "config.json").is_file():
            die(f"OSError: {model} does not appear to have a file named config.json")
    else:
        hub = Path(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))) / "hub"
        snap = hub / ("models--" + model.replace("/", "--")) / "snapshots"
        if not list(snap.glob("*/config.json")):
            die(
                f"OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files ({snap})."
            )
    # Compiled Triton kernels are shared objects written to the cache, then loaded: a noexec
    # mount makes the loader fail ("failed to map segment from shared object").
    for d in (inductor, triton):
        os.makedirs(d, exist_ok=True)
    import ctypes
    import glob

    kernel = os.path.join(triton, "standin_kernel.so")
    shutil.copyfile(sorted(glob.glob("/usr/lib/python3*/lib-dynload/*.so"))[0], kernel)
    try:
        ctypes.CDLL(kernel)
    except OSError as exc:
        die(f"ImportError: {exc}")
    port = arg(args, "--port", "8000")
    log(f"serving {served} (quantization {quant})")

    def models(h: Handler, _: str) -> None:
        h.send(200, {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "vllm"}]})

    def chat(h: Handler, _: str) -> None:
        h.reply(served, h.body())

    def metrics(h: Handler, _: str) -> None:
        labels = f'model_name="{served}",engine="0"'
        with LOCK:
            s = dict(STATS)
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} 0",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} 0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} 0.01",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{labels}}} {s['prompt']}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {s['generation']}",
            "# TYPE vllm:num_preemptions_total counter",
            f"vllm:num_preemptions_total{{{labels}}} 0",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{{labels},finished_reason="stop"}} {s["requests"]}',
        ]
        for name in (
            "vllm:time_to_first_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:request_queue_time_seconds",
        ):
            lines += histogram(name, labels, s["requests"])
        h.send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

    serve(
        f"{arg(args, '--host', '0.0.0.0')}:{port}",
        {
            ("GET", "/health"): lambda h, p: h.send(200, b""),
            ("GET", "/v1/models"): models,
            ("POST", "/v1/chat/completions"): chat,
            ("POST", "/v1/completions"): chat,
            ("GET", "/metrics"): metrics,
            ("POST", "/tokenize"): lambda h, p: h.send(200, {"tokens": [1, 2]}),
        },
    )


# ---------------------------------------------------------------- Hugging Face download (vLLM image)
def hf_snapshot(repo: str) -> str:
    """What huggingface_hub.snapshot_download leaves in HF_HOME, without the network."""
    token_path = os.environ.get("HF_TOKEN_PATH")
    token = os.environ.get("HF_TOKEN") or (
        Path(token_path).read_text().strip() if token_path and os.path.exists(token_path) else ""
    )
    gated = set(filter(None, os.environ.get("STANDIN_GATED_REPOS", "meta-llama/Llama-3.2-3B-Instruct").split(",")))
    if repo in gated and not token.startswith("hf_"):
        raise PermissionError(
            f"401 Client Error: Unauthorized for url: https://huggingface.co/api/models/{repo} (gated repo: access requires a token)"
        )
    hub = Path(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))) / "hub"
    snap = hub / ("models--" + repo.replace("/", "--")) / "snapshots" / "0000000000000000000000000000000000000000"
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "config.json").write_text(json.dumps({"_name_or_path": repo}))
    (snap / "model.safetensors").write_bytes(b"\0" * 1024)
    return str(snap)


# ---------------------------------------------------------------- llama.cpp
def llamacpp(args: list[str]) -> None:
    model = arg(args, "-m") or arg(args, "--model")
    if not model or not os.path.isfile(model):
        die(f"error: failed to open GGUF file '{model}'")
    with open(model, "rb") as f:
        if f.read(4) != b"GGUF":
            die(f"gguf_init_from_file: invalid magic characters in '{model}'")
    alias = arg(args, "--alias", os.path.basename(model))

    def metrics(h: Handler, _: str) -> None:
        if "--metrics" not in args:
            h.send(501, {"error": "metrics disabled"})
            return
        with LOCK:
            s = dict(STATS)
        lines = [
            "# TYPE llamacpp:prompt_tokens_total counter",
            f"llamacpp:prompt_tokens_total {s['prompt']}",
            "# TYPE llamacpp:tokens_predicted_total counter",
            f"llamacpp:tokens_predicted_total {s['generation']}",
            "# TYPE llamacpp:n_decode_total counter",
            f"llamacpp:n_decode_total {s['requests']}",
            "# TYPE llamacpp:requests_processing gauge",
            "llamacpp:requests_processing 0",
            "# TYPE llamacpp:requests_deferred gauge",
            "llamacpp:requests_deferred 0",
            "# TYPE llamacpp:kv_cache_usage_ratio gauge",
            "llamacpp:kv_cache_usage_ratio 0.01",
            "# TYPE llamacpp:prompt_tokens_seconds gauge",
            "llamacpp:prompt_tokens_seconds 100",
            "# TYPE llamacpp:predicted_tokens_seconds gauge",
            "llamacpp:predicted_tokens_seconds 20",
        ]
        h.send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

    serve(
        f"{arg(args, '--host', '127.0.0.1')}:{arg(args, '--port', '8080')}",
        {
            ("GET", "/health"): lambda h, p: h.send(200, {"status": "ok"}),
            ("GET", "/v1/models"): lambda h, p: h.send(200, {"object": "list", "data": [{"id": alias, "object": "model"}]}),
            ("POST", "/v1/chat/completions"): lambda h, p: h.reply(alias, h.body()),
            ("POST", "/v1/completions"): lambda h, p: h.reply(alias, h.body()),
            ("GET", "/metrics"): metrics,
        },
    )


# ---------------------------------------------------------------- Ollama
# Tags the stand-in "registry" knows; anything else fails like ollama.com does.
PUBLISHED = set(filter(None, os.environ.get("STANDIN_OLLAMA_TAGS", "").split(",")))


def ollama_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS", os.path.expanduser("~/.ollama/models")))


def manifest(name: str) -> Path:
    repo, _, tag = name.partition(":")
    return ollama_dir() / "manifests" / "registry.ollama.ai" / "library" / repo / (tag or "latest")


def installed() -> list[str]:
    base = ollama_dir() / "manifests" / "registry.ollama.ai" / "library"
    return sorted(f"{p.parent.name}:{p.name}" for p in base.glob("*/*") if p.is_file())


def ollama_client(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    import http.client

    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").replace("0.0.0.0", "127.0.0.1")
    h, _, p = host.rpartition(":")
    conn = http.client.HTTPConnection(h, int(p), timeout=30)
    conn.request(method, path, body=json.dumps(body or {}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    try:
        return resp.status, json.loads(data or b"{}")
    except ValueError:
        return resp.status, {}


def ollama(args: list[str]) -> None:
    cmd = args[0] if args else "serve"
    if cmd == "serve":
        # The server creates its identity key pair in $HOME/.ollama at start.
        keydir = Path(os.path.expanduser("~/.ollama"))
        keydir.mkdir(parents=True, exist_ok=True)
        key = keydir / "id_ed25519"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"standin-private-key\n")
            os.close(fd)
        ollama_dir().mkdir(parents=True, exist_ok=True)

        def pull(h: Handler, _: str) -> None:
            name = h.body().get("model") or h.body().get("name", "")
            if name not in PUBLISHED:
                h.send(500, {"error": "pull model manifest: file does not exist"})
                return
            m = manifest(name)
            m.parent.mkdir(parents=True, exist_ok=True)
            m.write_text(json.dumps({"schemaVersion": 2, "pulled": True}))
            with open(ollama_dir() / "pulls.log", "a") as f:
                f.write(name + "\n")
            h.send(200, {"status": "success"})

        def create(h: Handler, _: str) -> None:
            body = h.body()
            frm = body.get("from", "")
            if frm and not manifest(frm).exists():
                h.send(404, {"error": f"model '{frm}' not found"})
                return
            m = manifest(body.get("model") or body.get("name", ""))
            m.parent.mkdir(parents=True, exist_ok=True)
            m.write_text(json.dumps({"schemaVersion": 2, "from": frm}))
            h.send(200, {"status": "success"})

        def tags(h: Handler, _: str) -> None:
            h.send(200, {"models": [{"name": n, "model": n} for n in installed()]})

        def show(h: Handler, _: str) -> None:
            name = h.body().get("model") or h.body().get("name", "")
            if not manifest(name).exists() and not manifest(name + ":latest").exists():
                h.send(404, {"error": f"model '{name}' not found"})
            else:
                h.send(200, {"modelfile": "", "details": {}})

        loaded: set[str] = set()

        def load(name: str) -> None:
            """Ollama loads a model on its first request and logs its memory summary (ml/device.go:201-239,
            llm/server.go:588 at v0.12.6): the KV cache is context x parallel x the model's bytes per token,
            which real Ollama reads from the GGUF and the stand-in from STANDIN_OLLAMA_KV_BYTES_PER_TOKEN (f16)."""
            per_token = os.environ.get("STANDIN_OLLAMA_KV_BYTES_PER_TOKEN")
            if name in loaded or not per_token:
                return
            loaded.add(name)
            # ggml type sizes per element relative to f16: q8_0 34 bytes per 32, q4_0 18 per 32.
            factor = {"q8_0": 34 / 64, "q4_0": 18 / 64}.get(os.environ.get("OLLAMA_KV_CACHE_TYPE", "f16"), 1.0)
            ctx = int(os.environ.get("OLLAMA_CONTEXT_LENGTH", "4096")) * int(os.environ.get("OLLAMA_NUM_PARALLEL", "1"))
            size = ctx * int(per_token) * factor / 2**20
            for msg in ("kv cache", "total memory"):
                extra = " device=CPU" if msg != "total memory" else ""
                print(
                    f'time=2026-01-01T00:00:00.000Z level=INFO source=device.go:222 msg="{msg}"{extra} size="{size:.1f} MiB"',
                    file=sys.stderr,
                    flush=True,
                )

        def chat(h: Handler, _: str) -> None:
            body = h.body()
            name = body.get("model", "")
            if name not in installed() and f"{name}:latest" not in installed():
                h.send(404, {"error": {"message": f'model "{name}" not found, try pulling it first'}})
                return
            load(name)
            h.reply(name, body)

        def native_chat(h: Handler, _: str) -> None:
            body = h.body()
            load(body.get("model", ""))
            h.send(200, {"model": body.get("model"), "message": {"role": "assistant", "content": "stand-in reply"}, "done": True})

        serve(
            os.environ.get("OLLAMA_HOST", "127.0.0.1:11434"),
            {
                ("GET", "/"): lambda h, p: h.send(200, "Ollama is running", "text/plain"),
                ("GET", "/api/version"): lambda h, p: h.send(200, {"version": "0.12.6"}),
                ("GET", "/api/tags"): tags,
                ("POST", "/api/pull"): pull,
                ("POST", "/api/create"): create,
                ("POST", "/api/show"): show,
                ("POST", "/api/chat"): native_chat,
                ("GET", "/v1/models"): lambda h, p: h.send(
                    200, {"object": "list", "data": [{"id": n, "object": "model"} for n in installed()]}
                ),
                ("POST", "/v1/chat/completions"): chat,
                ("POST", "/v1/completions"): chat,
            },
        )
    try:
        if cmd == "list":
            status, data = ollama_client("GET", "/api/tags")
            print("NAME")
            for m in data.get("models", []):
                print(m["name"])
        elif cmd == "pull":
            status, data = ollama_client("POST", "/api/pull", {"model": args[1]})
            if status != 200:
                die(f"Error: {data.get('error')}")
            print("success")
        elif cmd == "show":
            status, data = ollama_client("POST", "/api/show", {"model": args[1]})
            if status != 200:
                die(f"Error: {data.get('error')}")
        elif cmd == "create":
            modelfile = Path(arg(args, "-f") or "Modelfile").read_text()
            frm = next(
                (line.split(None, 1)[1].strip() for line in modelfile.splitlines() if line.upper().startswith("FROM ")), ""
            )
            status, data = ollama_client("POST", "/api/create", {"model": args[1], "from": frm})
            if status != 200:
                die(f"Error: {data.get('error')}")
            print("success")
        else:
            die(f"Error: unknown command {cmd!r}", 2)
    except OSError:
        die("Error: could not connect to ollama app, is it running?")


# ---------------------------------------------------------------- Grafana
def grafana(args: list[str]) -> None:
    data = Path(os.environ.get("GF_PATHS_DATA", "/var/lib/grafana"))
    db = data / "grafana.db"
    if args[:3] == ["cli", "admin", "reset-admin-password"] and len(args) > 3:
        # `grafana cli admin reset-admin-password PW` (pkg/cmd/grafana-cli/commands/reset_password_command.go):
        # sets the admin user's password in the database the server reads; the server keeps running.
        db.write_text(json.dumps({"admin_password": args[3]}))
        print("Admin password changed successfully ✔", flush=True)
        return
    # packaging/docker/run.sh (`#!/bin/bash -e`, line 59 in the code index's copy) turns each GF_*__FILE into GF_*
    # with `export "$VAR_NAME"="$(< "${!VAR_NAME_FILE}")"`. bash 5.2 (the image's; 5.2 no longer forks for $(<file))
    # fails that line on an unreadable file, and -e ends the script before `exec grafana`: tried here with bash
    # 5.2.15 as uid 65534 (outside review, 2026-12-07). Trailing newlines are stripped, as $(...) does.
    password_file = os.environ.get("GF_SECURITY_ADMIN_PASSWORD__FILE")
    first = ""
    if password_file:
        try:
            first = Path(password_file).read_text().rstrip("\n")
        except OSError as exc:
            die(f"/run.sh: line 59: {password_file}: {exc.strerror}")
    # grafana/grafana pkg/services/rendering/rendering.go ProvideService, at every start: os.MkdirAll(f, 0700) for
    # cfg.ImagesDir, cfg.CSVsDir and cfg.PDFsDir, failing start-up on an error; pkg/setting/setting.go puts them at
    # <data>/png, <data>/csv and <data>/pdf. Read in the code index's 10.x/11.x-era copy of rendering.go (the one with
    # FlagNewPDFRendering), not at the v11.6.6 tag: that repository is too large to fetch here (outside review,
    # 2026-12-06; older 7.x-9.x copies make png/ and csv/ only). MkdirAll leaves an existing folder as it is.
    for name in ("png", "csv", "pdf"):
        try:
            (data / name).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            die(f'Error: ✗ failed to create images directory "{data / name}": mkdir {data / name}: {exc.strerror.lower()}')
    if not db.exists():
        # Grafana applies GF_SECURITY_ADMIN_PASSWORD only when it creates its database (conf/defaults.ini:
        # "can be changed before first start of grafana, or in profile settings").
        db.write_text(json.dumps({"admin_password": first or "admin"}))
    if os.environ.get("GF_PLUGINS_PREINSTALL_DISABLED", "false").lower() != "true":
        # Grafana 11 installs its preinstall plugins from grafana.com in the background.
        log(
            'level=error msg="Failed to install plugin" pluginId=grafana-lokiexplore-app error="dial tcp: lookup grafana.com: no such host"'
        )
    sub = "/grafana" if os.environ.get("GF_SERVER_SERVE_FROM_SUB_PATH") == "true" else ""
    login = (
        b'<!DOCTYPE html><html><head><title>Grafana</title></head><body><div id="login">Welcome to Grafana</div></body></html>'
    )

    def page(h: Handler, path: str) -> None:
        if path.rstrip("/") in (sub, f"{sub}/login"):
            if path.rstrip("/") == sub:
                h.send_response(302)
                h.send_header("Location", f"{sub}/login")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send(200, login, "text/html")
        else:
            h.send(404, {"message": "Not found"})

    sources = _provisioned_datasources(Path(os.environ.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")))

    def health(h: Handler, path: str) -> None:
        """GET /api/datasources/uid/UID/health, as Grafana 11's Loki backend runs it: an instant
        query of vector(1)+vector(1) that must come back as 2 (pkg/tsdb/loki/healthcheck.go)."""
        import base64
        import urllib.request
        from urllib.parse import quote

        password = json.loads(db.read_text())["admin_password"]
        expected = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            h.send(401, {"message": "Unauthorized"})
            return
        uid = path.rstrip("/").split("/")[-2]
        source = sources.get(uid)
        if source is None:
            h.send(404, {"message": "Data source not found"})
            return
        if source.get("type") != "loki":
            h.send(200, {"status": "OK", "message": "Data source is working"})
            return
        url = f"{source['url'].rstrip('/')}/loki/api/v1/query?query={quote('vector(1)+vector(1)')}&time=4000000000"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                value = json.load(response)["data"]["result"][0]["value"][1]
        except (OSError, ValueError, KeyError, IndexError) as exc:
            h.send(400, {"status": "ERROR", "message": f"There was an error returned querying the Loki API: {exc}"})
            return
        if value != "2":
            h.send(400, {"status": "ERROR", "message": "There was an error returned querying the Loki API: invalid response"})
            return
        h.send(200, {"status": "OK", "message": "Successfully queried the Loki API."})

    serve(
        "0.0.0.0:3000",
        {
            ("GET", f"{sub}/api/datasources/uid/*"): health,
            ("GET", "/api/health"): lambda h, p: h.send(200, {"database": "ok", "version": "11.6.6"}),
            ("GET", f"{sub}/api/health"): lambda h, p: h.send(200, {"database": "ok", "version": "11.6.6"}),
            ("GET", f"{sub}*"): page,
        },
    )


def _provisioned_datasources(root: Path) -> dict[str, dict[str, str]]:
    """uid -> {type, url} from provisioning/datasources/*.yaml (the flat form slm-deploy writes)."""
    import re

    found: dict[str, dict[str, str]] = {}
    for path in sorted((root / "datasources").glob("*.yaml")):
        for block in re.split(r"\n\s*- ", path.read_text())[1:]:
            fields = dict(re.findall(r"^\s*(uid|type|url): (\S+)$", "  " + block, flags=re.M))
            if "uid" in fields:
                found[fields["uid"]] = fields
    return found


# ---------------------------------------------------------------- Open WebUI
def webui(_: list[str]) -> None:
    """Open WebUI v0.7.0's first admin and sign-up (the real one runs in tests/test_engines_live.py):
    env.py 416-424 reads WEBUI_ADMIN_EMAIL/PASSWORD/NAME; main.py 597 lifespan calls utils/auth.py 427
    create_admin_user, which does nothing once there is a user (437); routers/auths.py 709-717 refuses
    sign-up (403) when ENABLE_SIGNUP is off unless there are no users and ENABLE_INITIAL_ADMIN_SIGNUP
    (env.py 409, default False) is on. Releases before 0.7.0 (0.6.34-0.6.43) have no WEBUI_ADMIN_*.
    Each user gets a uuid4 id at creation (models/auths.py 96, insert_new_auth), which sign-in answers with."""
    data = Path(os.environ.get("DATA_DIR", "/app/backend/data"))
    data.mkdir(parents=True, exist_ok=True)
    users = data / "users.json"
    people = json.loads(users.read_text()) if users.exists() else []
    email, password = os.environ.get("WEBUI_ADMIN_EMAIL", ""), os.environ.get("WEBUI_ADMIN_PASSWORD", "")
    if not people and email and password:
        people.append({"id": str(uuid.uuid4()), "email": email.lower(), "password": password, "role": "admin"})
        users.write_text(json.dumps(people))
        log(f"Creating admin account from environment variables: {email}")
    signup = os.environ.get("ENABLE_SIGNUP", "true").lower() == "true"
    initial_admin = os.environ.get("ENABLE_INITIAL_ADMIN_SIGNUP", "False").lower() == "true"

    def do_signup(h: Handler, _: str) -> None:
        nonlocal people
        body = h.body()
        if not signup and (people or not initial_admin):
            h.send(403, {"detail": "You do not have permission to access this resource."})
            return
        role = "admin" if not people else os.environ.get("DEFAULT_USER_ROLE", "pending")
        person = {"id": str(uuid.uuid4()), "email": body.get("email"), "password": body.get("password"), "role": role}
        people.append(person)
        users.write_text(json.dumps(people))
        h.send(200, {"id": person["id"], "email": person["email"], "role": role, "token": "standin"})

    def signin(h: Handler, _: str) -> None:
        body = h.body()
        for p in people:
            if p["email"] == body.get("email") and p["password"] == body.get("password"):
                h.send(200, {"id": p["id"], "email": p["email"], "role": p["role"], "token": "standin"})
                return
        h.send(400, {"detail": "The email or password provided is incorrect."})

    serve(
        "0.0.0.0:8080",
        {
            ("GET", "/health"): lambda h, p: h.send(200, {"status": True}),
            ("GET", "/api/config"): lambda h, p: h.send(200, {"name": "Open WebUI", "features": {"enable_signup": signup}}),
            ("POST", "/api/v1/auths/signup"): do_signup,
            ("POST", "/api/v1/auths/signin"): signin,
            ("GET", "/*"): lambda h, p: h.send(200, b"<!doctype html><title>Open WebUI</title>", "text/html"),
        },
    )


# ---------------------------------------------------------------- dcgm-exporter
def dcgm(_: list[str]) -> None:
    lines = [
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",modelName="standin"} 5',
        "# TYPE DCGM_FI_DEV_FB_USED gauge",
        'DCGM_FI_DEV_FB_USED{gpu="0",modelName="standin"} 1024',
        "# TYPE DCGM_FI_DEV_FB_FREE gauge",
        'DCGM_FI_DEV_FB_FREE{gpu="0",modelName="standin"} 20000',
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",modelName="standin"} 40',
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",modelName="standin"} 50',
        "# TYPE DCGM_FI_DEV_XID_ERRORS gauge",
        'DCGM_FI_DEV_XID_ERRORS{gpu="0",modelName="standin"} 0',
    ]
    serve("0.0.0.0:9400", {("GET", "/metrics"): lambda h, p: h.send(200, "\n".join(lines) + "\n", "text/plain")})


# ---------------------------------------------------------------- Loki's push format
# What Alloy (and Promtail) send: a logproto.PushRequest, protobuf, in snappy's block format
# (Content-Type application/x-protobuf). PushRequest{streams=1: StreamAdapter{labels=1 (text,
# `{a="b"}`), entries=2: EntryAdapter{timestamp=1: {seconds=1, nanos=2}, line=2}}}.
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            out.append((number, data[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return out


def snappy_compress(data: bytes) -> bytes:
    """Valid snappy block format made of literals only (what a decoder must accept)."""
    out = bytearray(_varint(len(data)))
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        n = len(chunk) - 1
        out += bytes([n << 2]) if n < 60 else bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
    return bytes(out)


def snappy_decompress(data: bytes) -> bytes:
    length, pos = _read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            out += data[pos : pos + n + 1]
            pos += n + 1
            continue
        if kind == 1:
            n, offset = ((tag >> 2) & 7) + 4, (tag >> 5) << 8 | data[pos]
            pos += 1
        else:
            size = 2 if kind == 2 else 4
            n, offset = (tag >> 2) + 1, int.from_bytes(data[pos : pos + size], "little")
            pos += size
        for _ in range(n):
            out.append(out[-offset])
    if len(out) != length:
        raise ValueError("snappy: length mismatch")
    return bytes(out)


def encode_push(streams: list[tuple[dict, list[tuple[int, str]]]]) -> bytes:
    body = b""
    for labels, entries in streams:
        text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        stream = _field(1, text.encode())
        for ts, line in entries:
            stamp = _varint(1 << 3) + _varint(ts // 10**9) + _varint(2 << 3) + _varint(ts % 10**9)
            stream += _field(2, _field(1, stamp) + _field(2, line.encode()))
        body += _field(1, stream)
    return snappy_compress(body)


def decode_push(data: bytes) -> list[tuple[dict, list[tuple[int, str]]]]:
    import re

    streams = []
    for number, stream in _fields(snappy_decompress(data)):
        if number != 1 or not isinstance(stream, bytes):
            continue
        labels: dict = {}
        entries = []
        for field, value in _fields(stream):
            if field == 1 and isinstance(value, bytes):
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', value.decode()))
            elif field == 2 and isinstance(value, bytes):
                entry = dict(_fields(value))
                stamp = dict(_fields(entry.get(1, b""))) if isinstance(entry.get(1), bytes) else {}
                ts = int(stamp.get(1, 0)) * 10**9 + int(stamp.get(2, 0))
                entries.append((ts, entry.get(2, b"").decode()))
        streams.append((labels, entries))
    return streams


# ---------------------------------------------------------------- Loki
def _selector(text: str) -> list[tuple[str, str, str]]:
    """`{a="x", b=~"y.*"}` -> [(name, op, value)]: the stream selectors the bundle and the test use."""
    import re

    inner = text.strip()
    if not (inner.startswith("{") and "}" in inner):
        raise ValueError(f"parse error: expected a stream selector, got {text[:60]!r}")
    inner = inner[1 : inner.index("}")]
    return re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"', inner)


def _line_filters(text: str) -> list[tuple[str, str]]:
    """The line filters after the selector (LogQL `|=`, `!=`, `|~`, `!~`, each with a backtick or
    double-quoted string) as [(op, value)]; anything else there is refused, never ignored."""
    import re

    rest = text.strip()[text.strip().index("}") + 1 :]
    found = []
    token = re.compile(r'\s*(\|=|!=|\|~|!~)\s*(`[^`]*`|"(?:[^"\\]|\\.)*")')
    while rest.strip():
        match = token.match(rest)
        if match is None:
            raise ValueError(f"parse error: the stand-in knows line filters only, not {rest.strip()[:60]!r}")
        value = match.group(2)[1:-1] if match.group(2)[0] == "`" else json.loads(match.group(2))
        found.append((match.group(1), value))
        rest = rest[match.end() :]
    return found


def _line_ok(line: str, filters: list[tuple[str, str]]) -> bool:
    import re

    for op, value in filters:
        ok = value in line if op in ("|=", "!=") else re.search(value, line) is not None
        if ok != (op[0] == "|"):
            return False
    return True


def _matches(labels: dict, matchers: list[tuple[str, str, str]]) -> bool:
    import re

    for name, op, value in matchers:
        have = labels.get(name, "")
        ok = {"=": have == value, "!=": have != value}.get(op)
        if ok is None:
            ok = re.fullmatch(value, have) is not None
            ok = ok if op == "=~" else not ok
        if not ok:
            return False
    return True


def _config_value(text: str, key: str) -> str | None:
    import re

    found = re.search(rf"^\s*{key}:\s*(\S+)\s*$", text, flags=re.M)
    return found.group(1).strip('"') if found else None


def loki(args: list[str]) -> None:
    """Loki's single binary as the bundle uses it: push (protobuf+snappy or JSON), query, query_range, ready, metrics,
    and the ruler sending the LogQL alerts (`count_over_time({...} |~ `re` [5m]) > 0`) to Alertmanager."""
    import re
    import time
    import urllib.request

    config_file = arg(args, "-config.file", "/etc/loki/local-config.yaml")
    try:
        config = Path(config_file).read_text()
    except OSError as exc:
        die(f'level=error msg="error loading config file" err="{exc}"')
    if _config_value(config, "retention_enabled") == "true" and not _config_value(config, "delete_request_store"):
        die(
            'level=error msg="validating config" err="invalid compactor config: compactor.delete-request-store should be configured when retention is enabled"'
        )
    prefix = Path(_config_value(config, "path_prefix") or "/loki")
    try:
        (prefix / "chunks").mkdir(parents=True, exist_ok=True)
        (prefix / "compactor").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        die(f'level=error msg="error initialising module: compactor" err="mkdir {prefix}/compactor: {exc.strerror}"')
    # grafana/loki v3.5.8 pkg/loki/config_wrapper.go 435: the ingester WAL at <path_prefix>/wal when a path_prefix is
    # set; pkg/ingester/ingester.go 341: os.MkdirAll(cfg.WAL.Dir, 0o750) at start (WAL enabled by default).
    try:
        (prefix / "wal").mkdir(mode=0o750, exist_ok=True)
    except OSError as exc:
        die(
            f'level=error msg="error initialising module: ingester" err="creating WAL folder at \\"{prefix}/wal\\": {exc.strerror}"'
        )
    store = prefix / "chunks" / "standin.jsonl"
    entries: list[dict] = []
    if store.exists():
        entries = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    received = {"bytes": 0, "lines": 0}

    def push(h: Handler, _: str) -> None:
        """Loki's push API: protobuf+snappy (what Alloy and Promtail send) or JSON."""
        kind = h.headers.get("Content-Type") or ""
        new = []
        if "json" in kind:
            for stream in h.body().get("streams", []):
                for ts, line in stream.get("values", []):
                    new.append({"labels": stream.get("stream", {}), "ts": int(ts), "line": line})
        elif "protobuf" in kind:
            raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            try:
                decoded = decode_push(raw)
            except (ValueError, IndexError) as exc:
                h.send(400, f"loghttp: error parsing push request: {exc}\n", "text/plain")
                return
            new = [{"labels": labels, "ts": ts, "line": line} for labels, entries in decoded for ts, line in entries]
        else:
            h.send(415, f"unsupported Content-Type {kind!r}\n", "text/plain")
            return
        with LOCK:
            entries.extend(new)
            received["bytes"] += sum(len(e["line"]) for e in new)
            received["lines"] += len(new)
            with store.open("a") as out:
                out.writelines(json.dumps(e) + "\n" for e in new)
        h.send(204, b"")

    def select(query: str) -> list[dict]:
        matchers = _selector(query)
        filters = _line_filters(query)
        with LOCK:
            return [e for e in entries if _matches(e["labels"], matchers) and _line_ok(e["line"], filters)]

    def params(h: Handler) -> dict:
        from urllib.parse import parse_qs, urlsplit

        return {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}

    def query(h: Handler, _: str) -> None:
        q = params(h).get("query", "")
        if q.replace(" ", "") == "vector(1)+vector(1)":  # Grafana's datasource health check
            at = float(params(h).get("time", "0")) / (1e9 if len(params(h).get("time", "0")) > 12 else 1)
            h.send(200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [at, "2"]}]}})
            return
        try:
            found = select(q)
        except ValueError as exc:
            h.send(400, str(exc) + "\n", "text/plain")
            return
        h.send(
            200,
            {
                "status": "success",
                "data": {"resultType": "streams", "result": _streams(found, int(params(h).get("limit", "100")))},
            },
        )

    def _streams(found: list[dict], limit: int) -> list[dict]:
        grouped: dict[str, dict] = {}
        for e in sorted(found, key=lambda e: e["ts"], reverse=True)[:limit]:
            key = json.dumps(e["labels"], sort_keys=True)
            grouped.setdefault(key, {"stream": e["labels"], "values": []})["values"].append([str(e["ts"]), e["line"]])
        return list(grouped.values())

    def labels(h: Handler, _: str) -> None:
        with LOCK:
            names = sorted({k for e in entries for k in e["labels"]})
        h.send(200, {"status": "success", "data": names})

    def metrics(h: Handler, _: str) -> None:
        lines = [
            "# TYPE loki_build_info gauge",
            'loki_build_info{version="standin"} 1',
            "# TYPE loki_distributor_bytes_received_total counter",
            f'loki_distributor_bytes_received_total{{tenant="fake"}} {received["bytes"]}',
            "# TYPE loki_distributor_lines_received_total counter",
            f'loki_distributor_lines_received_total{{tenant="fake"}} {received["lines"]}',
        ]
        h.send(200, "\n".join(lines) + "\n", "text/plain")

    rules_dir = Path(re.search(r"directory:\s*(\S+)", config[config.index("ruler:") :]).group(1)) if "ruler:" in config else None
    manager = _config_value(config, "alertmanager_url")

    def ruler() -> None:
        rule = re.compile(r"- alert: (\w+)\n\s+expr: \"(.*)\"\n")
        while True:
            time.sleep(15)
            texts = [f.read_text() for f in sorted(rules_dir.glob("*/*.yml"))] if rules_dir else []
            for text in texts:
                for name, expr in rule.findall(text):
                    expr = expr.replace('\\"', '"')
                    inner = expr[expr.index("count_over_time(") + len("count_over_time(") : expr.rindex("[")]
                    cutoff = (time.time() - 300) * 1e9
                    hits = [e for e in select(inner) if e["ts"] >= cutoff]
                    if not hits or not manager:
                        continue
                    labels = {
                        "alertname": name,
                        "severity": "critical",
                        "box": hits[0]["labels"].get("box", ""),
                        "service": hits[0]["labels"].get("service", ""),
                    }
                    request = urllib.request.Request(
                        manager.rstrip("/") + "/api/v2/alerts",
                        data=json.dumps([{"labels": labels}]).encode(),
                        headers={"Content-Type": "application/json"},
                        method="POST",
                    )
                    try:
                        urllib.request.urlopen(request, timeout=5).read()
                        log(f"ruler: sent {name}")
                    except OSError as exc:
                        log(f"ruler: could not notify {manager}: {exc}")

    threading.Thread(target=ruler, daemon=True).start()
    serve(
        f"0.0.0.0:{_config_value(config, 'http_listen_port') or '3100'}",
        {
            ("GET", "/ready"): lambda h, p: h.send(200, "ready\n", "text/plain"),
            ("GET", "/metrics"): metrics,
            ("POST", "/loki/api/v1/push"): push,
            ("GET", "/loki/api/v1/query"): query,
            ("GET", "/loki/api/v1/query_range"): query,
            ("GET", "/loki/api/v1/labels"): labels,
        },
    )


# ---------------------------------------------------------------- Alloy
def alloy(args: list[str]) -> None:
    """`alloy run CONFIG`: the pipeline the bundle's config declares (file_match glob -> json stage with
    the compose attrs -> drop lines without a service -> loki.write with its external labels), read
    from the config itself; pushes protobuf+snappy, as the real one does."""
    import glob
    import re
    import time
    import urllib.request

    if not args or args[0] != "run" or len(args) < 2:
        die("usage: alloy run CONFIG", 2)
    config = Path(args[1]).read_text()
    storage = Path(arg(args, "--storage.path", "data-alloy") or "data-alloy")
    try:
        storage.mkdir(parents=True, exist_ok=True)
        (storage / "standin-positions.json").touch()
    except OSError as exc:
        die(f"Error: failed to create storage path {storage}: {exc.strerror}")
    pattern = re.search(r'"__path__"\s*=\s*"([^"]+)"', config).group(1)
    url = re.search(r'loki\.write[^{]*\{\s*endpoint\s*\{\s*url\s*=\s*"([^"]+)"', config).group(1)
    external = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)",', config[config.index("external_labels") :]))
    positions_file = storage / "standin-positions.json"
    positions: dict[str, int] = json.loads(positions_file.read_text() or "{}")

    def tail() -> None:
        warned: set[str] = set()
        while True:
            streams: dict[str, dict] = {}
            for path in sorted(glob.glob(pattern)):
                try:
                    with open(path, "rb") as handle:
                        handle.seek(positions.get(path, 0))
                        data = handle.read()
                except OSError as exc:
                    if path not in warned:
                        log(f'level=error msg="failed to tail file" path={path} err="{exc.strerror}"')
                        warned.add(path)
                    continue
                complete = data[: data.rfind(b"\n") + 1]
                positions[path] = positions.get(path, 0) + len(complete)
                for raw in complete.splitlines():
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    attrs = entry.get("attrs") or {}
                    service = attrs.get("com.docker.compose.service", "")
                    if not service:
                        continue  # stage.match {service=""} drop
                    labels = {
                        "service": service,
                        "stream": entry.get("stream", ""),
                        "project": attrs.get("com.docker.compose.project", ""),
                        **external,
                    }
                    key = json.dumps(labels, sort_keys=True)
                    streams.setdefault(key, {"stream": labels, "values": []})["values"].append(
                        (time.time_ns(), entry.get("log", "").rstrip("\n"))
                    )
            if streams:
                body = encode_push([(s["stream"], s["values"]) for s in streams.values()])
                request = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/x-protobuf"}, method="POST"
                )
                try:
                    urllib.request.urlopen(request, timeout=10).read()
                    positions_file.write_text(json.dumps(positions))
                except OSError as exc:
                    log(f'level=warn msg="error sending batch, will retry" err="{exc}"')
                    for path in list(positions):
                        positions[path] = json.loads(positions_file.read_text() or "{}").get(path, 0)
            time.sleep(2)

    threading.Thread(target=tail, daemon=True).start()
    listen = arg(args, "--server.http.listen-addr", "127.0.0.1:12345") or "127.0.0.1:12345"
    serve(
        listen,
        {
            ("GET", "/-/ready"): lambda h, p: h.send(200, "Alloy is ready.\n", "text/plain"),
            ("GET", "/metrics"): lambda h, p: h.send(200, 'alloy_build_info{version="standin"} 1\n', "text/plain"),
        },
    )


PROGRAMS = {
    "vllm": vllm,
    "llama-server": llamacpp,
    "ollama": ollama,
    "grafana": grafana,
    "webui": webui,
    "dcgm-exporter": dcgm,
    "loki": loki,
    "alloy": alloy,
}

if __name__ == "__main__":
    PROGRAMS[sys.argv[1]](sys.argv[2:])
