"""The deployment simulator: does what a stack declares work *together*, the way the cluster and
Azure would decide it? Scheduling, ordering, reachability and identity, autoscaling, platform
facts. Each check reads the stack model (slm_deploy.simulator.model) and catalog facts and
returns findings with rule ids SLM-SIM-0xx (rules.py)."""

from __future__ import annotations

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.simulator import access, autoscaling, ordering, platform, scheduling, transitions
from slm_deploy.simulator.model import Finding, Stack, from_policy, from_preview
from slm_deploy.simulator.rules import BY_ID, SIM_RULES, SimRule

CHECKS = {
    "scheduling": scheduling.check,
    "ordering": ordering.check,
    "access": access.check,
    "autoscaling": autoscaling.check,
    "platform": platform.check,
    "refresh": transitions.check,
}


def simulate(stack: Stack) -> list[Finding]:
    facts = load_aks_facts()
    findings: set[Finding] = set()
    for check in CHECKS.values():
        findings.update(check(stack, facts))
    return sorted(findings)


__all__ = ["BY_ID", "SIM_RULES", "Finding", "SimRule", "Stack", "from_policy", "from_preview", "simulate"]
