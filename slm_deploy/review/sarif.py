"""The review as SARIF 2.1.0: one run per tool, skips as external suppressions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from slm_deploy.review.model import Finding, ReviewReport, Skip

SARIF_LEVEL = {
    "critical": "error",
    "high": "error",
    "error": "error",
    "medium": "warning",
    "warning": "warning",
    "low": "note",
    "info": "note",
    "style": "note",
}


def _sarif_invocation(not_run: str) -> dict[str, Any]:
    """A tool that did not run says so in SARIF too, so code scanning never shows it as clean."""
    if not not_run:
        return {"executionSuccessful": True}
    return {"executionSuccessful": False, "toolExecutionNotifications": [{"level": "error", "message": {"text": not_run}}]}


def sarif(report: ReviewReport) -> dict[str, Any]:
    runs = []
    by_tool: dict[str, list[tuple[Finding, Skip | None]]] = defaultdict(list)
    for finding in report.findings:
        by_tool[finding.tool].append((finding, None))
    for finding, skip in report.skipped:
        by_tool[finding.tool].append((finding, skip))
    for tool in sorted(set(report.tools) | set(by_tool)):
        items = by_tool.get(tool, [])
        rules = sorted({f.rule for f, _ in items})
        results = []
        for finding, suppression in items:
            result: dict[str, Any] = {
                "ruleId": finding.rule,
                "level": SARIF_LEVEL.get(finding.severity.lower(), "warning"),
                "message": {"text": f"{finding.resource}: {finding.message}" if finding.resource else finding.message},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": finding.file}}}],
            }
            if suppression is not None:
                result["suppressions"] = [{"kind": "external", "justification": suppression.reason}]
            results.append(result)
        runs.append(
            {
                "tool": {
                    "driver": {
                        "name": tool,
                        "informationUri": "https://github.com/slm-deploy/slm-deploy",
                        "rules": [{"id": r} for r in rules],
                    }
                },
                "results": results,
                "invocations": [_sarif_invocation(report.tools[tool].not_run if tool in report.tools else "")],
            }
        )
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": runs}
