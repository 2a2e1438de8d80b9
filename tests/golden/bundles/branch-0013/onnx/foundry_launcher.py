"""Foundry Local launcher: the whole process of an `onnx` model-server container.

Configure Foundry Local (directories under a writable scratch root, non-essential telemetry off),
stage the fetched ONNX Runtime GenAI folder in Foundry Local's model cache, load it, start Foundry
Local's built-in OpenAI-compatible web service on the given address, and stop everything cleanly
on SIGTERM/SIGINT. Nothing more: inference and the HTTP API are Foundry Local's, not ours.

Why a one-model catalog on loopback (foundry-local-sdk 2.2.1, measured in tests/test_foundry_live.py):
the web service resolves a request's `model` only through catalog metadata and the model cache.
A folder registered in the local catalog (`register_model`) loads and answers in-process, but over
HTTP it is `404 Model not found`; a folder in the cache without catalog metadata is found ("Found 1
locally cached models") but never described ("Populated model info for 0 models"). So the launcher
(1) stages the folder in the cache the way Foundry Local's scanner finds cached models: a folder
holding genai_config.json and an inference_model.json that names the model id, files linked, the
fetched folder untouched; and (2) answers Foundry Local's catalog query (POST
/asset-gallery/v1.0/models, the `value` list of the asset-gallery response) from 127.0.0.1 with one
entry describing that model. The public catalog is never asked. Telemetry: with non-essential
telemetry disabled the native library still tries to upload (it looks up
mobile.events.data.microsoft.com); the launcher also sets CI=true (QUIET_ENVIRONMENT below), after
which it tries nothing beyond loopback (tested), and the server's network is internal besides.

The staged genai_config.json caps search.max_length (and context_length) at the planned context
(`--max-length`): the builder's graphs share past and present KV buffers, so ONNX Runtime GenAI
allocates search.max_length tokens of KV cache per sequence up front; the planner sized it.

Health: the web service answers GET /status (endpoints, cache path) and has no Prometheus /metrics;
the launcher writes `<scratch>/ready` (model id, context length, URLs) once the model is loaded and
the web service is up, and removes it on the way out. `--check URL` is the container healthcheck:
exit 0 when the ready file exists and URL/status answers.

Runs with the standard library and `foundry_local_sdk` only: `python -m slm_deploy.launcher.foundry`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

APP_NAME = "slm-deploy"
CATALOG_PATH = "/asset-gallery/v1.0/models"  # Configuration.catalog_urls must end with it
PUBLISHER = "slm-deploy"
TASK = "chat-completion"
# Foundry Local's names for the device and execution provider of a catalog variant.
DEVICES = {"cpu": ("CPU", "CPUExecutionProvider"), "cuda": ("GPU", "CUDAExecutionProvider")}
EXIT_BAD_MODEL = 2
# An undocumented switch, observed in foundry-local-sdk 2.2.1's own log: with non-essential
# telemetry disabled the native library still says "non-essential 1DS upload disabled (ProcessInfo
# still uploads)", looks up mobile.events.data.microsoft.com every few seconds and writes a device
# id and sqlite queues under $HOME/.cache/Microsoft/DeveloperTools; with CI=true in its environment
# it logs "CI environment detected; 1DS upload disabled" and does none of that (tested under strace
# in a loopback-only network namespace: tests/test_foundry_live.py). Set before the library loads,
# so it holds wherever the launcher runs, not only in the generated compose service (which sets it too).
QUIET_ENVIRONMENT = {"CI": "true"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slm-foundry-launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", metavar="URL", help="healthcheck only: is the launcher ready and URL/status answering?")
    parser.add_argument("--model-dir", type=Path, help="the fetched repo (or variant) folder")
    parser.add_argument("--variant", default="", help="variant folder inside --model-dir, e.g. gpu/gpu-int4-rtn-block-32")
    parser.add_argument("--device", default="cpu", choices=sorted(DEVICES), help="the device the variant was built for")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (prompt + reply) the KV cache holds")
    parser.add_argument("--model-id", help="Foundry Local model id, <name>:<version>")
    parser.add_argument("--listen", help="web service URL, e.g. http://0.0.0.0:5273")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/foundry"), help="writable root for app data, cache, logs")
    parser.add_argument("--log-level", default="WARNING", choices=["VERBOSE", "DEBUG", "INFORMATION", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.check is None:
        missing = [f"--{name.replace('_', '-')}" for name in ("model_dir", "model_id", "listen") if getattr(args, name) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def split_model_id(model_id: str) -> tuple[str, int] | None:
    """(name, version) of `<name>:<version>`, or None."""
    name, _, version = model_id.rpartition(":")
    return (name, int(version)) if name and version.isdigit() else None


def stage_model(model_dir: Path, model_id: str, max_length: int | None, cache: Path) -> Path:
    """The folder as Foundry Local's cache holds a model: links to every file but genai_config.json,
    a genai_config.json with the context capped at `max_length`, and inference_model.json naming the id."""
    name, version = split_model_id(model_id) or (model_id, 0)
    target = cache / PUBLISHER / f"{name}-{version}"
    if target.exists():  # left by an earlier start (the scratch root outlived the process)
        for entry in target.iterdir():
            entry.unlink()
    else:
        target.mkdir(parents=True)
    for entry in sorted(model_dir.iterdir()):
        if entry.name not in ("genai_config.json", "inference_model.json"):
            (target / entry.name).symlink_to(entry.resolve())
    config = json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8"))
    if max_length is not None:
        model = config["model"]
        model["context_length"] = min(int(model.get("context_length", max_length)), max_length)
        search = config.setdefault("search", {})
        search["max_length"] = min(int(search.get("max_length", max_length)), max_length)
    (target / "genai_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (target / "inference_model.json").write_text(json.dumps({"Name": model_id}) + "\n", encoding="utf-8")
    return target


def catalog_entry(model_id: str, device: str, context_length: int) -> dict[str, Any]:
    """One `value` record of the asset-gallery models response, as Foundry Local 2.2.1 reads it."""
    name, version = split_model_id(model_id) or (model_id, 0)
    device_type, provider = DEVICES[device]
    return {
        "assetId": f"{PUBLISHER}://models/{name}/versions/{version}",
        "name": name,
        "version": str(version),
        "alias": name,
        "publisher": PUBLISHER,
        "inferenceTasks": [TASK],
        "modelLimits": {"textLimits": {"inputContextWindow": context_length}},
        "variantInformation": {"variantMetadata": {"device": device_type, "executionProvider": provider}},
    }


def serve_catalog(entry: dict[str, Any]) -> ThreadingHTTPServer:
    """Answer Foundry Local's catalog query on 127.0.0.1 (an ephemeral port) with `entry` alone."""
    body = json.dumps({"totalCount": 1, "value": [entry]}, sort_keys=True).encode()

    class Catalog(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != CATALOG_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Catalog)
    threading.Thread(target=server.serve_forever, name="catalog", daemon=True).start()
    return server


