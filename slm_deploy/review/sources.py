"""Stacks as artifacts: the offline preview's manifests, with the Azure, output and simulator
rules run on its resources (they see what no file shows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def stack_artifacts(stack: str, project: Path, workdir: Path, report_rule: Callable[[str, str, str, str, str], None]) -> Path:
    """Preview a stack; run the Azure and output rules on its resources; return its manifest dir."""
    from slm_deploy.policies.model import Kind
    from slm_deploy.policies.registry import rules_of
    from slm_deploy.preview import run_preview, write_manifests

    result = run_preview(stack, project)
    out = workdir / f"stack-{stack}"
    write_manifests(result, out)
    for resource in result.resources:
        if not resource.type.startswith("azure-native:"):
            continue
        data = {"type": resource.type, "props": resource.inputs}
        for rule in rules_of(Kind.AZURE):
            for message in rule(data):
                report_rule(f"stack {stack}", rule.id, rule.severity.value, f"{resource.type}::{resource.name}", message)
    outputs = {"outputs": result.outputs, "secret": sorted(result.secret_outputs)}
    for rule in rules_of(Kind.OUTPUTS):
        for message in rule(outputs):
            report_rule(f"stack {stack}", rule.id, rule.severity.value, "outputs", message)
    # The deployment simulator: do the resources work together on the cluster they create?
    from slm_deploy.simulator import BY_ID, from_preview, simulate

    for finding in simulate(from_preview(result)):
        report_rule(f"stack {stack}", finding.rule, BY_ID[finding.rule].severity.value, finding.resource, finding.message)
    return out
