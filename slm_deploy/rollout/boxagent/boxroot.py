"""The box's release root (ROOT, default /srv/slm-deploy) as the other modules read and write it:

ROOT/releases/<release>/<box>/   one extracted bundle per release (compose project dir; the
                                 compose file names its project, so volumes stay the same)
ROOT/releases/<release>/statement  the verified statement of that release, for the order
ROOT/current, ROOT/previous       symbolic links to release folders
ROOT/failed/<release>.json        a release that failed here and was rolled back
ROOT/sequence.json                the highest sequence ever installed here
"""

from __future__ import annotations

import json
import os

from .statement import MAX_SMALL, Refused, parse_statement

DEFAULT_ROOT = "/srv/slm-deploy"
STATEMENT_FILE = "statement"  # releases/<release>/statement: the verified statement, for the order
FAILED = "failed"  # ROOT/failed/<release>.json: a release that failed its gate here (F2)
# ROOT/sequence.json: the highest sequence ever installed here. Compared besides the current
# release's, which may be gone (a failed first release is unlinked) or older (after a rollback).
HIGH_WATER = "sequence.json"


def set_link(root: str, name: str, target: str | None) -> None:
    path = os.path.join(root, name)
    if target is None:
        if os.path.lexists(path):
            os.unlink(path)
        return
    tmp = path + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)  # atomic: the link is the old or the new one, never missing


def link_target(root: str, name: str) -> str | None:
    path = os.path.join(root, name)
    return os.readlink(path) if os.path.islink(path) else None


def statement_of(root: str, name: str) -> dict[str, str] | None:
    """The verified statement of the release a link (current, previous) points at; None when there
    is none (no release yet, or one installed before releases carried an order)."""
    target = link_target(root, name)
    if not target:
        return None
    try:
        with open(os.path.join(root, os.path.dirname(target), STATEMENT_FILE), "rb") as handle:
            return parse_statement(handle.read(MAX_SMALL))
    except (OSError, Refused):
        return None


def failed_mark(root: str, release: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(root, FAILED, release + ".json"), "rb") as handle:
            mark = json.loads(handle.read(MAX_SMALL))
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in mark.items()} if isinstance(mark, dict) else None


def write_json(path: str, data: dict[str, str]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, sort_keys=True) + "\n")
    os.replace(tmp, path)  # same folder: never a rename across filesystems
