"""Stacks as artifacts: the offline preview's manifests, with the Azure, output and simulator
rules run on its resources (they see what no file shows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.review.process import ChildFailed, Isolated, cores, single_threaded


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


def _stacks_job(stacks: list[str], project: Path, workdir: Path) -> list[tuple[str, Any]]:
    """In a child: its stacks' previews one after the other (the SDK imported once), their
    manifests written, their findings answered as data; it stops at a stack file's refusal."""
    answers: list[tuple[str, Any]] = []
    for stack in stacks:
        found: list[StackFinding] = []
        try:
            stack_artifacts(stack, project, workdir, lambda *finding, into=found: into.append(finding))
        except InputError as exc:
            answers.append(("input", (exc.source, exc.field, exc.message)))
            break
        except Exception as exc:  # this stack's program failed: its own error, named by its stack
            answers.append(("failed", f"{exc.__class__.__name__}: {str(exc)[:200]}"))
            break
        answers.append(("ok", found))
    return answers


class StackPreviews:
    """Every stack's preview, started now and collected by finish(), so that the review does
    other work (a fleet's bundles) meanwhile. Two or more stacks are previewed in children (the
    Pulumi mocks keep global state, so never two in one process at once), one per free core, each
    taking its share of the stacks in turn: the SDK's modules, most of a preview's time, are
    imported once per child (issue 24: three example stacks were two thirds of a review)."""

    def __init__(
        self, stacks: list[str], project: Path, workdir: Path, report_rule: Callable[..., None], *, beside: bool = False
    ) -> None:
        import slm_deploy.preview

        self.stacks, self.project, self.workdir, self.report_rule = stacks, project, workdir, report_rule
        self.jobs: list[Isolated[list[tuple[str, Any]]]] = []
        self.shares: list[list[str]] = []
        if len(stacks) < 2 or slm_deploy.preview.PREVIEWED or not single_threaded():
            # One stack, or a process whose Pulumi runtime already ran (a fork would inherit its
            # state and hang), or one running other threads (gRPC's, once Pulumi is imported),
            # which a child could wait on forever: one after the other, here, in finish().
            return
        # Shared by the children: what imports no gRPC. Each child imports Pulumi itself, after the fork.
        import slm_deploy.simulator

        # BESIDE: other work runs meanwhile (a warm checkov child, the fleets' bundles and the
        # per-file tools in this process), and it takes a core. On two cores a second preview
        # child then imported the SDK again (some 2 s of CPU) for no shorter review (3 stacks +
        # the example fleet: 8.1 s either way, 10 s of CPU against 12-13 s); with nothing beside
        # them, two children were 2 s faster (`--tool slm`, 3 stacks: 6.0-6.5 s against 7.8-8.6 s;
        # 2026-12-07).
        children = min(len(stacks), max(1, cores() - (1 if beside else 0)))
        self.shares = [stacks[k::children] for k in range(children)]
        try:
            for share in self.shares:
                self.jobs.append(Isolated(_stacks_job, share, project, workdir))
        except BaseException:
            self.cancel()
            raise

    def finish(self) -> list[Path]:
        """The stacks' manifest folders, their findings reported in the stacks' order."""
        if not self.jobs:
            return [stack_artifacts(stack, self.project, self.workdir, self.report_rule) for stack in self.stacks]
        answers: dict[str, tuple[str, Any]] = {}
        try:
            for share, job in zip(self.shares, self.jobs, strict=True):
                try:
                    got = job.result()
                except ChildFailed as exc:  # it died (killed, out of memory): on which stack is not known
                    named = f"stack {share[0]}" if len(share) == 1 else f"stacks {', '.join(share)}"
                    got = [("died", (named, str(exc)))] * len(share)
                answers.update(zip(share, got, strict=False))
        finally:
            self.cancel()
        for stack in self.stacks:
            # A child stops at its first refusal: a stack missing here comes after one, in the
            # same child, and so after it in the stacks' order too.
            kind, value = answers[stack]
            if kind == "failed":
                raise InputError(f"stack {stack}", "", f"the offline preview failed ({value})")
            if kind == "died":
                raise InputError(value[0], "", f"the offline preview's process {value[1]}")
            if kind == "input":
                raise InputError(*value)
            for finding in value:
                self.report_rule(*finding)
        return [self.workdir / f"stack-{stack}" for stack in self.stacks]

    def kill(self) -> None:
        for job in self.jobs:
            job.kill()

    def cancel(self) -> None:
        self.kill()  # every group killed first, then each child reaped
        for job in self.jobs:
            job.cancel()


def preview_stacks(stacks: list[str], project: Path, workdir: Path, report_rule: Callable[..., None]) -> list[Path]:
    """Every stack's manifest folder, its rule findings reported in the stacks' order."""
    previews = StackPreviews(stacks, project, workdir, report_rule)
    try:
        return previews.finish()
    finally:
        previews.cancel()
