"""Collecting artifacts: every regular file under the paths given, read once, parsed once (with
the bounded loader), given a role (which tools see it) and a content key (what de-duplication
compares)."""

from __future__ import annotations

import hashlib
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.review.model import TEXT_LIMIT, Artifact, NotReviewed
from slm_deploy.safeyaml import TooExpensive, file_kind, load_all

COMPOSE_NAMES = {"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}
YAML_ROLES = {"compose", "manifest", "prometheus", "rules", "loki-rules", "yaml", "workflow"}


@lru_cache(maxsize=4096)
def yaml_docs_cached(path: str, mtime_ns: int) -> tuple[tuple[Any, ...], str, bool]:
    """(documents, problem, too expensive for any YAML reader): the bounded loader, so a hostile
    file costs a finding, not a hang."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return tuple(load_all(text, Path(path).name, strict=False)), "", False
    except InputError as exc:
        return (), exc.field + ": " + exc.message if exc.field else exc.message, isinstance(exc, TooExpensive)
    except (OSError, UnicodeDecodeError) as exc:
        return (), f"unreadable ({exc.__class__.__name__})", False


def yaml_docs(path: Path) -> list[Any]:
    """Parsed once per file and reused by every tool (callers must not modify the documents)."""
    return list(yaml_docs_cached(str(path), path.stat().st_mtime_ns)[0])


def yaml_problem(path: Path) -> str:
    return yaml_docs_cached(str(path), path.stat().st_mtime_ns)[1]


def role_of(path: Path) -> str:
    name = path.name
    if name in COMPOSE_NAMES:
        return "compose"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if path.suffix in (".yaml", ".yml") and path.parent.name == "workflows" and path.parent.parent.name == ".github":
        return "workflow"
    if path.suffix in (".yaml", ".yml"):
        docs = yaml_docs(path)
        if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
            return "manifest"
        if name == "prometheus.yml":
            return "prometheus"
        if docs and isinstance(docs[0], dict) and isinstance(docs[0].get("groups"), list):
            # Loki's ruler reads <rules directory>/<tenant>/*.yml: LogQL, which promtool cannot parse.
            return "loki-rules" if path.parent.parent.name == "rules" and path.parent.parent.parent.name == "loki" else "rules"
        return "yaml"
    return "text"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def collect(root: Path, label_root: str, not_reviewed: NotReviewed | None = None) -> list[Artifact]:
    """Every regular file under root. Links are never followed: a link that stays in the tree
    needs nothing (its target is reviewed where it lies); one that leaves it, or dangles, is
    reported. Directories that cannot be listed and files that cannot be read are reported too."""
    skip: NotReviewed = not_reviewed or (lambda label, why: None)
    real_root = os.path.realpath(root)
    out = []

    def label_of(path: str) -> str:
        return f"{label_root}/{Path(path).relative_to(root).as_posix()}"

    def unlistable(exc: OSError) -> None:
        skip(
            label_of(str(exc.filename)) if exc.filename and str(exc.filename) != str(root) else label_root,
            f"directory cannot be listed: {exc.strerror or exc}",
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError as exc:
                skip(label_of(path), f"cannot be read: {exc.strerror or exc}")
                continue
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(path)
                if not _inside(target, real_root):
                    skip(label_of(path), f"symbolic link to {target} leaves the reviewed tree; not followed")
                elif not os.path.exists(target):
                    skip(label_of(path), "broken symbolic link")
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            art = read_artifact(Path(path), label_of(path), skip)
            if art is not None:
                out.append(art)
    return sorted(out, key=lambda a: a.label)


def read_artifact(path: Path, label: str, skip: NotReviewed, follow: bool = False) -> Artifact | None:
    """The file as an artifact, or None after saying why it cannot be reviewed. The checks run on
    the opened descriptor: a FIFO is never waited on, a device never read, a link never followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        skip(label, f"cannot be read: {exc.strerror or exc}")
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            skip(label, f"not a regular file ({file_kind(info.st_mode).removeprefix('a ').removeprefix('an ')})")
            return None
        if info.st_size > TEXT_LIMIT:
            skip(label, f"too large ({info.st_size} bytes; the review reads at most {TEXT_LIMIT})")
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(TEXT_LIMIT + 1)
    except OSError as exc:
        skip(label, f"cannot be read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(data) > TEXT_LIMIT:
        skip(label, f"too large (more than {TEXT_LIMIT} bytes)")
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        skip(label, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): binary files are not reviewed")
        return None
    role = role_of(path)
    problem = ""
    if path.suffix in (".yaml", ".yml") or role != "text":
        _, problem, expensive = yaml_docs_cached(str(path), path.stat().st_mtime_ns)
        if expensive:  # checkov, compose and the validators would hang or recurse on it
            skip(label, f"YAML too costly to expand ({problem}); no tool was given it")
            return None
    key = hashlib.sha256(role.encode() + b"\0" + data).hexdigest()
    # YAML that did not parse is given to no YAML reader (yamllint took 4.5 minutes on 50,000
    # nested levels, issue 22): our rules report the parse error once, line tools still read it.
    return Artifact(path, label, key, role, parsed=not (role in YAML_ROLES and problem))


def in_secrets_folder(art: Artifact) -> bool:
    """Files under a `secrets/` folder hold secrets by design: every tool reviews them except the
    secret detectors (which would report the secret they are meant to hold, and print nothing else)."""
    return "secrets" in Path(art.label).parts[:-1]


def resource_name(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{manifest.get('kind')}/{name}"
