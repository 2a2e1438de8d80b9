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

    with tempfile.TemporaryDirectory(prefix="slm-review-") as tmp, _temporary_files_under(Path(tmp)), _Children() as children:
        workdir = Path(tmp)
        runs = _ToolRuns(wanted, report, require_tools, step)
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
                    beside=bool(children.warm or fleets or paths),
                )
            )
        # While the stacks' previews run in their children: the fleets' bundles, the paths' files,
        # and the tools that look at one file at a time, on those. What any of it refuses is said
        # in the order of old (stacks first, then fleets, then paths, then a missing tool).
        built: list[Artifact] = []
        refused: InputError | None = None
        try:
            for fleet in fleets:
                step(f"fleet {fleet}")
                built += fleet_artifacts(fleet, workdir)
        except InputError as exc:
            refused = exc
        unreadable: list[tuple[str, str]] = []  # recorded after the stacks' findings, as before
        given: list[Artifact] = []
        if refused is None:
            try:
                given = _path_artifacts(paths, lambda label, why: unreadable.append((label, why)))
            except InputError as exc:
                refused = exc
        if refused is None and previews.jobs:  # only when the previews run elsewhere meanwhile
            runs.per_file(built + given)
        outs = previews.finish()
        if refused is not None:
            raise refused
        artifacts: list[Artifact] = []
        for stack, out in zip(stacks, outs, strict=True):
            report.tools["slm"].checked += 1
            artifacts += collect(out, f"stack {stack}")
        artifacts += built + given
        for label, why in unreadable:
            record(Finding("review", "not-reviewed", "high", label, "", why))
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
        runs.rest(distinct, children.warm)
        for finding in runs.findings(artifacts, groups):
            record(finding)
    return report


def _path_artifacts(paths: list[Path], not_reviewed: Callable[[str, str], None]) -> list[Artifact]:
    artifacts: list[Artifact] = []
    for path in paths:
        if not os.path.lexists(path):
            raise InputError(str(path), "", "no such file or directory")
        if path.is_dir():  # a path given on the command line is followed, even when a link
            artifacts += collect(path, str(path), not_reviewed)
        else:
            art = read_artifact(path, str(path), not_reviewed, follow=True)
            artifacts += [art] if art is not None else []
    return artifacts


# A tool's word on one distinct content (its key), or on a file it was not given (key None).
Said = tuple["str | None", Finding]


class _ToolRuns:
    """Every wanted tool over the distinct contents, each content once. The tools that look at one
    file at a time may see some contents early (per_file, while the stacks are previewed) and the
    rest later (rest). What each says is kept by content and, at the end, reported for every file
    with that content, in the tools' order and, within a tool, in the files' order."""

    def __init__(self, wanted: set[str], report: ReviewReport, require_tools: bool, step: Progress) -> None:
        self.wanted, self.report, self.require_tools, self.step = wanted, report, require_tools, step
        self.said: dict[str, list[Said]] = {tool: [] for tool in TOOLS}
        self.seen: set[str] = set()  # the contents per_file gave its tools
        self.twice: set[str] = set()  # the tools per_file ran: their findings come from two runs
        self.missing: ToolMissing | None = None  # raised in its turn, after every refusal of the input

    def _sink(self, tool: str) -> Sink:
        said = self.said[tool]

        def reporter(art: Artifact, rule: str, severity: str, resource: str, message: str) -> None:
            said.append((art.key, Finding(tool, rule, severity, art.label, resource, message)))

        def lost(where: str, what: str) -> None:
            message = f"{tool} reported on a file it was not given: {what}"
            said.append((None, Finding(tool, "not-reviewed", "high", where, "", message)))

        return Sink(reporter, lost)

    def _selected(self, tool: str, distinct: list[Artifact]) -> list[Artifact]:
        roles = ADAPTERS[tool].ROLES
        return [a for a in distinct if roles is None or a.role in roles]

    def _missing(self, tool: str, selected: list[Artifact], exc: ToolMissing) -> None:
        self.report.tools[tool].checked -= len(selected)
        self.report.tools[tool].not_run = f"not installed: {exc.program} ({exc.install})"
        if self.require_tools and self.missing is None:
            self.missing = exc

    @staticmethod
    def _one_file_at_a_time(tool: str) -> bool:
        """Not our rules, whose set rules look at a deployment's files together, nor a tool that
        runs in a child."""
        return tool != "slm" and not hasattr(ADAPTERS[tool], "start")

    def per_file(self, artifacts: list[Artifact]) -> None:
        """The tools that check each file on its own, on these files' contents."""
        firsts: dict[str, Artifact] = {}
        for art in artifacts:
            firsts.setdefault(art.key, art)
        distinct = list(firsts.values())
        self.seen = set(firsts)
        for tool in TOOLS:
            if tool not in self.wanted or not self._one_file_at_a_time(tool):
                continue
            selected = self._selected(tool, distinct)
            if not selected or self.report.tools[tool].not_run:
                continue
            self.report.tools[tool].checked += len(selected)
            self.step(tool)
            self.twice.add(tool)
            try:
                ADAPTERS[tool].run(selected, self._sink(tool))
            except ToolMissing as exc:
                self._missing(tool, selected, exc)

    def rest(self, distinct: list[Artifact], warm: dict[str, Any]) -> None:
        """Every tool on what it has not seen: checkov starts first, in a child of its own (warm
        since the review began), and works while the others run."""
        if self.missing is not None:
            raise self.missing
        pending: list[tuple[str, Any]] = []
        try:
            for tool in sorted(TOOLS, key=lambda name: not hasattr(ADAPTERS[name], "start")):
                if tool not in self.wanted or self.report.tools[tool].not_run:
                    continue
                early = self._one_file_at_a_time(tool)
                selected = [a for a in self._selected(tool, distinct) if not (early and a.key in self.seen)]
                self.report.tools[tool].checked += len(selected)
                if not selected:
                    continue
                self.step(tool)
                sink = self._sink(tool)
                try:
                    if tool in warm:  # kept in warm until a job holds it
                        pending.append((tool, ADAPTERS[tool].start(selected, sink, warm[tool])))
                        del warm[tool]
                    elif hasattr(ADAPTERS[tool], "start"):
                        pending.append((tool, ADAPTERS[tool].start(selected, sink)))
                    else:
                        ADAPTERS[tool].run(selected, sink)
                except ToolMissing as exc:
                    if self.require_tools:
                        raise
                    self._missing(tool, selected, exc)
            for tool, job in pending:
                self.step(f"{tool} (finishing)")
                job.finish()
        finally:
            for _, job in pending:
                job.cancel()

    def findings(self, artifacts: list[Artifact], groups: dict[str, list[Artifact]]) -> Iterator[Finding]:
        """Each tool's findings in its own order, for every file that shares the content it was said
        of. A tool that ran twice (per_file, then rest) has its two runs merged in the files'
        order, which is its own order over all of them (each looks at one file at a time, in the
        order given); what it said of files it was not given comes after."""
        first: dict[str, int] = {}
        for index, art in enumerate(artifacts):
            first.setdefault(art.key, index)
        for tool in TOOLS:
            said = self.said[tool]
            if tool in self.twice:
                said = sorted(said, key=lambda item: len(artifacts) if item[0] is None else first[item[0]])
            for key, finding in said:
                if key is None:
                    yield finding
                    continue
                for twin in groups[key]:
                    yield Finding(finding.tool, finding.rule, finding.severity, twin.label, finding.resource, finding.message)
