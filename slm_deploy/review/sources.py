"""Stacks as artifacts: the offline preview's manifests, with the Azure, output and simulator
rules run on its resources (they see what no file shows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.review.process import ChildFailed, Isolated, single_threaded


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


StackFinding = tuple[str, str, str, str, str]  # file, rule, severity, resource, message


def _stack_job(stack: str, project: Path, workdir: Path) -> tuple[str, Any]:
    """In a child: one stack's preview, its manifests written, its findings answered as data."""
    found: list[StackFinding] = []
    try:
        stack_artifacts(stack, project, workdir, lambda *finding: found.append(finding))
    except InputError as exc:
        return "input", (exc.source, exc.field, exc.message)
    return "ok", found


def preview_stacks(stacks: list[str], project: Path, workdir: Path, report_rule: Callable[..., None]) -> list[Path]:
    """Every stack's manifest folder, its rule findings reported in the stacks' order. Several
    stacks are previewed side by side, each in a child of its own (the Pulumi mocks keep global
    state, so a process each): issue 24, the three example stacks were two thirds of a review."""
    import slm_deploy.preview

    if len(stacks) < 2 or slm_deploy.preview.PREVIEWED or not single_threaded():
        # One stack, or a process whose Pulumi runtime already ran (a fork would inherit its state
        # and hang), or one running other threads (gRPC's, once Pulumi is imported), which a child
        # could wait on forever: one after the other, here.
        return [stack_artifacts(stack, project, workdir, report_rule) for stack in stacks]
    # Shared by the children: what imports no gRPC. Each child imports Pulumi itself, after the fork.
    import slm_deploy.simulator

    jobs = [Isolated(_stack_job, stack, project, workdir) for stack in stacks]
    try:
        for stack, job in zip(stacks, jobs, strict=True):
            try:
                kind, value = job.result()
            except ChildFailed as exc:
                raise InputError(f"stack {stack}", "", f"the offline preview failed ({exc})") from None
            if kind == "input":
                raise InputError(*value)
            for finding in value:
                report_rule(*finding)
    finally:
        for job in jobs:
            job.cancel()
    return [workdir / f"stack-{stack}" for stack in stacks]
