"""The image lock: every image reference resolved to digests, one file reviewed in git.

`slm-deploy lock` resolves each `repository:tag` of the catalog (and of any extra images file)
through the registry and writes, per image, the digest the tag points at (the multi-platform
index, or the single manifest) and per platform the manifest digest and the image config digest
(what `docker image inspect` calls the image Id). Generators read the lock: every reference
becomes `repository:tag@sha256:...`, and a box whose architecture an image does not publish is
refused at generation time. `resolved` keeps its old value while the digest is unchanged, so
re-locking an unmoved tag rewrites the file byte for byte.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from slm_deploy import yamlout
from slm_deploy.catalog import CATALOG_DIR, Catalog, Image
from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.safeyaml import load_data, read_input
from slm_deploy.spec import CpuArch, Frozen
from slm_deploy.supply.model import LockEntry, PlatformDigests
from slm_deploy.supply.registry import RegistryClient, mirror_path

LOCK_NAME = "images.lock.yaml"
PACKAGED_LOCK = CATALOG_DIR / LOCK_NAME
ALLOW_UNLOCKED_ENV = "SLM_DEPLOY_ALLOW_UNLOCKED"
M = TypeVar("M", bound=BaseModel)
# The platforms a box or a node can be: the only manifests of an index the lock reads and records.
LOCKED_PLATFORMS = frozenset(f"linux/{arch.value}" for arch in CpuArch)
HEADER = (
    "# Image digests for slm-deploy, written by `slm-deploy lock`; `slm-deploy lock --check` fails when a\n"
    "# tag has moved. Review changes to this file like code: a new digest is a new image.\n"
)


class LockFile(Frozen):
    version: int = Field(ge=1, le=1)
    example: str | None = Field(default=None, description="Set on example data: why its digests are not the real ones.")
    images: dict[str, LockEntry]

    def entry(self, image: Image) -> LockEntry | None:
        return self.images.get(image_key(image.repository, image.tag))


def image_key(repository: str, tag: str) -> str:
    return f"{repository}:{tag}"


def dump(lock: LockFile) -> str:
    data = lock.model_dump(mode="json", exclude_none=True)
    data["images"] = {key: data["images"][key] for key in sorted(data["images"])}
    return yamlout.dump(data, HEADER)


def write(path: Path, lock: LockFile) -> None:
    """All or nothing: a temporary file beside the lock, renamed over it."""
    text = dump(lock)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> LockFile:
    if not path.exists() and not path.is_symlink():
        raise InputError(str(path), "", "no lock file; run `slm-deploy lock` to resolve the images to digests")
    return _read_model(path, LockFile, "lock file")


def _read_model(path: Path, model: type[M], what: str) -> M:
    # A regular file of bounded size only: a FIFO named as the file is refused, never waited on.
    text = read_input(path, str(path))
    try:
        data = load_data(text)
    except yaml.YAMLError as exc:
        raise InputError(str(path), "", f"cannot read {what}: {exc}".replace("\n", " ")) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(str(path), exc) from None


def find(directory: Path | None) -> Path:
    """The user's lock beside their fleet file or Pulumi project, else the one shipped with the catalog."""
    if directory is not None and (directory / LOCK_NAME).is_file():
        return directory / LOCK_NAME
    return PACKAGED_LOCK


def example_notice(directory: Path | None) -> str | None:
    """A one-line notice when the lock that applies is example data (the digests are not real)."""
    path = find(directory)
    example = load(path).example
    return f"note: images are pinned by {path}, which is {example}" if example else None


def allow_unlocked_from_env() -> bool:
    return os.environ.get(ALLOW_UNLOCKED_ENV) == "1"


def apply(catalog: Catalog, lock: LockFile, source: str, allow_unlocked: bool = False) -> Catalog:
    """The catalog with every image pinned to its locked digest; an image without a lock entry is an
    error naming `slm-deploy lock`, unless unlocked images are explicitly allowed (review reports them)."""
    images = {}
    for image_id, image in catalog.images.items():
        entry = lock.entry(image)
        if entry is None:
            if not allow_unlocked:
                raise InputError(
                    source,
                    f"images.{image_key(image.repository, image.tag)}",
                    f"image {image_id!r} is not locked; run `slm-deploy lock` (or pass --allow-unlocked)",
                )
            images[image_id] = image
            continue
        images[image_id] = image.model_copy(update={"digest": entry.digest, "locked": entry})
    return catalog.model_copy(update={"images": images, "lock_example": lock.example})


