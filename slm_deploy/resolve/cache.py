"""Resolved models on disk, one JSON file per repo revision (or Ollama manifest digest).

A branch or tag name maps to the revision it last resolved to (`refs/`), so a plan with
HF_HUB_OFFLINE=1 finds the same revision the last online plan found. The directory is
$SLM_DEPLOY_CACHE, else $HF_HOME/slm-deploy, else $XDG_CACHE_HOME/slm-deploy (~/.cache).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError

TRUE = {"1", "on", "yes", "true"}


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("HF_HUB_OFFLINE", "SLM_DEPLOY_OFFLINE"))


def cache_root() -> Path:
    if os.environ.get("SLM_DEPLOY_CACHE"):
        return Path(os.environ["SLM_DEPLOY_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "slm-deploy"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slm-deploy"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


def _dir(kind: str, name: str) -> Path:
    return cache_root() / "resolved" / kind / _safe(name.replace("/", "--"))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def save(kind: str, name: str, ref: str, revision: str, data: dict[str, Any]) -> None:
    """Best effort: a read-only cache never fails a plan."""
    try:
        base = _dir(kind, name)
        _write(base / f"{_safe(revision)}.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
        if ref and ref != revision:
            _write(base / "refs" / _safe(ref), revision + "\n")
    except OSError:
        pass


def revision_for(kind: str, name: str, ref: str) -> str | None:
    path = _dir(kind, name) / "refs" / _safe(ref)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load(kind: str, name: str, revision: str) -> dict[str, Any] | None:
    path = _dir(kind, name) / f"{_safe(revision)}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unreachable(service: str, url: str, why: str, ref: str, source: str, field: str) -> InputError:
    """No answer from SERVICE and nothing cached: the error names the service and its host, not
    the arguments (which are fine)."""
    from slm_deploy.netclient import NetError, host_of

    cached = f"{ref} is not in the resolve cache ({cache_root()})"
    if source == "arguments":
        return NetError(service, host_of(url), f"cannot be reached ({why}); {cached}")
    return InputError(source, field, f"{service} {host_of(url)} cannot be reached ({why}); {cached}")
