"""Install a verified release beside the previous one, switch to it, roll back, and remember what
happened (the order installed so far, the releases that failed here).

Operator files (secrets/, .env, overrides, certs/) are copied from the current release into the
new one, so a release never loses what the operator put there; before the first release, from
ROOT/operator/ when the operator prepared one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from .artifact import Artifact
from .boxroot import FAILED, HIGH_WATER, STATEMENT_FILE, failed_mark, link_target, set_link, statement_of, write_json
from .metrics import record_state
from .statement import MAX_SMALL, SEQUENCE, Refused, statement_text
from .unpack import load_images, unpack


class FailedBefore(Refused):
    """The release failed on this box and was rolled back: not installed again until a newer
    release or an explicit --retry-failed (outside review F2: the pull timer retried it forever)."""


def _copy_keeping_owner(source: str, dest: str) -> None:
    """Copy an operator entry with its modes AND owners: init-secrets.sh gives secrets to the
    containers' user (uid 10001, mode 0600), and a copy owned by root is one the gateway cannot
    read (`cat: /run/secrets/api_key: Permission denied`, seen in tests/test_rollout_live.py)."""
    if os.path.isdir(source):
        shutil.copytree(source, dest, symlinks=True)
        pairs = [(source, dest)]
        for folder, dirs, files in os.walk(source):
            for name in dirs + files:
                here = os.path.join(folder, name)
                pairs.append((here, os.path.join(dest, os.path.relpath(here, source))))
    elif os.path.isfile(source):
        shutil.copy2(source, dest)
        pairs = [(source, dest)]
    else:
        return  # a FIFO, socket or device is no operator file
    for src, dst in pairs:
        info = os.lstat(src)
        os.lchown(dst, info.st_uid, info.st_gid)


def install(
    artifact: Artifact,
    box: str,
    allowed_signers: str,
    root: str,
    operator_entries: list[str],
    fleet: str | None = None,
    allow_downgrade: bool = False,
    retry_failed: bool = False,
    images: str | None = None,
) -> dict[str, str]:
    """Verify, unpack into releases/<release>, carry the operator's files over from the current
    release, then make it current (the old current becomes previous). Returns the statement.

    Refused before anything changes: a release older (by its signed sequence) than the current one
    unless ALLOW_DOWNGRADE (a replayed old artifact; rollback stays allowed), and a release that
    failed here and was rolled back (`rollback --failed`) unless RETRY_FAILED."""
    values, bundle = artifact.verified(box, allowed_signers, fleet)
    release = values["release"]
    releases = os.path.join(root, "releases")
    final = os.path.join(releases, release)
    current = link_target(root, "current")
    if current == os.path.join("releases", release, box) and os.path.isdir(final):
        return values  # already installed and current: a re-run changes nothing
    mark = failed_mark(root, release)
    if mark is not None and mark.get("bundle") in ("", values["bundle"]) and not retry_failed:
        raise FailedBefore(
            f"release {release} failed on this box ({mark.get('reason') or 'rolled back'}) and was rolled back; "
            "not installed again: publish a newer release, or install it with --retry-failed"
        )
    newest = _newest_installed(root)
    if newest is not None and int(values["sequence"]) < int(newest["sequence"]) and not allow_downgrade:
        raise Refused(
            f"release {release} (sequence {values['sequence']}) is older than {newest['release']} "
            f"(sequence {newest['sequence']}), installed here before: a downgrade; use rollback, or --allow-downgrade"
        )
    os.makedirs(releases, mode=0o755, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{release}.", dir=releases)
    try:
        unpack(bundle, box, staging)
        with open(os.path.join(staging, STATEMENT_FILE), "wb") as handle:
            handle.write(statement_text(**values))
        if images:
            load_images(images, os.path.join(staging, box))
        # The operator's files come from the current release; before the first one, from
        # ROOT/operator/ (a compose override or certificates prepared before the first rollout).
        seed = current or ("operator" if os.path.isdir(os.path.join(root, "operator")) else None)
        if seed:
            for entry in operator_entries:
                source = os.path.join(root, seed, entry)
                if os.path.lexists(source) and not os.path.islink(source):
                    _copy_keeping_owner(source, os.path.join(staging, box, entry))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if mark is not None:
        os.unlink(os.path.join(root, FAILED, release + ".json"))
    if current and current != os.path.join("releases", release, box):
        set_link(root, "previous", current)
    set_link(root, "current", os.path.join("releases", release, box))
    # `newest` as read before the install: a downgrade (--allow-downgrade) never lowers the mark
    if newest is None or int(values["sequence"]) >= int(newest["sequence"]):
        write_json(os.path.join(root, HIGH_WATER), {"release": release, "sequence": values["sequence"]})
    _prune(root)
    record_state(root, "installed", values)
    return values


def _newest_installed(root: str) -> dict[str, str] | None:
    """The newest release (by signed sequence) ever installed here: the high-water file, or the
    current release's statement where that is newer (a box from before the file existed)."""
    found: list[dict[str, str]] = []
    try:
        with open(os.path.join(root, HIGH_WATER), encoding="utf-8") as handle:
            data = json.loads(handle.read(MAX_SMALL))
        if isinstance(data, dict) and SEQUENCE.match(str(data.get("sequence", ""))):
            found.append({"release": str(data.get("release", "")), "sequence": str(data["sequence"])})
    except (OSError, ValueError):
        pass  # none yet; a damaged file is replaced at the next install
    running = statement_of(root, "current")
    if running is not None:
        found.append(running)
    return max(found, key=lambda d: int(d["sequence"]), default=None)


def rollback(root: str, failed: str | None = None) -> str:
    """Make the previous release current again; returns its folder. With FAILED (a reason), the
    release rolled away from is remembered as failed on this box, so that the pull timer does not
    install it again at its next tick."""
    previous = link_target(root, "previous")
    current = link_target(root, "current")
    if failed is not None and current:
        values = statement_of(root, "current") or {"release": current.split("/")[1], "bundle": ""}
        mark = {"release": values["release"], "bundle": values["bundle"], "reason": failed[:200]}
        write_json(os.path.join(root, FAILED, values["release"] + ".json"), mark)
    if not previous or not os.path.isdir(os.path.join(root, previous)):
        if failed is not None and current:
            # The box's first release failed: nothing to go back to. Unlinking `current` keeps the
            # next timer tick from bringing the failed release up again.
            set_link(root, "current", None)
            raise Refused(f"no previous release to roll back to; {current} is marked failed and no longer current")
        raise Refused("no previous release to roll back to")
    set_link(root, "current", previous)
    set_link(root, "previous", current)
    record_state(root, "rolled_back")
    return previous


def _prune(root: str) -> None:
    keep = {t.split("/")[1] for t in (link_target(root, "current"), link_target(root, "previous")) if t}
    releases = os.path.join(root, "releases")
    for name in sorted(os.listdir(releases)):
        if name not in keep and not name.startswith("."):
            shutil.rmtree(os.path.join(releases, name), ignore_errors=True)
