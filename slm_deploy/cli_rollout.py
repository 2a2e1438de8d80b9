"""Fleet rollout commands of `slm-deploy`: `publish` (signed OCI artifacts), `rollout` (Ansible waves
with health gates), `fleet status|trust|simulate`.

Each parses its options, calls one function of slm_deploy.rollout and prints; cli.py registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from slm_deploy.cli_common import NonEmptyPath, clear_errors, print_json
from slm_deploy.errors import InputError


@click.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--release", required=True, help="Release name (letters, digits, . _ -), e.g. 2026.12.06-1.")
@click.option("--key", required=True, type=click.Path(path_type=Path), help="The release signing key (OpenSSH private key).")
@click.option(
    "--sequence",
    required=True,
    type=click.IntRange(0, 10**18 - 1),
    help="The release's place in order, signed: a box refuses a release older than the one it runs (e.g. 20261206001).",
)
@click.option("--to", "repository", metavar="REGISTRY/REPOSITORY", help="Push each box's artifact there as BOX-RELEASE.")
@click.option("--layout", type=NonEmptyPath(path_type=Path), help="Write BOX.oci.tar (OCI image layout) here, for offline boxes.")
@click.option("--box", "box_ids", multiple=True, help="Only this box (repeatable).")
@click.option("--insecure-registry", multiple=True, metavar="HOST[:PORT]", help="Plain HTTP to this registry host.")
@click.option("--promote", is_flag=True, help="Also move each box's own tag (BOX) to this release: the pull variant fetches it.")
@click.option("--allow-unlocked", is_flag=True, help="Use tag-only references for images missing from the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
@clear_errors
def publish(
    fleet_file: Path,
    release: str,
    key: Path,
    sequence: int,
    repository: str | None,
    layout: Path | None,
    box_ids: tuple[str, ...],
    insecure_registry: tuple[str, ...],
    promote: bool,
    allow_unlocked: bool,
    as_json: bool,
) -> None:
    """Sign each box's bundle and publish it as an OCI artifact (registry and/or layout archive).

    The signature (ssh-keygen -Y sign) covers the box it is for, the release and every digest; a box
    verifies it offline with ssh-keygen and the release public keys (allowed_signers)."""
    from slm_deploy.rollout.commands import publish as run_publish

    done = run_publish(
        fleet_file, release, key, box_ids, layout, repository, insecure_registry, allow_unlocked, promote, sequence
    )
    if as_json:
        print_json([item.__dict__ for item in done])
        return
    for item in done:
        where = ", ".join(w for w in (item.pushed, item.layout) if w)
        click.echo(f"{item.box}  {item.digest}  {where}")
    click.echo(f"published {len(done)} {'release' if len(done) == 1 else 'releases'} ({release})")


@click.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--release", required=True, help="The release `publish --layout` wrote.")
@click.option("--artifacts", required=True, type=click.Path(path_type=Path, file_okay=False), help="publish's --layout folder.")
@click.option("--allowed-signers", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Release public keys.")
@click.option(
    "--out", "out_dir", required=True, type=NonEmptyPath(path_type=Path), help="Folder for inventory, playbook, reports."
)
@click.option("--hosts", type=click.Path(path_type=Path, dir_okay=False), help="YAML: box id -> ansible_host, ansible_user, ...")
@click.option("--apply", is_flag=True, help="Run ansible-playbook now (waves, gates, rollback).")
@clear_errors
def rollout(
    fleet_file: Path, release: str, artifacts: Path, allowed_signers: Path, out_dir: Path, hosts: Path | None, apply: bool
) -> None:
    """Write (and with --apply run) the Ansible inventory and playbook that roll RELEASE out in the
    fleet's rings: a failed wave stops the rollout and its boxes roll back to their previous release."""
    from slm_deploy.rollout.commands import fleet_status
    from slm_deploy.rollout.commands import rollout as run_rollout
    from slm_deploy.rollout.tables import fleet_status_table

    written, code = run_rollout(fleet_file, release, artifacts, allowed_signers, out_dir, hosts, apply)
    if code is None:
        click.echo(
            f"wrote {len(written)} files to {out_dir}; run: cd {out_dir} && ansible-playbook -i inventory.yml playbook.yml"
        )
        return
    fleet_status_table(fleet_status(out_dir / "reports"))
    if code:
        sys.exit(1)


@click.group()
def fleet() -> None:
    """Fleet-wide views: what each box runs, and rollouts at scale."""