def locked_catalog(directory: Path | None, allow_unlocked: bool | None = None) -> Catalog:
    from slm_deploy.catalog import load_catalog

    path = find(directory)
    allow = allow_unlocked_from_env() if allow_unlocked is None else allow_unlocked
    return apply(load_catalog(), load(path), str(path), allow)


def require_platform(image: Image, arch: CpuArch, source: str, field: str, what: str) -> None:
    """Refuse, with the registry's facts, an image that has no manifest for the box's architecture."""
    if image.locked is None:
        return  # unlocked (--allow-unlocked): nothing known; the review reports the image
    if image.locked.for_arch(arch) is None:
        published = ", ".join(image.locked.platforms) or "no platform"
        raise InputError(
            source,
            field,
            f"{what}: {image.repository}:{image.tag} has no linux/{arch.value} manifest "
            f"(the registry lists {published} under {image.locked.digest})",
        )


# ---------------------------------------------------------------------------------------------
# Resolving


@dataclass(frozen=True)
class Moved:
    key: str
    old: str | None  # None: missing from the lock
    new: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _ImagesOnly(Frozen):
    images: tuple[Image, ...]


def load_images_file(path: Path) -> tuple[Image, ...]:
    """Images a user adds (same entries as the catalog's images.yaml), to lock with the catalog's."""
    return _read_model(path, _ImagesOnly, "images file").images


def wanted_images(catalog: Catalog | None, extra: Iterable[Image]) -> list[tuple[str, str]]:
    refs = {(i.repository, i.tag) for i in (*(catalog.images.values() if catalog else ()), *extra)}
    return sorted(refs)


def resolve(
    refs: list[tuple[str, str]],
    client: RegistryClient,
    previous: LockFile | None,
    mirror: str | None = None,
    progress: Callable[[str], None] | None = None,
    now: Callable[[], str] = _now,
) -> dict[str, LockEntry]:
    """Resolve every reference (all of them, or raise RegistryError: nothing half done)."""
    out: dict[str, LockEntry] = {}
    for repository, tag in refs:
        key = image_key(repository, tag)
        where = mirror_path(mirror, repository) if mirror else repository
        found = client.resolve(where, tag, LOCKED_PLATFORMS)
        platforms = {p: PlatformDigests(manifest=d.manifest, config=d.config) for p, d in found.platforms.items()}
        old = previous.images.get(key) if previous else None
        resolved = old.resolved if old is not None and old.digest == found.digest else now()
        out[key] = LockEntry(digest=found.digest, media_type=found.media_type, platforms=platforms, resolved=resolved)
        if progress:
            progress(key)
    return out


def check(
    refs: list[tuple[str, str]],
    client: RegistryClient,
    previous: LockFile | None,
    mirror: str | None = None,
    now: Callable[[], str] = _now,
) -> dict[str, LockEntry]:
    """What `resolve` returns, asking first with HEAD: a locked tag whose digest has not moved keeps
    its entry without a single GET of a manifest (which Docker Hub counts as a pull)."""
    out: dict[str, LockEntry] = {}
    for repository, tag in refs:
        key = image_key(repository, tag)
        old = previous.images.get(key) if previous else None
        if old is not None:
            where = mirror_path(mirror, repository) if mirror else repository
            if client.head_digest(where, tag) == old.digest:
                out[key] = old
                continue
        out.update(resolve([(repository, tag)], client, previous, mirror=mirror, now=now))
    return out


def stale(lock: LockFile | None, refs: list[tuple[str, str]]) -> list[str]:
    """Lock entries for images no longer asked for (dropped from the catalog or the --images files),
    sorted: `lock` drops them, `lock --check` fails on them."""
    wanted = {image_key(repository, tag) for repository, tag in refs}
    return sorted(set(lock.images) - wanted) if lock else []


def compare(lock: LockFile | None, current: dict[str, LockEntry]) -> list[Moved]:
    moved = []
    for key, entry in sorted(current.items()):
        old = lock.images.get(key) if lock else None
        if old is None or old.digest != entry.digest:
            moved.append(Moved(key, old.digest if old else None, entry.digest))
    return moved
