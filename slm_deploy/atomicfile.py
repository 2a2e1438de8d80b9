"""Writing one output file so that it is either the old file or the whole new one (issue 10):
a temporary file beside it, renamed over it; a full disk or an interruption leaves no half file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from slm_deploy.errors import InputError


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(str(path), "", f"cannot write: {exc.strerror or exc}") from None
        raise
