"""promtool: `check config --syntax-only` on prometheus.yml, `check rules` on rule files."""

from __future__ import annotations

import shutil

from slm_deploy.review.model import Artifact, Sink, ToolMissing
from slm_deploy.review.process import cores, run_tools
from slm_deploy.review.reconcile import tool_path
from slm_deploy.review.tools.binaries import last_line

NAME = "promtool"
ROLES: set[str] | None = {"prometheus", "rules"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        raise ToolMissing("promtool", "apt-get install prometheus")
    checked = [art for art in artifacts if art.parsed]
    commands = [
        [binary, "check", "config", "--syntax-only", tool_path(art.path)]
        if art.role == "prometheus"
        else [binary, "check", "rules", tool_path(art.path)]
        for art in checked
    ]
    for art, command, out in zip(checked, commands, run_tools([(c, None, None) for c in commands], cores()), strict=True):
        if out.returncode != 0:
            sink.report(art, f"promtool-{command[1]}-{command[2]}", "high", "", last_line(out.stderr + out.stdout, "failed"))
