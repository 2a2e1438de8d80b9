"""`slm-deploy verify`: a bundle on a box against its MANIFEST.json, and the manifest against a
digest the operator kept off the box (issue 10, item 11).

The manifest alone cannot be trusted: whoever can change a file on the box can re-hash it into
MANIFEST.json. So bundle prints each manifest's sha256, and `verify --expect sha256:...` checks
the manifest against it first. Without --expect, a manifest must still look exactly like one we
write (same keys, the same ignore list, no widened exceptions). Files are compared by content,
type (a FIFO, socket, device or link is never a bundle file) and mode: no permission bit beyond
the manifest's (group/world write, setuid, setgid, sticky), and the executable bit as listed.
Nothing is read before its type is known, so a FIFO never blocks verify.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_deploy.bundle import MANIFEST_IGNORES
from slm_deploy.errors import InputError
from slm_deploy.safeyaml import check_regular, file_kind

MANIFEST_KEYS = {"box", "files", "fleet", "generator", "ignored", "spec_sha256"}
MANIFEST_LIMIT = 16 * 1024 * 1024
# Config is bind-mounted into containers that run as 10001 or nobody, not as the bundle's owner (E5).
UNREADABLE = "the containers' users cannot read it (generated under a hardened umask? chmod dirs 0755, files 0644)"


@dataclass(frozen=True)
class VerifyReport:
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    changed: tuple[str, ...]
    modes: tuple[str, ...] = ()  # "path: what is wrong"
    digest: str = ""  # sha256 of MANIFEST.json as found
    unexpected: tuple[str, ...] = ()  # the manifest is not the one --expect names

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.modes or self.unexpected)


def manifest_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_manifest(directory: Path, source: str) -> bytes:
    try:
        fd = os.open(directory / "MANIFEST.json", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(source, "", "no MANIFEST.json: not a bundle directory") from None
    except OSError as exc:
        raise InputError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        check_regular(fd, source, MANIFEST_LIMIT, "not a manifest", "too large for a manifest ({size} bytes; at most {limit})")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MANIFEST_LIMIT + 1)
    finally:
        os.close(fd)


def _parse_manifest(data: bytes, source: str) -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InputError(source, "", f"unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or set(manifest) != MANIFEST_KEYS:
        raise InputError(source, "", "not a manifest slm-deploy writes (its keys differ)")
    if not str(manifest["generator"]).startswith("slm-deploy "):
        raise InputError(source, "generator", "not written by slm-deploy")
    # A manifest of an earlier release lists fewer operator files; a list wider than ours is a change.
    if not isinstance(manifest["ignored"], list) or not set(map(str, manifest["ignored"])) <= set(MANIFEST_IGNORES):
        raise InputError(source, "ignored", f"the ignore list was changed (slm-deploy writes {list(MANIFEST_IGNORES)})")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise InputError(source, "files", "expected a mapping of files")
    for rel, entry in files.items():
        ok = isinstance(entry, dict) and set(entry) == {"sha256", "mode"} and str(entry.get("mode")) in ("0644", "0755")
        if not ok or rel.startswith("/") or ".." in rel.split("/") or _ignored(rel):
            raise InputError(source, f"files.{rel}", "not an entry slm-deploy writes")
    return files, tuple(MANIFEST_IGNORES)


def _ignored(rel: str) -> bool:
    return any(rel.startswith(i) if i.endswith("/") else rel == i for i in MANIFEST_IGNORES)


def verify_bundle(directory: Path, expect: str | None = None) -> VerifyReport:
    """Re-hash a bundle against its MANIFEST.json (and the manifest against `expect`)."""
    source = str(directory / "MANIFEST.json")
    data = _read_manifest(directory, source)
    digest = manifest_digest(data)
    if expect is not None and digest != expect.strip().lower():
        return VerifyReport((), (), (), (), digest, (f"MANIFEST.json: {digest}, expected {expect}",))
    files, _ = _parse_manifest(data, source)
    present: dict[str, os.stat_result] = {}
    modes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            info = os.lstat(os.path.join(dirpath, name))
            if rel == "MANIFEST.json" or _ignored(rel) or _ignored(rel + "/"):
                if rel == "MANIFEST.json" and stat.S_IMODE(info.st_mode) & 0o7022:
                    modes.append(f"{rel}: mode {stat.S_IMODE(info.st_mode):04o} lets others change it")
                continue
            if stat.S_ISDIR(info.st_mode):
                if stat.S_IMODE(info.st_mode) & 0o7022:
                    modes.append(f"{rel}/: mode {stat.S_IMODE(info.st_mode):04o} lets others change it")
                elif stat.S_IMODE(info.st_mode) & 0o005 != 0o005:
                    modes.append(f"{rel}/: mode {stat.S_IMODE(info.st_mode):04o}: {UNREADABLE}")
                continue
            present[rel] = info
        dirnames[:] = [d for d in dirnames if not _ignored((d if rel_dir == "." else f"{rel_dir}/{d}") + "/")]
    expected = set(files) - {"MANIFEST.json"}
    missing = sorted(expected - set(present))
    extra = sorted(set(present) - expected)
    changed = []
    for rel in sorted(expected & set(present)):
        info = present[rel]
        if not stat.S_ISREG(info.st_mode):
            changed.append(rel)
            modes.append(f"{rel}: {file_kind(info.st_mode)}, not a regular file")
            continue
        with open(directory / rel, "rb") as handle:
            content_digest = hashlib.sha256(handle.read()).hexdigest()
        wanted = int(files[rel]["mode"], 8)
        actual = stat.S_IMODE(info.st_mode)
        wrong_mode = bool(actual & ~wanted & 0o7777) or (actual & 0o100) != (wanted & 0o100)
        unreadable = actual & 0o004 == 0
        if wrong_mode:
            modes.append(f"{rel}: mode {actual:04o}, expected {wanted:04o}")
        elif unreadable:
            modes.append(f"{rel}: mode {actual:04o}, expected {wanted:04o}: {UNREADABLE}")
        wrong_mode = wrong_mode or unreadable
        if content_digest != files[rel]["sha256"] or wrong_mode:
            changed.append(rel)
    for rel in extra:
        if not stat.S_ISREG(present[rel].st_mode):
            modes.append(f"{rel}: {file_kind(present[rel].st_mode)} added")
    return VerifyReport(tuple(missing), tuple(extra), tuple(changed), tuple(modes), digest)
