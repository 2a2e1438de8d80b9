"""The Dockerfile rules as checkov `dockerfile` checks (whole-file, like CKV_DOCKER_2)."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.dockerfile.base_dockerfile_check import BaseDockerfileCheck

from slm_deploy.policies.model import Kind, Rule
from slm_deploy.policies.registry import rules_of


class RuleCheck(BaseDockerfileCheck):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        super().__init__(
            name=rule.title, id=rule.id, categories=(CheckCategories.GENERAL_SECURITY,), supported_instructions=("*",)
        )

    def scan_resource_conf(self, conf: dict[str, list[Any]]) -> tuple[CheckResult, list[Any] | None]:  # type: ignore[override]
        ordered = sorted(
            ((item["startline"], name.upper(), str(item["value"])) for name, items in conf.items() for item in items),
        )
        instructions = [(name, value) for _, name, value in ordered]
        failed = self.rule(instructions)
        return (CheckResult.FAILED if failed else CheckResult.PASSED), None


CHECKS = [RuleCheck(rule) for rule in rules_of(Kind.DOCKERFILE)]
