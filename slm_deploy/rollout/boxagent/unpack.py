"""What goes into a release folder: the bundle archive's files, each checked against the bundle's
own MANIFEST.json, and on an offline box the images archive it carries, checked against the
bundle's images.lock.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

from .statement import MAX_ARCHIVE_MEMBERS, MAX_SMALL, Refused

DOCKER_ENV = "SLM_DEPLOY_DOCKER"  # as slm_deploy.supply.loaded: the docker command to use
LOAD_TIMEOUT = 3600  # docker load of a model server image of several GB from a slow disk


def _safe_members(archive: tarfile.TarFile, box: str) -> list[tarfile.TarInfo]:
    members = []
    for count, member in enumerate(archive):
        if count > MAX_ARCHIVE_MEMBERS:
            raise Refused("bundle: too many entries")
        name = member.name
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or parts[0] != box or not (member.isfile() or member.isdir()):
            raise Refused(f"bundle: entry {name!r} is not a plain file or folder under {box}/")
        members.append(member)
    return members


def unpack(bundle: bytes, box: str, dest: str) -> None:
    """Extract the bundle archive under DEST (which must not exist), then check every file against
    the bundle's own MANIFEST.json (content and mode), as `slm-deploy verify` does."""
    os.makedirs(dest, mode=0o755, exist_ok=True)
    # mkdtemp makes 0700; the containers' users (uid 10001 ...) must traverse to their bind mounts,
    # whatever the box's umask (edge review E5).
    os.chmod(dest, 0o755)
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        for member in _safe_members(archive, box):
            target = os.path.join(dest, member.name)
            if member.isdir():
                os.makedirs(target, mode=0o755, exist_ok=True)
                os.chmod(target, 0o755)
                continue
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            handle = archive.extractfile(member)
            assert handle is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(handle, out)
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
    root = os.path.join(dest, box)
    try:
        with open(os.path.join(root, "MANIFEST.json"), "rb") as handle:
            manifest = json.load(handle)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise Refused("bundle: no readable MANIFEST.json") from None
    if manifest.get("box") != box:
        raise Refused(f"bundle: MANIFEST.json is for box {manifest.get('box')!r}")
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    found.discard("MANIFEST.json")
    if found != set(files):
        raise Refused(f"bundle: files differ from its MANIFEST.json: {sorted(found ^ set(files))[:3]}")
    for rel, entry in files.items():
        with open(os.path.join(root, rel), "rb") as handle:
            if "sha256:" + hashlib.sha256(handle.read()).hexdigest() != "sha256:" + str(entry.get("sha256", "")).removeprefix(
                "sha256:"
            ):
                raise Refused(f"bundle: {rel} does not match MANIFEST.json")
        if oct(os.stat(os.path.join(root, rel)).st_mode & 0o777)[2:].zfill(4) != entry.get("mode"):
            raise Refused(f"bundle: {rel}: mode differs from MANIFEST.json")


def load_images(images: str, project: str) -> list[str]:
    """`docker load -i IMAGES` (the bundle README's air-gapped step, read where the file lies: no
    copy, link or rename), then every image the bundle's images.lock.json pins must be loaded with
    the locked digest: `docker save` keeps tags, no digests, so the image Id (the config digest)
    is what is compared, as `slm-deploy verify` does (slm_deploy/supply/loaded.py)."""
    docker = os.environ.get(DOCKER_ENV) or "docker"
    if not os.path.isfile(images):
        raise Refused(f"{images}: no such images archive (docker save -o images.tar ..., README: air-gapped box)")

    def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run([docker, *args], capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise Refused(f"{docker}: not installed (an offline box needs Docker to load its images)") from None
        except subprocess.TimeoutExpired:
            raise Refused(f"{docker} {args[0]}: no answer within {int(timeout)} s") from None

    done = run(["load", "-i", images], LOAD_TIMEOUT)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise Refused(f"{images}: docker load failed: {why[-1] if why else done.returncode}")
    try:
        with open(os.path.join(project, "images.lock.json"), "rb") as handle:
            pinned = json.loads(handle.read(MAX_SMALL)).get("images") or {}
    except (OSError, ValueError, AttributeError):
        return []
    checked = []
    for ref, want in sorted(pinned.items()):
        accepted = {str(want[k]) for k in ("config", "manifest", "index") if want.get(k)} if isinstance(want, dict) else set()
        if not accepted:
            continue  # a bundle built --allow-unlocked: tag references, nothing to compare
        name = ref.split("@", 1)[0]
        seen = run(["image", "inspect", "--format", "{{.Id}}", name], 60)
        found = seen.stdout.decode(errors="replace").strip()
        if seen.returncode != 0:
            raise Refused(f"{images}: does not hold {name} (images.lock.json pins it)")
        if found not in accepted:
            raise Refused(f"{images}: {name} is {found}, images.lock.json pins {sorted(accepted)[0]}")
        checked.append(name)
    return checked