def check_model_dir(model_dir: Path) -> str | None:
    """Why the folder cannot be served, or None."""
    config = model_dir / "genai_config.json"
    if not config.is_file():
        return f"{model_dir}: no genai_config.json (is this an ONNX Runtime GenAI model folder?)"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        filename = data["model"]["decoder"]["filename"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{config}: unreadable ({exc})"
    if not (model_dir / filename).is_file():
        return f"{model_dir}: genai_config.json names {filename}, which is missing"
    return None


def _say(message: str) -> None:
    print(f"slm-foundry-launcher: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    os.environ.update(QUIET_ENVIRONMENT)  # before the native library is loaded and initialized
    from foundry_local_sdk import Configuration, FoundryLocalManager, LogLevel

    scratch: Path = args.scratch
    for sub in ("data", "cache", "logs"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    ready = scratch / "ready"
    ready.unlink(missing_ok=True)
    staged = stage_model(args.model_dir / args.variant, args.model_id, args.max_length, scratch / "cache")
    context = int(json.loads((staged / "genai_config.json").read_text(encoding="utf-8"))["model"]["context_length"])
    catalog = serve_catalog(catalog_entry(args.model_id, args.device, context))
    config = Configuration(
        app_name=APP_NAME,
        app_data_dir=str(scratch / "data"),
        model_cache_dir=str(scratch / "cache"),
        logs_dir=str(scratch / "logs"),
        log_level=LogLevel[args.log_level],
        web=Configuration.WebService(urls=args.listen),
        catalog_urls=[(f"http://127.0.0.1:{catalog.server_address[1]}{CATALOG_PATH}", None)],
        disable_nonessential_telemetry=True,
    )
    manager: Any = None
    model: Any = None
    try:
        FoundryLocalManager.initialize(config)
        manager = FoundryLocalManager.instance
        model = manager.catalog.get_model_variant(args.model_id)
        if model is None or not model.is_cached:
            _say(f"error: Foundry Local did not find {args.model_id} in its cache ({staged})")
            return EXIT_BAD_MODEL
        model.load()
        manager.start_web_service()
        status = {"model": model.id, "context_length": model.context_length, "urls": manager.urls}
        ready.write_text(json.dumps(status, sort_keys=True) + "\n", encoding="utf-8")
        _say(f"serving {model.id} on {', '.join(manager.urls or [])}")
        stop.wait()
        _say("stopping")
        return 0
    finally:
        ready.unlink(missing_ok=True)
        if manager is not None:
            if manager.urls is not None:
                manager.stop_web_service()
            if model is not None and model.is_loaded:
                model.unload()
            manager.close()
        catalog.shutdown()


def check(url: str, scratch: Path) -> int:
    """Healthcheck: 0 when the launcher wrote its ready file and Foundry Local's /status answers."""
    if not (scratch / "ready").is_file():
        return 1
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check is not None:
        return check(args.check, args.scratch)
    if args.max_length is not None and args.max_length < 1:
        _say("error: --max-length must be positive")
        return EXIT_BAD_MODEL
    if split_model_id(args.model_id) is None:
        _say(f"error: --model-id {args.model_id!r} is not <name>:<version> (version a whole number)")
        return EXIT_BAD_MODEL
    problem = check_model_dir(args.model_dir / args.variant)
    if problem is not None:
        _say(f"error: {problem}")
        return EXIT_BAD_MODEL
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(args, stop)


if __name__ == "__main__":
    sys.exit(main())
