"""Putting bundles on disk: all or nothing, byte-identical for the same input.

Every bundle of a run is built in memory first, so a bad box stops the run before anything is
written. Each box is then written to a temporary directory beside its destination and swapped
into place with renames; a failure leaves the previous bundle untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from slm_deploy.bundle import MANIFEST_IGNORES, BoxBundle, build_box
from slm_deploy.catalog import Catalog
from slm_deploy.errors import InputError
from slm_deploy.fleet import Box, Fleet
from slm_deploy.supply.lock import locked_catalog

TAR_MTIME = 0


def select_boxes(fleet: Fleet, box_ids: Iterable[str]) -> tuple[Box, ...]:
    wanted = list(box_ids)
    if not wanted:
        return fleet.boxes
    by_id = {b.id: b for b in fleet.boxes}
    for box_id in wanted:
        if box_id not in by_id:
            from slm_deploy.catalog import nearest

            raise InputError(fleet.source, "boxes", f"no box {box_id!r}; nearest: {nearest(box_id, list(by_id))}")
    return tuple(by_id[b] for b in dict.fromkeys(wanted))


def build_fleet(
    fleet: Fleet,
    boxes: tuple[Box, ...],
    catalog: Catalog | None = None,
    progress: Callable[[str], None] | None = None,
    allow_unlocked: bool | None = None,
) -> list[BoxBundle]:
    """Bundle BOXES with the catalog pinned by the fleet's lock (images.lock.yaml beside the fleet
    file, else the one shipped with the catalog)."""
    catalog = catalog or locked_catalog(fleet.directory, allow_unlocked)
    bundles = []
    for box in boxes:
        bundles.append(build_box(box, fleet, catalog))
        if progress:
            progress(box.id)
    return bundles


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_tree(root: Path, bundle: BoxBundle) -> None:
    base = str(root)
    dirs = sorted({os.path.dirname(rel) for rel in bundle.files} - {""})
    for rel_dir in dirs:
        os.makedirs(os.path.join(base, rel_dir), exist_ok=True)
    umask = _current_umask()
    for rel, data in bundle.files.items():
        path = os.path.join(base, rel)
        mode = bundle.modes[rel]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mode & umask:  # the umask took bits the bundle needs (e.g. umask 077)
                os.fchmod(fd, mode)
        finally:
            os.close(fd)


def write_box(out: Path, bundle: BoxBundle) -> Path:
    """Write one bundle to OUT/<box id>, replacing an older one only once the new one is whole."""
    out.mkdir(parents=True, exist_ok=True)
    dest = out / bundle.box.id
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.box.id}.", dir=out))
    try:
        _write_tree(tmp, bundle)
        os.chmod(tmp, 0o755)
        # Keep what the operator created on the box (secrets/, .env) when regenerating in place.
        for kept in MANIFEST_IGNORES:
            old = dest / kept.rstrip("/")
            if old.exists():
                os.replace(old, tmp / kept.rstrip("/"))
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{bundle.box.id}.old.", dir=out))
            os.replace(dest, trash / "bundle")
            os.replace(tmp, dest)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def tar_bytes(bundle: BoxBundle) -> bytes:
    """A reproducible .tar.gz: sorted entries, fixed mtimes and owners, gzip mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(bundle.box.id, rel).parent) for rel in bundle.files} | {bundle.box.id})
        expanded = set(dirs)
        for d in dirs:
            expanded.update(str(p) for p in Path(d).parents if str(p) != ".")
        for d in sorted(expanded):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = TAR_MTIME
            tar.addfile(info)
        for rel, data in sorted(bundle.files.items()):
            info = tarfile.TarInfo(f"{bundle.box.id}/{rel}")
            info.size = len(data)
            info.mode = bundle.modes[rel]
            info.mtime = TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_tar(out: Path, bundle: BoxBundle) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{bundle.box.id}.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{bundle.box.id}.", suffix=".tar.gz", dir=out)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(tar_bytes(bundle))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class VerifyReport:
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)


def verify_bundle(directory: Path) -> VerifyReport:
    """Re-hash a bundle against its MANIFEST.json: missing, extra and changed files."""
    source = str(directory / "MANIFEST.json")
    try:
        manifest = json.loads((directory / "MANIFEST.json").read_text(encoding="utf-8"))
        files: dict[str, dict[str, str]] = manifest["files"]
        ignored = tuple(manifest.get("ignored", ()))
    except FileNotFoundError:
        raise InputError(source, "", "no MANIFEST.json: not a bundle directory") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(source, "files", f"unreadable manifest ({exc.__class__.__name__})") from None
    present = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel == "MANIFEST.json" or any(rel.startswith(i) if i.endswith("/") else rel == i for i in ignored):
            continue
        if path.is_file() or path.is_symlink():
            present[rel] = path
    expected = {rel for rel in files if rel != "MANIFEST.json"}
    missing = sorted(expected - set(present))
    extra = sorted(set(present) - expected)
    changed = []
    for rel in sorted(expected & set(present)):
        path = present[rel]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if not path.is_symlink() else "symlink"
        # The executable bit matters (init-secrets.sh); other mode bits follow the copier's umask.
        executable = bool(path.stat().st_mode & 0o111)
        expected_executable = bool(int(files[rel].get("mode", "0644"), 8) & 0o111)
        if digest != files[rel]["sha256"] or executable != expected_executable:
            changed.append(rel)
    return VerifyReport(tuple(missing), tuple(extra), tuple(changed))
