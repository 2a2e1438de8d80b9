"""On the box: are the images Docker holds the ones the bundle's images.lock.json names?

An image pulled by digest shows it in RepoDigests; an image brought in with `docker load` (the
air-gapped path) has no RepoDigests, but its Id is the config digest the lock records for the
box's platform (with the containerd image store the Id is the manifest or index digest: also
accepted). Without a docker command or daemon the check is skipped, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.safeyaml import read_bytes

DOCKER_ENV = "SLM_DEPLOY_DOCKER"  # the docker command to use (default: `docker` on PATH)
INSPECT_TIMEOUT_SECONDS = 60


@dataclass
class LoadedImages:
    skipped: str | None = None
    ok: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # pulled at `docker compose up`: not an error
    wrong: list[str] = field(default_factory=list)  # ref: what is loaded vs what the lock says
    # Tag-only references of a bundle generated with --allow-unlocked: nothing to compare with. The
    # choice was explicit and the review reports it (SLM-COMPOSE-011); verify names them, no more.
    unlocked: list[str] = field(default_factory=list)


def _inspect(docker: str, ref: str) -> dict[str, Any] | str | None:
    """The image's inspect data, None when absent, or a reason string when docker cannot answer."""
    try:
        done = subprocess.run(
            [docker, "image", "inspect", "--format", "{{json .}}", ref],
            capture_output=True,
            text=True,
            timeout=INSPECT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{docker} image inspect failed: {exc.__class__.__name__}"
    if done.returncode != 0:
        err = done.stderr.strip()
        if "no such image" in err.lower():
            return None
        return err.splitlines()[0] if err else f"{docker} image inspect exited {done.returncode}"
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return f"{docker} image inspect printed no JSON"
    return data if isinstance(data, dict) else f"{docker} image inspect printed no JSON object"


def check(directory: Path) -> LoadedImages:
    path = directory / "images.lock.json"
    source = str(path)
    if not path.exists() and not path.is_symlink():
        return LoadedImages(skipped="the bundle has no images.lock.json")
    try:
        # A regular file of bounded size only: a FIFO in its place is refused, never waited on.
        listing = json.loads(read_bytes(path, source, follow=False))
        images: dict[str, dict[str, str | None]] = listing["images"]
        if not isinstance(images, dict) or not all(isinstance(v, dict) for v in images.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InputError(source, "images", f"unreadable image list ({exc.__class__.__name__})") from None
    docker = os.environ.get(DOCKER_ENV) or shutil.which("docker")
    if not docker:
        return LoadedImages(skipped="no docker command here; run `slm-deploy verify` on the box")
    report = LoadedImages()
    for ref, want in sorted(images.items()):
        name_tag, _, index = ref.partition("@")
        repository = name_tag.rsplit(":", 1)[0] if ":" in name_tag.rsplit("/", 1)[-1] else name_tag
        if not want.get("config"):
            report.unlocked.append(ref)
            continue
        found = None
        for candidate in (f"{repository}@{index}", name_tag) if index else (name_tag,):
            result = _inspect(docker, candidate)
            if isinstance(result, str):
                return LoadedImages(skipped=f"docker cannot answer: {result}")
            if result is not None:
                found = result
                break
        if found is None:
            report.absent.append(ref)
            continue
        accepted = {want.get("config"), want.get("manifest"), want.get("index")} - {None}
        repo_digests = {str(d).rsplit("@", 1)[-1] for d in found.get("RepoDigests") or [] if isinstance(d, str)}
        if found.get("Id") in accepted or repo_digests & accepted:
            report.ok.append(ref)
        else:
            report.wrong.append(f"{ref}: loaded image is {found.get('Id')}, the lock says {want.get('config')}")
    return report
