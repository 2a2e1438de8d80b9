"""The compose rules as checkov `yaml` checks: checkov has no compose framework, so the yaml
framework reads every YAML document and these checks act on the ones with `services:`."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.yaml_doc.base_yaml_check import BaseYamlCheck
from checkov.yaml_doc.enums import BlockType

from slm_deploy.policies.checkov_checks.common import plain
from slm_deploy.policies.model import Kind, Rule
from slm_deploy.policies.registry import rules_of


class RuleCheck(BaseYamlCheck):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        super().__init__(
            name=rule.title,
            id=rule.id,
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_entities=("services",),
            block_type=BlockType.DOCUMENT,
        )

    def scan_entity_conf(self, conf: dict[str, Any], entity_type: str) -> tuple[CheckResult, dict[str, Any]]:
        document = plain(conf)
        if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
            return CheckResult.UNKNOWN, conf
        if self.rule.kind is Kind.COMPOSE_FILE:
            failed = self.rule(document)
        else:
            failed = [
                m
                for name, service in document["services"].items()
                for m in self.rule({"name": name, "service": service, "document": document})
            ]
        return (CheckResult.FAILED if failed else CheckResult.PASSED), conf


CHECKS = [RuleCheck(rule) for rule in rules_of(Kind.COMPOSE, Kind.COMPOSE_FILE)]
