"""The review runner: collect artifacts from paths, stacks and fleets, check each distinct
content once with every tool whose roles it has, and record every finding for every file that
shares the content (issue 24), setting aside the listed skips."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.review.artifacts import collect, read_artifact, yaml_problem
from slm_deploy.review.dedup import fleet_artifacts
from slm_deploy.review.model import Artifact, Finding, ReviewReport, Sink, Skip, ToolMissing, load_skips
from slm_deploy.review.process import signals_held, single_threaded
from slm_deploy.review.sources import StackPreviews
from slm_deploy.review.tools import ADAPTERS_BY_NAME as ADAPTERS
from slm_deploy.review.tools import TOOLS, YAML_READERS

Progress = Callable[[str], None]  # called with the tool about to run


@contextmanager
def _temporary_files_under(workdir: Path) -> Iterator[None]:
    """Tools (checkov's secrets runner) make temporary folders of their own: put them under ours,
    which is removed however the review ends (issue 10: an interrupted review left 96 files)."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(workdir)
    try:
        yield
    finally:
        tempfile.tempdir = previous


class _Children:
    """The review's children not yet handed to a tool or collected: killed however it ends."""

    def __init__(self) -> None:
        self.warm: dict[str, Any] = {}
        self.started: list[Any] = []

    def add(self, job: Any) -> Any:
        self.started.append(job)
        return job

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *_exc: object) -> None:
        jobs = [*self.warm.values(), *self.started]
        try:
            with signals_held():  # a second Ctrl-C must not leave a child running
                for job in jobs:
                    job.kill()
                for job in jobs:
                    job.cancel()
        finally:
            for job in jobs:  # a signal let through as the mask came back (or while it went on)
                job.kill()
        self.warm.clear()


def review(
    paths: Iterable[Path] = (),
    stacks: Iterable[str] = (),
    fleets: Iterable[Path] = (),
    skips: list[Skip] | None = None,
    tools: Iterable[str] | None = None,
    project: Path | None = None,
    require_tools: bool = False,
    progress: Progress | None = None,
) -> ReviewReport:
    """Review everything given. A validator whose program is missing is reported as not run
    (ReviewReport.not_run), never counted as clean; with require_tools it raises ToolMissing."""
    paths, stacks, fleets = list(paths), list(stacks), list(fleets)
    skips = load_skips() if skips is None else skips
    report = ReviewReport()
    wanted = set(tools) if tools else set(TOOLS)
    step: Progress = progress or (lambda _what: None)

    def record(finding: Finding) -> None:
        skip = next((s for s in skips if s.matches(finding)), None)
        summary = report.tools[finding.tool]
        if skip is not None:
            report.skipped.append((finding, skip))
            summary.skipped += 1
        else:
            report.findings.append(finding)
            summary.findings += 1

    def not_reviewed(label: str, why: str) -> None:
        record(Finding("review", "not-reviewed", "high", label, "", why))

    with tempfile.TemporaryDirectory(prefix="slm-review-") as tmp, _temporary_files_under(Path(tmp)), _Children() as children:
        workdir = Path(tmp)
        artifacts: list[Artifact] = []
        if stacks:
            step("stacks " + ", ".join(stacks))
        # The children are forked first, while this process is a single thread (a terminal's
        # spinner paused): tools that import for seconds (checkov) do it now, beside the previews
        # and the bundles (issue 24).
        with getattr(step, "paused", contextlib.nullcontext)():
            if single_threaded():
                for tool in TOOLS:
                    if tool in wanted and hasattr(ADAPTERS[tool], "prepare"):
                        children.warm[tool] = ADAPTERS[tool].prepare()
            previews = children.add(
                StackPreviews(
                    stacks,
                    project or Path.cwd(),
                    workdir,
                    lambda f, r, sev, res, msg: record(Finding("slm", r, sev, f, res, msg)),
                )
            )
        built: list[Artifact] = []
        refused: InputError | None = None
        try:  # the fleets' bundles are built while the stacks' previews run in their children
            for fleet in fleets:
                step(f"fleet {fleet}")
                built += fleet_artifacts(fleet, workdir)
        except InputError as exc:
            refused = exc  # a stack's refusal, named first on the command line, is said first
        outs = previews.finish()
        if refused is not None:
            raise refused
        for stack, out in zip(stacks, outs, strict=True):
            report.tools["slm"].checked += 1
            artifacts += collect(out, f"stack {stack}")
        artifacts += built
        for path in paths:
            if not os.path.lexists(path):
                raise InputError(str(path), "", "no such file or directory")
            if path.is_dir():  # a path given on the command line is followed, even when a link
                artifacts += collect(path, str(path), not_reviewed)
            else:
                art = read_artifact(path, str(path), not_reviewed, follow=True)
                artifacts += [art] if art is not None else []
        report.files = len(artifacts)
        if not artifacts:
            asked = ", ".join([str(p) for p in paths] + [f"stack {s}" for s in stacks] + [str(f) for f in fleets])
            record(Finding("review", "nothing-reviewed", "high", asked, "", "no file could be reviewed"))
        groups: dict[str, list[Artifact]] = defaultdict(list)
        for art in artifacts:
            groups[art.key].append(art)
        distinct = [group[0] for group in groups.values()]
        report.distinct = len(distinct)
        if "slm" not in wanted and wanted & YAML_READERS:
            # Our rules report YAML that does not parse; without them, say it here, once per file:
            # the YAML readers are not given it.
            for art in distinct:
                if not art.parsed:
                    for twin in groups[art.key]:
                        record(Finding("review", "yaml-parse", "high", twin.label, "", yaml_problem(art.path)))

        # Findings are kept per tool and recorded in the tools' order, whatever order they ran
        # in: checkov starts first, in a child of its own, and works while the others run.
        found: dict[str, list[Finding]] = {tool: [] for tool in TOOLS}
        pending: list[Any] = []
        try:
            for tool in sorted(TOOLS, key=lambda name: not hasattr(ADAPTERS[name], "start")):
                if tool not in wanted:
                    continue
                roles = ADAPTERS[tool].ROLES
                selected = [a for a in distinct if roles is None or a.role in roles]
                report.tools[tool].checked += len(selected)
                if not selected:
                    continue
                sink = _sink(tool, found[tool], groups)
                step(tool)
                try:
                    if tool in children.warm:  # kept in children.warm until a job holds it
                        pending.append((tool, ADAPTERS[tool].start(selected, sink, children.warm[tool])))
                        del children.warm[tool]
                    elif hasattr(ADAPTERS[tool], "start"):
                        pending.append((tool, ADAPTERS[tool].start(selected, sink)))
                    else:
                        ADAPTERS[tool].run(selected, sink)
                except ToolMissing as exc:
                    if require_tools:
                        raise
                    report.tools[tool].checked -= len(selected)
                    report.tools[tool].not_run = f"not installed: {exc.program} ({exc.install})"
            for tool, job in pending:
                step(f"{tool} (finishing)")
                job.finish()
        finally:
            for _, job in pending:
                job.cancel()
        for tool in TOOLS:
            for finding in found[tool]:
                record(finding)
    return report


def _sink(tool: str, found: list[Finding], groups: dict[str, list[Artifact]]) -> Sink:
    def reporter(art: Artifact, rule: str, severity: str, resource: str, message: str) -> None:
        for twin in groups[art.key]:
            found.append(Finding(tool, rule, severity, twin.label, resource, message))

    def lost(where: str, what: str) -> None:
        found.append(Finding(tool, "not-reviewed", "high", where, "", f"{tool} reported on a file it was not given: {what}"))

    return Sink(reporter, lost)