@fleet.command("status")
@click.argument("reports", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@clear_errors
def fleet_status_command(reports: Path, as_json: bool) -> None:
    """Which box runs which release, which wave failed and why, from a rollout's reports folder."""
    from slm_deploy.rollout.commands import fleet_status
    from slm_deploy.rollout.tables import fleet_status_table

    rows = fleet_status(reports)
    if as_json:
        print_json([row.__dict__ for row in rows])
    else:
        fleet_status_table(rows)
    if any(not row.installed or row.gate != "passed" for row in rows):
        sys.exit(1)


@fleet.command("monitoring")
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--release", required=True, help="The fleet's target release: boxes on another one are flagged.")
@click.option("--out", "out_dir", required=True, type=NonEmptyPath(path_type=Path), help="Folder for the central files.")
@click.option("--hosts", type=click.Path(path_type=Path, dir_okay=False), help="rollout's hosts.yaml (ansible_host per box).")
@click.option(
    "--keys",
    default="keys",
    show_default=True,
    help="Folder with <box>/api_key and <box>/tls_cert.pem (rollout's work/), as the central Prometheus sees it.",
)
@clear_errors
def fleet_monitoring(fleet_file: Path, release: str, out_dir: Path, hosts: Path | None, keys: str) -> None:
    """Write the central fleet view: Prometheus jobs reading every box's release metrics through its
    gateway, alert rules (rolled back, failed gate, not on the target release, unreachable) and a Grafana dashboard."""
    from slm_deploy.rollout.fleetview import write_monitoring

    written, unmonitored = write_monitoring(fleet_file, release, out_dir, hosts, keys)
    for box in unmonitored:
        click.echo(f"note: {box} has monitoring: false: no Prometheus on the box, so not in the fleet view", err=True)
    click.echo(f"wrote {len(written)} files to {out_dir}")


@fleet.command("trust")
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.argument("public_key", metavar="KEY.pub", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", "out_file", required=True, type=NonEmptyPath(path_type=Path), help="The allowed_signers file (other keys kept)."
)
@click.option("--valid-after", metavar="YYYYMMDD", help="The key signs releases from this day on.")
@click.option("--valid-before", metavar="YYYYMMDD", help="The key no longer verifies from this day on (retiring it).")
@clear_errors
def fleet_trust(fleet_file: Path, public_key: Path, out_file: Path, valid_after: str | None, valid_before: str | None) -> None:
    """Add a release key to the allowed_signers file the fleet's boxes verify releases with."""
    from slm_deploy.rollout.commands import trust

    click.echo(trust(fleet_file, public_key, out_file, valid_after, valid_before))


@fleet.command("simulate")
@click.option("--boxes", type=click.IntRange(1, 1_000_000), default=10000, show_default=True)
@click.option(
    "--ring", "rings", multiple=True, default=("1", "1%", "10%", "rest"), show_default=True, help="A count, N%, or rest."
)
@click.option("--forks", type=click.IntRange(1, 10000), default=50, show_default=True, help="Ansible forks.")
@click.option(
    "--flaky", type=click.FloatRange(0, 1), default=0.005, show_default=True, help="Share of boxes failing any release."
)
@click.option("--max-fail-percentage", type=click.FloatRange(0, 100), default=2.0, show_default=True)
@click.option("--bad-share", type=click.FloatRange(0, 1), default=1.0, show_default=True, help="Share a bad release breaks.")
@click.option("--median-box-seconds", type=click.FloatRange(1, 86400), default=120.0, show_default=True)
@clear_errors
def fleet_simulate(
    boxes: int,
    rings: tuple[str, ...],
    forks: int,
    flaky: float,
    max_fail_percentage: float,
    bad_share: float,
    median_box_seconds: float,
) -> None:
    """Simulate a good and a bad release through the rings (waves, forks, flaky boxes, registry load)."""
    import re

    from slm_deploy.rollout.simulate import Scenario, false_stop_probability, ring_sizes, run
    from slm_deploy.rollout.tables import simulation_table

    for ring in rings:
        if not re.fullmatch(r"rest|[1-9][0-9]*|[0-9]+(\.[0-9]+)?%", ring):
            raise InputError("arguments", "--ring", f"{ring!r}: expected a count, N% or rest")
    base = Scenario(boxes, rings, forks, median_box_seconds, flaky, max_fail_percentage, False, bad_share)
    good, bad = run(base), run(Scenario(**{**base.__dict__, "bad_release": True}))
    stops = [false_stop_probability(size, flaky, max_fail_percentage) for size in ring_sizes(base)]
    simulation_table(base, good, bad, stops)
