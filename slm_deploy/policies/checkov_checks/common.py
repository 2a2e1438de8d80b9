"""Shared by the wrappers: a rule's verdict as a checkov result."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckResult

from slm_deploy.policies.model import Rule


def verdict(rule: Rule, resource: object) -> CheckResult:
    try:
        return CheckResult.FAILED if rule(resource) else CheckResult.PASSED
    except (AttributeError, TypeError, KeyError, ValueError, IndexError):
        return CheckResult.FAILED  # a shape no valid file has (issue 10): a finding, not a logged traceback


MARKS = ("__startline__", "__endline__")


def plain(value: Any) -> Any:
    """checkov's YAML parser adds line marks to every mapping; rules see plain data."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k not in MARKS}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
