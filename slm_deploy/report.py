"""Human-readable tables (rich) for plans and generated bundles."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slm_deploy.planner import Plan

console = Console(highlight=False)
if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
    console = Console(highlight=False, width=140)
stderr = Console(stderr=True, highlight=False)
PROGRESS_MIN_BOXES = 5


def plan_table(plan: Plan) -> None:
    verdict = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]"
    table = Table(title=f"{plan.model} ({plan.quantization}) on {plan.hardware}: {verdict}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    res = plan.resources
    rows = [
        ("runtime", f"{plan.runtime}, weights from {plan.weights_source}"),
        *([("revision", plan.model_revision)] if plan.model_revision else []),
        ("context x concurrency", f"{plan.context} tokens x {plan.concurrency}"),
        ("memory budget", f"{plan.memory_budget_gib} GiB of {plan.device_memory_gib:g} GiB ({plan.device})"),
        ("weights", f"{plan.weights_gib} GiB (download {plan.download_gib} GiB)"),
        ("overhead + activations", f"{plan.overhead_gib} + {plan.activation_gib} GiB"),
        ("KV cache", f"{plan.kv_cache_gib} GiB, {plan.kv_bytes_per_token} bytes/token, {plan.kv_tokens} tokens"),
        ("max concurrent sequences", str(plan.max_concurrent_sequences)),
        (
            "container",
            f"memory {res.memory_request_gib}-{res.memory_limit_gib} GiB, cpu {res.cpu_request:g}, "
            f"gpu {res.gpu_count}, shm {res.shm_gib:g} GiB, cache disk {res.cache_disk_gib} GiB",
        ),
        (
            "startup budget",
            f"{res.startup_budget_seconds} s ({res.startup_failure_threshold} x {res.probe_period_seconds} s)",
        ),
        ("decode (estimate)", f"<= {plan.decode_tokens_per_second_estimate:g} tokens/s, one stream"),
    ]
    if plan.runtime_args:
        rows.append(("args", shlex.join(plan.runtime_args)))
    for key, value in sorted(plan.runtime_env.items()):
        rows.append(("env", f"{key}={value}"))
    if plan.reason:
        rows.append(("reason", f"[red]{plan.reason}[/red]"))
    for suggestion in plan.suggestions:
        rows.append(("suggestion", f"{suggestion.change} ({suggestion.detail})"))
    for note in plan.notes:
        rows.append(("note", note))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@contextmanager
def progress_bar(total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr for fleets of more than a few boxes."""
    if not enabled or total <= PROGRESS_MIN_BOXES or not stderr.is_terminal:
        yield lambda _box: None
        return
    columns = (
        TextColumn("bundling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("", total=total)
        yield lambda box: progress.update(task, advance=1, description=box)


def bundle_summary(rows: list[dict[str, Any]], out: Path) -> None:
    boxes = len({r["box"] for r in rows})
    table = Table(title=f"{boxes} bundle{'' if boxes == 1 else 's'} in {out}")
    for column in ("box", "runtime", "model", "quant", "context", "conc.", "device", "memory used"):
        table.add_column(column, no_wrap=column in ("box", "model"))
    for r in rows:
        used = f"{r['memory_used_gib']}/{r['device_memory_gib']:g} GiB"
        table.add_row(
            r["box"],
            r["runtime"],
            r["model"],
            r["quantization"],
            str(r["context"]),
            str(r["concurrency"]),
            r["device"],
            used,
        )
    console.print(table)
    digests = sorted({(r["box"], r["manifest_sha256"]) for r in rows if "manifest_sha256" in r})
    if digests:
        console.print("manifest digests (keep them off the boxes; `slm-deploy verify BOX --expect DIGEST`):")
        for box, digest in digests:
            console.print(f"  {box} {digest}", highlight=False, soft_wrap=True)


def preview_table(stack: str, rows: list[tuple[str, str, str]], manifests: int, out: Path | None) -> None:
    table = Table(title=f"offline preview of stack {stack} (Pulumi mocks; not `pulumi preview`)")
    for column in ("type", "name", "parent"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    where = f"; {manifests} manifests in {out}" if out else ""
    console.print(f"{len(rows)} resources{where}")


def review_table(report: Any) -> None:
    if report.findings:
        table = Table(title=f"{len(report.findings)} findings")
        for column in ("tool", "rule", "severity", "file", "resource", "message"):
            table.add_column(column, overflow="fold")
        for f in sorted(report.findings, key=lambda f: (f.tool, f.rule, f.file)):
            table.add_row(f.tool, f.rule, f.severity, f.file, f.resource, f.message)
        console.print(table)
    summary = Table(title=f"review: {report.files} files ({report.distinct} distinct)")
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
        console.print(f"[red]{len(report.findings)} findings[/red]")
    elif report.not_run:
        missing = ", ".join(report.not_run)
        console.print(f"[yellow]INCOMPLETE: zero findings, but not run: {missing} (not installed; see above)[/yellow]")
    else:
        console.print("[green]clean: zero findings[/green]")


def smoke_table(report: Any) -> None:
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    table = Table(title=f"smoke test of {report.url}" + (f" (model {report.model})" if report.model else ""))
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, f"[{colour[check.status]}]{check.status}[/{colour[check.status]}]", check.detail)
    console.print(table)
    console.print("[green]passed[/green]" if report.passed else "[red]failed[/red]")
