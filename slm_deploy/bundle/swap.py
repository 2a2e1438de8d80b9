"""Putting a bundle in place without ever losing what the operator put next to it (issue 10).

What may be replaced: OUT/<box> when it is one of our bundles (a MANIFEST.json we wrote for that
box) holding only the files that manifest lists plus the operator's files (OPERATOR_ENTRIES).
Anything else there (another file, a folder that is not a bundle, a file the manifest does not
list) stops the run with an error naming it, unless --force. A symbolic link at OUT/<box> is
always refused. The operator's files are kept, with --force too.

How (crash safety): the new bundle is written in full to a staging folder OUT/.<box>.slm-staging.
The operator's files are *hard-linked* into it (same inodes: nothing is copied or moved), and the
staging tree is then exchanged with OUT/<box> in one atomic renameat2(RENAME_EXCHANGE). So at
every instant OUT/<box> is the whole old bundle or the whole new one, and the operator's files are
in it either way. Only then is the staging folder (now the old bundle) removed, after moving back
any operator file created meanwhile. Every run starts by finishing whatever an interrupted run
left (recover): it never deletes an operator file, and never crosses into a mounted filesystem.

A `secrets/` that is a mount point (or any operator entry on another filesystem, or one a non-root
user may not list or hard-link, such as root-owned secrets) cannot be linked or moved; then the
bundle's own entries are exchanged one by one around it. An interruption in that mode can leave
a mix of old and new generated files (never touching the operator's), which the next run
replaces; `verify` reports the mix meanwhile.

A lock (flock on the OUT folder) makes a second run on the same OUT fail at once instead of
interleaving with the first.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError

# What operators add to a box folder, the one list `bundle` (keeps them) and `verify` (does not
# count them as extra) share: init-secrets.sh creates secrets/ and the public copy of the gateway
# certificate gateway/tls_cert.pem; the env example becomes .env; the README's `docker save -o
# images.tar` (offline boxes); and the usual certificate folder and compose overrides, which swap
# keeps but verify still reports, because they change what runs.
OPERATOR_ENTRIES = (
    "secrets",
    ".env",
    "compose.override.yaml",
    "compose.override.yml",
    "certs",
    "images.tar",
    "gateway/tls_cert.pem",
)
OPERATOR_FOLDERS = ("secrets", "certs")
REPORTED_BY_VERIFY = ("compose.override.yaml", "compose.override.yml", "certs")
# verify's form of the list: a folder ends with "/".
VERIFY_IGNORES = tuple(e + "/" if e in OPERATOR_FOLDERS else e for e in OPERATOR_ENTRIES if e not in REPORTED_BY_VERIFY)
STAGING_SUFFIX = ".slm-staging"
RENAME_EXCHANGE = 2
CANNOT_LINK = (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP)
AT_FDCWD = -100


def staging_path(out: Path, box_id: str) -> Path:
    return out / f".{box_id}{STAGING_SUFFIX}"


def older_leftovers(out: Path, box_ids: list[str]) -> list[Path]:
    """Hidden folders that slm-deploy before issue 10 left after an interruption (`.BOX.xxxxxxxx`,
    `.BOX.old.xxxxxxxx`). They may hold an operator's secrets/ moved there, so they are never
    removed automatically; the run names them."""
    try:
        names = os.listdir(out)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        for box_id in box_ids:
            prefix = f".{box_id}."
            rest = name[len(prefix) :]
            if name.startswith(prefix) and not name.endswith(STAGING_SUFFIX) and rest.replace("old.", "", 1).isalnum():
                found.append(out / name)
    return found


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Exclusive use of OUT for this run; a second run fails at once with one clear line. The
    lock is flock(2) on the OUT folder itself: no lock file to leave behind or to race on."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(str(out), "", f"cannot use as the output folder: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(str(out), "", "another slm-deploy run is writing here; wait for it to finish") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------------------------
# Is OUT/<box> ours to replace?


def our_manifest(directory: Path, box_id: str) -> dict[str, Any] | None:
    """The MANIFEST.json we wrote for this box, or None when the folder is not one of our bundles."""
    try:
        fd = os.open(directory / "MANIFEST.json", os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = json.loads(handle.read(16 * 1024 * 1024))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    ours = (
        isinstance(data, dict)
        and str(data.get("generator", "")).startswith("slm-deploy ")
        and data.get("box") == box_id
        and isinstance(data.get("files"), dict)
    )
    return data if ours else None


def _is_operator(rel: str) -> bool:
    return any(rel == entry or rel.startswith(entry + "/") for entry in OPERATOR_ENTRIES)


def check_replaceable(dest: Path, box_id: str, force: bool) -> None:
    """Raise unless OUT/<box> is absent, or ours and holding nothing we would drop (or --force)."""
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise InputError(str(dest), "", "is a symbolic link; refusing to write through it (remove the link)")
    hint = "move it away or run with --force to replace it"
    if not stat.S_ISDIR(info.st_mode):
        if not force:
            raise InputError(str(dest), "", f"exists and is not a bundle folder; {hint}")
        return
    manifest = our_manifest(dest, box_id)
    if manifest is None:
        if not force:
            raise InputError(str(dest), "", f"exists and is not a bundle of box {box_id!r} (no MANIFEST.json of ours); {hint}")
        return
    listed = set(manifest["files"]) | {"MANIFEST.json"}
    for dirpath, dirnames, filenames in os.walk(dest):
        rel_dir = os.path.relpath(dirpath, dest)
        for name in sorted(filenames + dirnames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            if _is_operator(rel):
                continue
            if name in dirnames and not os.path.islink(full):
                if not any(f.startswith(rel + "/") for f in listed) and not force:
                    raise InputError(full, "", f"is not part of the bundle nor an operator file; {hint}")
                continue
            if rel not in listed and not force:
                raise InputError(
                    full, "", f"is not part of the bundle nor an operator file ({', '.join(OPERATOR_ENTRIES)}); {hint}"
                )
        dirnames[:] = [d for d in dirnames if not _is_operator(d if rel_dir == "." else f"{rel_dir}/{d}")]


# ---------------------------------------------------------------------------------------------
# Primitives (module-level so a fault-injection test can make each one fail)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


def _exchange_or_replace(new: Path, dest: Path, old: Path) -> None:
    """dest <- new atomically; the previous dest ends up at `new` (or `old` without exchange)."""
    try:
        exchange(new, dest)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        # No exchange on this filesystem: two renames; `recover` puts `old` back if we stop between.
        os.rename(dest, old)
        os.rename(new, dest)


def remove_tree(path: Path) -> None:
    """rm -r that never follows a link and never descends into another filesystem (a mount)."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                os.unlink(full)
            elif info.st_dev != top.st_dev:
                raise OSError(errno.EBUSY, "a mount point; not removed", full)
            else:
                os.rmdir(full)
    os.rmdir(path)


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of source (a file or a folder) at target, folders recreated with the
    same mode. Raises OSError(EXDEV) for anything on another filesystem."""
    info = os.lstat(source)
    if not stat.S_ISDIR(info.st_mode):
        os.link(source, target, follow_symlinks=False)
        return
    base = os.lstat(source).st_dev

    def unlistable(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(source, onerror=unlistable):
        rel = os.path.relpath(dirpath, source)
        here = target if rel == "." else target / rel
        dir_info = os.lstat(dirpath)
        if dir_info.st_dev != base or os.path.ismount(dirpath):
            raise OSError(errno.EXDEV, "a mount point", dirpath)
        os.mkdir(here, stat.S_IMODE(dir_info.st_mode) | 0o700)
        os.chmod(here, stat.S_IMODE(dir_info.st_mode))
        _chown_like(here, dir_info)
        for name in filenames:
            os.link(os.path.join(dirpath, name), here / name, follow_symlinks=False)
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                os.link(os.path.join(dirpath, name), here / name, follow_symlinks=False)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


def _chown_like(path: Path, info: os.stat_result) -> None:
    if hasattr(os, "chown") and os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)


def _needs_entrywise(dest: Path) -> bool:
    """An operator entry that is a mount point (or on another filesystem) cannot be linked."""
    base = os.lstat(dest).st_dev
    for name in OPERATOR_ENTRIES:
        entry = dest / name
        if os.path.lexists(entry) and (os.path.ismount(entry) or os.lstat(entry).st_dev != base):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# The swap


def put_in_place(staged: Path, dest: Path, staging: Path) -> None:
    """Replace dest by the complete tree `staged` (inside the `staging` folder), keeping the
    operator's entries of dest. `staging` is removed at the end."""
    if not os.path.lexists(dest):
        os.rename(staged, dest)
        remove_tree(staging)
        return
    if stat.S_ISDIR(os.lstat(dest).st_mode) and _needs_entrywise(dest):
        _put_entrywise(staged, dest, staging)
        return
    if stat.S_ISDIR(os.lstat(dest).st_mode):
        try:
            for name in OPERATOR_ENTRIES:
                if os.path.lexists(dest / name):
                    (staged / name).parent.mkdir(parents=True, exist_ok=True)
                    _link_tree(dest / name, staged / name)
        except OSError as exc:
            if exc.errno not in CANNOT_LINK:
                raise
            # Not ours to link (another filesystem, a folder we may not list, files a non-root
            # user may not hard-link): leave the operator's entries where they are.
            for name in OPERATOR_ENTRIES:
                if os.path.lexists(staged / name):
                    remove_tree(staged / name)
            _put_entrywise(staged, dest, staging)
            return
        os.chmod(staged, stat.S_IMODE(os.lstat(dest).st_mode))
    _exchange_or_replace(staged, dest, staging / "old")
    recover_staging(staging, dest)


