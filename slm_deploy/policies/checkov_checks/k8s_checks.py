"""The Kubernetes rules (one manifest each) as checkov `kubernetes` checks."""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

from slm_deploy.policies.checkov_checks.common import plain, verdict
from slm_deploy.policies.model import Kind, Rule
from slm_deploy.policies.registry import rules_of

KINDS = (
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Service",
    "ServiceAccount",
    "Namespace",
)


class RuleCheck(BaseK8Check):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        super().__init__(name=rule.title, id=rule.id, categories=(CheckCategories.KUBERNETES,), supported_entities=KINDS)

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        return verdict(self.rule, plain(conf))


CHECKS = [RuleCheck(rule) for rule in rules_of(Kind.K8S)]
