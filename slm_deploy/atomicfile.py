"""Writing output files so that each is either the old file or the whole new one (issue 10), and
a set of files (what `init` writes) either all or none (issue 22).

Temporary files get unpredictable names, created with O_EXCL and O_NOFOLLOW (tempfile.mkstemp),
so a symbolic link planted where a temporary file will be cannot redirect the write; a folder on
the way that is a symbolic link is refused. A full disk or an interruption leaves no half file,
and for a set, no new file and no folder it created."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from slm_deploy.errors import InputError


def _write_temp(directory: Path, name: str, data: bytes, mode: int) -> str:
    """A new temporary file beside NAME holding DATA; its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:40]}.", suffix=".tmp", dir=directory if str(directory) else ".")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = ""
    try:
        tmp = _write_temp(path.parent, path.name, data, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(str(path), "", f"cannot write: {exc.strerror or exc}") from None
        raise


def _folders(directory: Path, rel: Path) -> list[Path]:
    """The folders from DIRECTORY down to REL's parent, DIRECTORY's missing ancestors included."""
    chain = [parent for parent in reversed(directory.parents) if str(parent) not in ("", ".")]
    chain.append(directory)
    for part in rel.parent.parts:
        chain.append(chain[-1] / part)
    return chain


def write_all(directory: Path, files: dict[str, str], mode: int = 0o644) -> list[Path]:
    """Write FILES (relative path -> text) under DIRECTORY: every file, or (on any failure) none
    of them and none of the folders made for them. Existing files are replaced."""
    made: list[Path] = []
    staged: list[tuple[str, Path]] = []
    try:
        for rel, text in sorted(files.items()):
            relpath = Path(rel)
            if relpath.is_absolute() or ".." in relpath.parts:
                raise InputError(str(directory / rel), "", "not a path inside the folder")
            for folder in _folders(directory, relpath):
                try:
                    info = os.lstat(folder)
                except FileNotFoundError:
                    os.mkdir(folder)
                    made.append(folder)
                    continue
                if stat.S_ISLNK(info.st_mode) and folder not in (directory, *directory.parents):
                    raise InputError(str(folder), "", "is a symbolic link: refusing to write through it")
            path = directory / relpath
            staged.append((_write_temp(path.parent, path.name, text.encode("utf-8"), mode), path))
        for tmp, path in staged:
            os.replace(tmp, path)
        return [path for _, path in staged]
    except BaseException as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        if isinstance(exc, OSError):
            where = exc.filename if exc.filename is not None else directory
            raise InputError(str(where), "", f"cannot write: {exc.strerror or exc}; nothing was written") from None
        raise
