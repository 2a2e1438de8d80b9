"""What `publish`, `rollout`, `fleet status` and `verify ARCHIVE` do, below the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.rollout import boxagent


@dataclass(frozen=True)
class Published:
    box: str
    tag: str
    digest: str
    layout: str  # path of the layout archive, or ""
    pushed: str  # repository:tag, or ""


def publish(
    fleet_file: Path,
    release: str,
    key: Path,
    box_ids: tuple[str, ...],
    layout: Path | None,
    repository: str | None,
    insecure_hosts: tuple[str, ...] = (),
    allow_unlocked: bool = False,
    promote: bool = False,
    sequence: int = 0,
) -> list[Published]:
    from slm_deploy.bundle.writer import build_fleet, select_boxes
    from slm_deploy.fleet import load_fleet
    from slm_deploy.rollout.publish import build_release, write_layout

    if layout is None and repository is None:
        raise InputError("arguments", "--to", "give --to REGISTRY/REPOSITORY, --layout DIR, or both")
    if promote and repository is None:
        raise InputError("arguments", "--promote", "moves registry tags: give --to too")
    fleet = load_fleet(fleet_file)
    boxes = select_boxes(fleet, box_ids)
    releases = [
        build_release(b, fleet.name, release, key, sequence) for b in build_fleet(fleet, boxes, allow_unlocked=allow_unlocked)
    ]
    pusher = None
    if repository is not None:
        from slm_deploy.rollout.push import Pusher
        from slm_deploy.supply.registry import RegistryClient

        pusher = Pusher(repository, RegistryClient(insecure_hosts=frozenset(insecure_hosts)))
    out = []
    for item in releases:
        path = str(write_layout(layout, item)) if layout is not None else ""
        pushed = ""
        if pusher is not None:
            from slm_deploy.supply.registry import RegistryError

            try:
                pusher.push(item)
                if promote:
                    pusher.tag(item, item.box)
            except RegistryError as exc:
                raise InputError("--to", "", str(exc)) from None
            pushed = f"{repository}:{item.tag}"
        out.append(Published(item.box, item.tag, item.digest, path, pushed))
    return out


def verify_release(archive: Path, box: str, allowed_signers: Path) -> dict[str, str]:
    """What a box checks before it installs: the signature, the box it is addressed to, every digest."""
    try:
        values, _ = boxagent.read_layout(str(archive)).verified(box, str(allowed_signers))
    except boxagent.Refused as exc:
        raise InputError(str(archive), "", str(exc)) from None
    return values


def load_hosts(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    from slm_deploy.safeyaml import load, read_input

    data = load(read_input(path, path.name), path.name)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError(path.name, "", "expected a mapping of box id to Ansible connection variables (ansible_host, ...)")
    allowed = {
        "ansible_host",
        "ansible_port",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "ansible_ssh_common_args",
        "ansible_python_interpreter",
        "slm_root",  # where releases live on the box (default /srv/slm-deploy)
        "slm_docker_host",  # the engine to use when it is not the default socket
        "slm_gateway_port",
        "slm_gate_host",
        "slm_gate_connect_to",
    }
    for box, variables in data.items():
        unknown = sorted(set(variables) - allowed)
        if unknown:
            raise InputError(path.name, f"{box}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return {str(k): dict(v) for k, v in data.items()}


def rollout(
    fleet_file: Path, release: str, artifacts: Path, allowed_signers: Path, out: Path, hosts: Path | None, apply: bool
) -> tuple[list[Path], int | None]:
    from slm_deploy.fleet import load_fleet
    from slm_deploy.rollout.playbook import write_rollout

    if not boxagent.RELEASE.match(release):
        raise InputError("arguments", "--release", f"{release!r} is not a release name (letters, digits, . _ -; at most 64)")
    fleet = load_fleet(fleet_file)
    written = write_rollout(out, fleet, release, artifacts, allowed_signers, load_hosts(hosts))
    if not apply:
        return written, None
    binary = shutil.which("ansible-playbook")
    if binary is None:
        raise InputError("--apply", "", "ansible-playbook is not installed (pip install 'slm-deploy[rollout]')")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    done = subprocess.run([binary, "-i", "inventory.yml", "playbook.yml"], cwd=out, env=env, check=False)
    return written, done.returncode


@dataclass(frozen=True)
class BoxStatus:
    box: str
    ring: str
    release: str
    installed: bool
    gate: str
    rolled_back: bool
    error: str
    smoke: str = "-"  # the gate's two parts (reports before the plan gate have neither)
    plan: str = "-"


def fleet_status(reports: Path) -> list[BoxStatus]:
    if not reports.is_dir():
        raise InputError(str(reports), "", "no reports folder (written by `slm-deploy rollout --apply`)")
    rows = []
    for path in sorted(reports.glob("*.json")):
        try:
            data = json.loads(path.read_bytes()[: 1024 * 1024])
            rows.append(
                BoxStatus(
                    str(data["box"]),
                    str(data["ring"]),
                    str(data["release"]),
                    bool(data["installed"]),
                    str(data["gate"]),
                    str(data["rolled_back"]).lower() == "true",
                    str(data.get("error", "")),
                    str(data.get("smoke", "-")),
                    str(data.get("plan", "-")),
                )
            )
        except (ValueError, KeyError, TypeError):
            raise InputError(str(path), "", "not a rollout report") from None
    # Boxes of the rollout's inventory without a report: a stopped rollout never reached them.
    inventory = reports.parent / "inventory.yml"
    if inventory.is_file():
        from slm_deploy.safeyaml import load, read_input

        data = load(read_input(inventory, inventory.name), inventory.name)
        try:
            hosts = data["all"]["children"]["slm_fleet"]["hosts"]
        except (KeyError, TypeError):
            raise InputError(
                inventory.name, "all.children.slm_fleet.hosts", "not an inventory `slm-deploy rollout` wrote"
            ) from None
        reported = {row.box for row in rows}
        release = rows[0].release if rows else ""
        for box, variables in hosts.items():
            if box not in reported:
                ring = str((variables or {}).get("slm_ring", ""))
                rows.append(
                    BoxStatus(
                        str(box),
                        ring,
                        release,
                        False,
                        "not reached",
                        False,
                        "no report: the rollout stopped before its wave",
                    )
                )
    return rows


def trust(fleet_file: Path, public_key: Path, out: Path, valid_after: str | None, valid_before: str | None) -> str:
    """Add (or update) a release key in an allowed_signers file for this fleet's boxes, keeping the
    other keys: key rotation is adding the new key, then giving the old one a valid-before."""
    import re

    from slm_deploy.atomicfile import write_atomic
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(fleet_file)
    try:
        words = public_key.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(public_key), "", f"cannot read the public key ({exc.__class__.__name__})") from None
    if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-", "sk-")) or not re.fullmatch(r"[A-Za-z0-9+/=]+", words[1]):
        raise InputError(str(public_key), "", "not an OpenSSH public key (the .pub file ssh-keygen writes)")
    options = [f'namespaces="{boxagent.NAMESPACE}"']
    for name, value in (("valid-after", valid_after), ("valid-before", valid_before)):
        if value is not None:
            if not re.fullmatch(r"\d{8}", value):
                raise InputError("arguments", f"--{name}", "expected YYYYMMDD")
            options.append(f'{name}="{value}"')
    line = f"{boxagent.principal(fleet.name)} {','.join(options)} {words[0]} {words[1]}"
    kept = []
    if out.exists():
        try:
            principal = boxagent.principal(fleet.name)
            kept = [
                old
                for old in out.read_text(encoding="utf-8").splitlines()
                if not (old.split()[:1] == [principal] and words[1] in old.split())
            ]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(str(out), "", f"cannot read it ({exc.__class__.__name__})") from None
    write_atomic(out, ("\n".join([*kept, line]) + "\n").encode())
    return line