def _put_entrywise(staged: Path, dest: Path, staging: Path) -> None:
    previous = our_manifest(dest, dest.name)
    old_top = {rel.split("/", 1)[0] for rel in (previous or {}).get("files", {})} - set(OPERATOR_ENTRIES)
    new_top = set(os.listdir(staged))
    for name in sorted(new_top, key=lambda n: (n == "MANIFEST.json", n)):  # the manifest last
        for nested in (e for e in OPERATOR_ENTRIES if e.startswith(name + "/")):
            # An operator file inside a generated folder (gateway/tls_cert.pem) moves with it;
            # an interruption leaves it in staging, where recover_staging finds it.
            if os.path.lexists(dest / nested) and not os.path.lexists(staged / nested):
                (staged / nested).parent.mkdir(parents=True, exist_ok=True)
                os.rename(dest / nested, staged / nested)
        if os.path.lexists(dest / name):
            _exchange_or_replace(staged / name, dest / name, staging / f"old-{name}")
        else:
            os.rename(staged / name, dest / name)
    for name in sorted(old_top - new_top):  # what the old bundle had and the new one has not
        if os.path.lexists(dest / name):
            os.rename(dest / name, staged / name)
    remove_tree(staging)


def recover_staging(staging: Path, dest: Path) -> None:
    """Finish what a run left at `staging`, whatever step it stopped at: put the old bundle back
    if dest is missing, move every operator file still in staging into dest, remove staging."""
    if not os.path.lexists(staging):
        return
    old = staging / "old"
    if not os.path.lexists(dest) and os.path.lexists(old):
        os.rename(old, dest)  # stopped between the two renames (a filesystem without exchange)
    if os.path.isdir(dest) and not os.path.islink(dest):
        for candidate in (staging / "new", old):
            if os.path.isdir(candidate) and not os.path.islink(candidate):
                _move_operator_entries(candidate, dest)
    remove_tree(staging)


def _move_operator_entries(source: Path, dest: Path) -> None:
    """Every operator file under source that dest lacks moves into dest; one dest already has (the
    same inode, from the hard links) is left to be removed with source. A different file at the
    same place in both stops the run: neither is deleted."""
    for name in OPERATOR_ENTRIES:
        entry = source / name
        if not os.path.lexists(entry):
            continue
        if not stat.S_ISDIR(os.lstat(entry).st_mode) or os.path.islink(entry):
            _settle(entry, dest / name)
            continue
        for dirpath, dirnames, filenames in os.walk(entry):
            rel = os.path.relpath(dirpath, source)
            if not os.path.lexists(dest / rel):
                os.rename(dirpath, dest / rel)
                dirnames[:] = []
                continue
            for item in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                _settle(Path(dirpath) / item, dest / rel / item)


def _settle(source: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(source, target)
        return
    if os.path.samestat(os.lstat(source), os.lstat(target)):
        return
    raise InputError(str(source), "", f"an operator file differs from {target}; both are kept; resolve by hand, then run again")
