"""The review for people (a rich table, progress on a terminal) and for programs (JSON)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from slm_deploy.report import console, stderr
from slm_deploy.review.model import ReviewReport


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class ReviewProgress:
    """What the review is doing, as a spinner on stderr, and a pause for its forks: the spinner's
    refresh thread would make the review more than one thread, and a review forks its children
    (previews, checkov) only from a single thread (review/process.py single_threaded)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.task = progress.add_task("collecting", total=None) if progress is not None else None
        self.done: threading.Event | None = None
        self.thread: threading.Thread | None = None

    def __call__(self, what: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=what, refresh=True)

    def _spin(self, done: threading.Event) -> None:
        while not done.wait(0.1):
            if self.progress is not None:
                self.progress.refresh()

    def resume(self) -> None:
        if self.progress is not None and self.thread is None:
            self.done = threading.Event()
            self.thread = threading.Thread(target=self._spin, args=(self.done,), daemon=True)
            self.thread.start()

    def pause(self) -> None:
        if self.thread is not None and self.done is not None:
            native = self.thread.native_id
            self.done.set()
            self.thread.join()
            self.thread = None
            # join() returns when the thread's Python code has ended; the kernel's thread goes a
            # moment later (seen under load: the review then counted two threads and forked nothing).
            deadline = time.monotonic() + 2
            while os.path.exists(f"/proc/self/task/{native}") and time.monotonic() < deadline:
                time.sleep(0.001)

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()


@contextmanager
def review_progress(enabled: bool = True) -> Iterator[ReviewProgress]:
    """What the review is doing, on stderr, on a terminal only: CI logs and pipes stay quiet."""
    if not enabled or not stderr.is_terminal:
        yield ReviewProgress()
        return
    columns = (SpinnerColumn(), TextColumn("review: {task.description}"), TimeElapsedColumn())
    # auto_refresh off: rich's own refresh thread cannot be paused; ReviewProgress refreshes.
    with Progress(*columns, console=stderr, transient=True, auto_refresh=False) as progress:
        step = ReviewProgress(progress)
        step.resume()
        try:
            yield step
        finally:
            step.pause()


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
