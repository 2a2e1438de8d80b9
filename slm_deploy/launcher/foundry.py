"""Foundry Local launcher: the whole process of an `onnx` model-server container.

Configure Foundry Local (directories under a writable scratch root, non-essential telemetry off,
the public catalog pointed at a closed loopback port so lookups fail at once instead of leaving
the box), cap the KV cache at the planned context (`--max-length`: a genai_config.json overlay in
scratch, the fetched folder stays read-only), register the ONNX Runtime GenAI folder in the local
catalog, load it, start Foundry Local's built-in OpenAI-compatible web service on the given
address, and stop everything cleanly on SIGTERM/SIGINT. Nothing more: inference is Foundry
Local's, not ours.

Health: the web service answers GET /status (its endpoints and cache path) and has no Prometheus
/metrics; the launcher also writes `<scratch>/ready` (model id, context length, URLs) once the
model is loaded and the web service is up, and removes it on the way out.

Known gap (foundry-local-sdk 2.2.1, tests/test_foundry_live.py): the web service resolves a
request's model through the public catalog only, so a model registered from a folder loads and
answers in-process but is "Model not found" over HTTP.

Runs with the standard library and `foundry_local_sdk` only: `python -m slm_deploy.launcher.foundry`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

APP_NAME = "slm-deploy"
# The public catalog (api.catalog.azureml.ms) is not needed for a model folder we fetched; a
# closed loopback port makes its lookups fail at once instead of waiting on DNS or egress.
NO_CATALOG = "http://127.0.0.1:9/asset-gallery/v1.0/models"
TASK = "chat-completion"
EXIT_BAD_MODEL = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slm-foundry-launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path, help="the fetched repo (or variant) folder")
    parser.add_argument("--variant", default="", help="variant folder inside --model-dir, e.g. gpu/gpu-int4-rtn-block-32")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (prompt + reply) the KV cache holds")
    parser.add_argument("--model-id", required=True, help="Foundry Local model id, <name>:<version>")
    parser.add_argument("--listen", required=True, help="web service URL, e.g. http://0.0.0.0:5273")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/foundry"), help="writable root for app data, cache, logs")
    parser.add_argument("--log-level", default="WARNING", choices=["VERBOSE", "DEBUG", "INFORMATION", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def overlay_max_length(model_dir: Path, max_length: int, scratch: Path) -> Path:
    """A copy of the folder's genai_config.json with search.max_length (and context_length) capped,
    beside links to every other file: the fetched folder stays read-only and untouched.

    The builder's graphs share past and present KV buffers, so ONNX Runtime GenAI allocates
    search.max_length tokens of KV cache per sequence up front; the planner sized it for `max_length`.
    """
    target = scratch / "model"
    if target.exists():
        for entry in target.iterdir():
            entry.unlink()
    else:
        target.mkdir(parents=True)
    for entry in sorted(model_dir.iterdir()):
        if entry.name != "genai_config.json":
            (target / entry.name).symlink_to(entry.resolve())
    config = json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8"))
    model = config["model"]
    model["context_length"] = min(int(model.get("context_length", max_length)), max_length)
    config.setdefault("search", {})["max_length"] = min(int(config["search"].get("max_length", max_length)), max_length)
    (target / "genai_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


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
    from foundry_local_sdk import CatalogType, Configuration, FoundryLocalManager, LogLevel, ModelInfoBuilder

    scratch: Path = args.scratch
    for sub in ("data", "cache", "logs"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir / args.variant
    if args.max_length is not None:
        model_dir = overlay_max_length(model_dir, args.max_length, scratch)
    ready = scratch / "ready"
    ready.unlink(missing_ok=True)
    config = Configuration(
        app_name=APP_NAME,
        app_data_dir=str(scratch / "data"),
        model_cache_dir=str(scratch / "cache"),
        logs_dir=str(scratch / "logs"),
        log_level=LogLevel[args.log_level],
        web=Configuration.WebService(urls=args.listen),
        catalog_urls=[(NO_CATALOG, None)],
        disable_nonessential_telemetry=True,
    )
    FoundryLocalManager.initialize(config)
    manager = FoundryLocalManager.instance
    model: Any = None
    try:
        local = manager.get_catalog(CatalogType.LOCAL)
        if local.get_model_variant(args.model_id) is not None:
            local.unregister_model(args.model_id)  # a registration left by an earlier start
        with ModelInfoBuilder() as metadata:
            metadata.set_string_property("task", TASK)
            model = local.register_model(model_path=str(model_dir), model_id=args.model_id, metadata=metadata)
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
        if manager.urls is not None:
            manager.stop_web_service()
        if model is not None and model.is_loaded:
            model.unload()
        manager.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_length is not None and args.max_length < 1:
        _say("error: --max-length must be positive")
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
