"""Putting bundles on disk: all or nothing, byte-identical for the same input.

Each box is built and written to a staging folder beside its destination, one at a time (one
bundle in memory at once); only when every box is staged are they swapped into place with
renames. A bad box or a failure leaves the previous bundles untouched and nothing staged.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from slm_deploy.bundle import BoxBundle, build_box
from slm_deploy.bundle.swap import check_replaceable, out_lock, put_in_place, recover_staging, staging_path
from slm_deploy.bundle.verify import VerifyReport, manifest_digest, verify_bundle  # noqa: F401 - re-exported
from slm_deploy.catalog import Catalog
from slm_deploy.errors import InputError
from slm_deploy.fleet import Box, Fleet
from slm_deploy.safeyaml import file_kind
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


ALLOW_EXAMPLE_LOCK_ENV = "SLM_DEPLOY_ALLOW_EXAMPLE_LOCK"


def refuse_example_lock(fleet: Fleet, allowed: bool) -> None:
    """The packaged lock is example data: its digests exist only on a test mirror, so every pull on
    a real box fails ("manifest unknown"). `bundle` refuses it, as `pulumi up` does, unless asked (E15)."""
    from slm_deploy.supply.lock import example_notice, find

    notice = example_notice(fleet.directory)
    if notice and not (allowed or os.environ.get(ALLOW_EXAMPLE_LOCK_ENV) == "1"):
        raise InputError(
            str(find(fleet.directory)),
            "example",
            "example data whose digests no registry serves; run `slm-deploy lock` beside the fleet file "
            "(or pass --allow-example-lock to generate bundles for a test)",
        )


def _with_parents(rel_dir: str) -> list[str]:
    parts = rel_dir.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _write_tree(root: Path, bundle: BoxBundle) -> None:
    """The bundle's files under ROOT, a folder made empty for them (the staging area's `new`): each
    folder is made once, parents first, and each file created, never looked up first."""
    base = str(root)
    # Explicit modes, always: the umask (077, 027), a default ACL or a setgid bit on the output
    # folder would otherwise decide them, and the containers' users (10001, nobody) could not read
    # the config bind-mounted from them (E5), or verify would find a folder others may change.
    for rel_dir in sorted({p for rel in bundle.files for p in _with_parents(os.path.dirname(rel)) if p}):
        path = os.path.join(base, rel_dir)
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
    for rel, data in bundle.files.items():
        _write_file(os.path.join(base, rel), data, bundle.modes[rel])


ARCHIVE = "archive.tar.gz"  # inside the staging folder, beside the staged bundle


def _write_file(path: str | Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_box(out: Path, bundle: BoxBundle, force: bool = False) -> Path:
    """Write one bundle to OUT/<box id>; see write_boxes."""
    write_boxes(out, [bundle], force=force)
    return out / bundle.box.id


def write_boxes(out: Path, bundles: list[BoxBundle], force: bool = False, tars: bool = False) -> None:
    """Write each bundle to OUT/<box id> (and OUT/<box id>.tar.gz with `tars`), under a lock on
    OUT. First every bundle and archive is written in full to its staging folder (a full disk
    stops the run with nothing replaced), then each is put in place atomically, keeping the
    operator's files (slm_deploy.bundle.swap)."""
    _write_staged(out, [b.box.id for b in bundles], iter(bundles), force, tars)


def write_fleet(
    out: Path,
    fleet: Fleet,
    boxes: tuple[Box, ...],
    *,
    force: bool = False,
    tars: bool = False,
    progress: Callable[[str], None] | None = None,
    allow_unlocked: bool | None = None,
) -> list[dict[str, Any]]:
    """Build and stage one box at a time, then put every bundle in place: what `slm-deploy bundle`
    does. Only one bundle is in memory at once (a 100,000-box fleet stays flat), and the run is
    still all or nothing: a box that cannot be built, like a full disk, removes what was staged
    and replaces nothing; an OUT folder this run created is removed again. Returns summary_rows."""
    catalog = locked_catalog(fleet.directory, allow_unlocked)
    rows: list[dict[str, Any]] = []

    def built() -> Iterator[BoxBundle]:
        for box in boxes:
            bundle = build_box(box, fleet, catalog)
            yield bundle
            rows.extend(summary_rows([bundle]))
            del bundle  # gone before the next box is built
            if progress:
                progress(box.id)

    created = not os.path.lexists(out)
    try:
        _write_staged(out, [b.id for b in boxes], built(), force, tars)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only when empty: nothing of anyone's is removed
        raise
    return rows


def _write_staged(out: Path, box_ids: list[str], bundles: Iterator[BoxBundle], force: bool, tars: bool) -> None:
    with out_lock(out):
        for box_id in box_ids:
            recover_staging(staging_path(out, box_id), out / box_id)
        for box_id in box_ids:
            check_replaceable(out / box_id, box_id, force)
            archive = out / f"{box_id}.tar.gz"
            if tars and (archive.exists() or archive.is_symlink()) and not stat.S_ISREG(os.lstat(archive).st_mode):
                kind = file_kind(os.lstat(archive).st_mode)
                raise InputError(str(archive), "", f"{kind} is in the way of the archive; move it away")
        try:
            for built in bundles:
                staging = staging_path(out, built.box.id)
                os.mkdir(staging, 0o700)
                os.mkdir(staging / "new", 0o700)
                _write_tree(staging / "new", built)
                os.chmod(staging / "new", 0o755)
                if tars:
                    _write_file(staging / ARCHIVE, tar_bytes(built), 0o644)
                del built  # a streamed run holds one bundle at a time
            for box_id in box_ids:
                staging = staging_path(out, box_id)
                if tars:
                    os.replace(staging / ARCHIVE, out / f"{box_id}.tar.gz")
                put_in_place(staging / "new", out / box_id, staging)
        except BaseException as exc:
            for box_id in box_ids:
                with contextlib.suppress(BaseException):  # the next run recovers; report the first error
                    recover_staging(staging_path(out, box_id), out / box_id)
            if isinstance(exc, OSError):
                where = exc.filename or str(out)
                raise InputError(str(where), "", f"cannot write the bundle: {exc.strerror or exc}") from None
            raise


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
    dest = out / f"{bundle.box.id}.tar.gz"
    tmp = ""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{bundle.box.id}.", suffix=".tar.gz", dir=out)
        with os.fdopen(fd, "wb") as handle:
            handle.write(tar_bytes(bundle))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(str(dest), "", f"cannot write the archive: {exc.strerror or exc}") from None
        raise
    return dest


def summary_rows(bundles: list[BoxBundle]) -> list[dict[str, Any]]:
    """One row per model of each bundle: what `slm-deploy bundle` prints (table or --json)."""
    return [
        {
            "box": b.box.id,
            "runtime": p.runtime,
            "model": p.model,
            "quantization": p.quantization,
            "context": p.context,
            "concurrency": p.concurrency,
            "device": p.device,
            "memory_used_gib": p.memory_used_gib,
            "device_memory_gib": p.device_memory_gib,
            "manifest_sha256": manifest_digest(b.files["MANIFEST.json"]),
        }
        for b in bundles
        for p in b.plans
    ]
