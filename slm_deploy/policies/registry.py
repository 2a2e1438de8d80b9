"""Every rule, in one explicit list (no registration by import side effect)."""

from __future__ import annotations

from slm_deploy.policies import azure_rules, compose_rules, dockerfile_rules, k8s_rules, secret_rules, value_rules
from slm_deploy.policies.model import Kind, Rule

RULES: tuple[Rule, ...] = (
    *k8s_rules.RULES,
    *azure_rules.RULES,
    *compose_rules.RULES,
    *dockerfile_rules.RULES,
    *value_rules.RULES,
    *secret_rules.RULES,
)
BY_ID = {rule.id: rule for rule in RULES}


def rules_of(*kinds: Kind) -> list[Rule]:
    return [rule for rule in RULES if rule.kind in kinds]
