"""GitHub Actions workflows: zizmor's security audits, offline (no GitHub API calls)."""

from __future__ import annotations

import json
from typing import Any

from slm_deploy.review.model import Artifact, Sink
from slm_deploy.review.process import ToolCall, cores, run_tools
from slm_deploy.review.reconcile import tool_path
from slm_deploy.review.tools.binaries import required_binary, tail

NAME = "zizmor"
ROLES: set[str] | None = {"workflow"}


def _line(item: dict[str, Any]) -> str:
    lines = [
        loc["concrete"]["location"]["start_point"]["row"] + 1
        for loc in item.get("locations", [])
        if loc.get("symbolic", {}).get("kind") == "Primary"
    ]
    return f"line {lines[0]}" if lines else ""


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = required_binary("zizmor", "pip install zizmor")
    checked = [art for art in artifacts if art.parsed]
    calls: list[ToolCall] = [
        ([binary, "--offline", "--no-progress", "--format", "json", tool_path(art.path)], None, None) for art in checked
    ]
    for art, out in zip(checked, run_tools(calls, cores()), strict=True):
        try:
            items = json.loads(out.stdout or "[]")
            if not isinstance(items, list):
                raise ValueError("not a list")
            parsed = [(item, _line(item)) for item in items if not item.get("ignored")]
        except (ValueError, KeyError, TypeError, AttributeError):
            sink.report(art, "zizmor", "high", "", tail(out.stderr or out.stdout, "zizmor failed"))
            continue
        # An ignore comment or zizmor.yml rule in the user's repository marks an item ignored.
        for item, where in parsed:
            severity = str(item.get("determinations", {}).get("severity", "medium")).lower()
            sink.report(art, f"zizmor:{item['ident']}", severity, where, str(item.get("desc", item["ident"])))
