"""Foundry Local launcher: the whole process of an `onnx` model-server container.

Configure Foundry Local (directories under a writable scratch root, telemetry reduced, the public
catalog pointed at nothing so the server never calls out), register the fetched ONNX Runtime
GenAI folder in the local catalog, load it, start Foundry Local's built-in OpenAI-compatible web
service on the given address, and stop everything cleanly on SIGTERM/SIGINT. Nothing more: the
inference server is Foundry Local's, not ours.

Health: Foundry Local's web service answers GET /status (its endpoints and cache path) and has no
Prometheus /metrics. The launcher also writes `<scratch>/ready` once the model is loaded and the
web service is up, for probes that cannot speak HTTP.

Runs with the standard library and `foundry_local_sdk` only, so the container needs nothing else
of this package: `python -m slm_deploy.launcher.foundry --help`.
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
    parser.add_argument("--model-dir", required=True, type=Path, help="folder holding genai_config.json")
    parser.add_argument("--model-id", required=True, help="Foundry Local model id, <name>:<version>")
    parser.add_argument("--listen", required=True, help="web service URL, e.g. http://0.0.0.0:5273")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/foundry"), help="writable root for app data, cache, logs")
    parser.add_argument("--log-level", default="WARNING", choices=["VERBOSE", "DEBUG", "INFORMATION", "WARNING", "ERROR"])
    return parser.parse_args(argv)


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
            model = local.register_model(model_path=str(args.model_dir), model_id=args.model_id, metadata=metadata)
        model.load()
        manager.start_web_service()
        ready.write_text(json.dumps({"model": model.id, "urls": manager.urls}) + "\n", encoding="utf-8")
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
    problem = check_model_dir(args.model_dir)
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
