"""`slm-deploy review`: the one function the CLI calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from slm_deploy.errors import InputError
from slm_deploy.review.model import ToolMissing
from slm_deploy.review.output import review_json, review_progress, review_table
from slm_deploy.review.runner import review
from slm_deploy.review.sarif import sarif
from slm_deploy.review.tools import TOOLS


def review_command(
    paths: Sequence[Path],
    stacks: Sequence[str],
    fleets: Sequence[Path],
    project_dir: Path | None,
    sarif_file: Path | None,
    as_json: bool,
    tools: Sequence[str],
    require_tools: bool,
) -> int:
    """Review, write SARIF if asked, print the table or JSON; the exit code (1 on findings)."""
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        raise InputError("arguments", "--tool", f"unknown tool {unknown[0]!r}; known: {', '.join(TOOLS)}")
    if not (paths or stacks or fleets):
        raise InputError("arguments", "PATHS", "nothing to review: give paths, --stack or --fleet")
    try:
        with review_progress(enabled=not as_json) as progress:
            report = review(
                paths, stacks, fleets, tools=tools or None, project=project_dir, require_tools=require_tools, progress=progress
            )
    except ToolMissing as exc:
        raise InputError("review", "tools", f"{exc} (--require-tools / SLM_REQUIRE_TOOLS=1)") from None
    if sarif_file:
        from slm_deploy.atomicfile import write_atomic

        write_atomic(sarif_file, (json.dumps(sarif(report), indent=2, sort_keys=True) + "\n").encode())
    if as_json:
        print(json.dumps(review_json(report), indent=2, sort_keys=True))
    else:
        review_table(report)
    return 0 if report.clean else 1
