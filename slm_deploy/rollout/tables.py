"""Readable output of `rollout`, `fleet status` and `fleet simulate`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from slm_deploy.rollout.commands import BoxStatus
from slm_deploy.rollout.simulate import Outcome, Scenario

console = Console(highlight=False)
if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
    console = Console(highlight=False, width=140)


def fleet_status_table(rows: Sequence[BoxStatus]) -> None:
    table = Table(title="fleet status")
    for column in ("box", "ring", "release", "installed", "gate", "smoke", "plan", "rolled back", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.box,
            row.ring,
            row.release,
            "yes" if row.installed else "no",
            row.gate,
            row.smoke,
            row.plan,
            "yes" if row.rolled_back else "no",
            row.error,
        )
    console.print(table)
    failed = [row for row in rows if row.gate not in ("passed", "not reached")]
    waiting = [row for row in rows if row.gate == "not reached"]
    rings = sorted({row.ring for row in failed})
    lost = [row.box for row in failed if row.gate == "unreachable"]
    if failed:
        console.print(
            f"{len(failed)} of {len(rows)} boxes failed, in ring {', '.join(rings)}"
            + (f" ({len(lost)} unreachable: {', '.join(lost)})" if lost else "")
            + (f"; {len(waiting)} not reached (the rollout stopped)" if waiting else "")
        )
    else:
        console.print(f"{len(rows)} {'box' if len(rows) == 1 else 'boxes'} passed")


def simulation_table(scenario: Scenario, good: Outcome, bad: Outcome, false_stop: Sequence[float]) -> None:
    table = Table(title=f"rollout of {scenario.boxes} boxes, rings {' / '.join(scenario.rings)}, forks {scenario.forks}")
    for column in ("wave", "boxes", "good: failed", "good: minutes", "P(good stopped)", "bad: failed", "bad: stops here"):
        table.add_column(column, justify="right")
    for i, wave in enumerate(good.waves):
        bad_wave = bad.waves[i] if i < len(bad.waves) else None
        table.add_row(
            str(i + 1),
            str(wave.size),
            str(wave.failed),
            f"{wave.seconds / 60:.1f}",
            f"{false_stop[i]:.3f}",
            str(bad_wave.failed) if bad_wave else "-",
            "yes" if bad_wave and bad_wave.stopped else "",
        )
    console.print(table)
    console.print(
        f"good release: {good.boxes_reached} boxes in {good.hours:.1f} h"
        + (f", stopped at wave {good.stopped_at_wave} by flaky boxes" if good.stopped_at_wave else "")
        + f"; bad release: stopped at wave {bad.stopped_at_wave} after reaching {bad.boxes_reached} boxes"
        f" ({bad.boxes_failed} broken, rolled back)"
    )
    console.print(
        f"registry: push mode sends {good.push_bytes / 1e6:.0f} MB of bundles; the pull variant polls "
        f"{good.pull_manifest_requests_per_second:.1f} manifest requests/s (one per box per {scenario.poll_minutes} min)"
    )
