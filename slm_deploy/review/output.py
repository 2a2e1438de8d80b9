"""The review for people (a rich table, progress on a terminal) and for programs (JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from slm_deploy.report import console, stderr
from slm_deploy.review.model import ReviewReport


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@contextmanager
def review_progress(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """What the review is doing, on stderr, on a terminal only: CI logs and pipes stay quiet."""
    if not enabled or not stderr.is_terminal:
        yield lambda _what: None
        return
    columns = (SpinnerColumn(), TextColumn("review: {task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("collecting", total=None)
        yield lambda what: progress.update(task, description=what)


def review_table(report: ReviewReport) -> None:
    if report.findings:
        table = Table(title=plural(len(report.findings), "finding"))
        for column in ("tool", "rule", "severity", "file", "resource", "message"):
            table.add_column(column, overflow="fold")
        for f in sorted(report.findings, key=lambda f: (f.tool, f.rule, f.file)):
            table.add_row(f.tool, f.rule, f.severity, f.file, f.resource, f.message)
        console.print(table)
    summary = Table(title=f"review: {plural(report.files, 'file')} ({report.distinct} distinct)")
    for column in ("tool", "checked", "findings", "skipped"):
        summary.add_column(column)
    for tool, counts in sorted(report.tools.items()):
        checked = f"not run ({counts.not_run})" if counts.not_run else str(counts.checked)
        summary.add_row(tool, checked, str(counts.findings), str(counts.skipped))
    console.print(summary)
    reasons = sorted({(s.check, s.reason) for _, s in report.skipped})
    for check, reason in reasons:
        console.print(f"skipped {check}: {reason}")
    if not report.clean:
        console.print(f"[red]{plural(len(report.findings), 'finding')}[/red]")
    elif report.not_run:
        missing = ", ".join(report.not_run)
        console.print(f"[yellow]INCOMPLETE: zero findings, but not run: {missing} (not installed; see above)[/yellow]")
    else:
        console.print("[green]clean: zero findings[/green]")


def review_json(report: ReviewReport) -> dict[str, Any]:
    return {
        "clean": report.clean,
        "complete": not report.not_run,
        "not_run": report.not_run,
        "files": report.files,
        "distinct": report.distinct,
        "findings": [vars(f) for f in report.findings],
        "skipped": [{**vars(f), "reason": s.reason} for f, s in report.skipped],
        "tools": {k: vars(v) for k, v in sorted(report.tools.items())},
    }
