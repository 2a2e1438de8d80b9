"""The lock shipped with the catalog (slm_deploy/catalog/images.lock.yaml) is EXAMPLE DATA.

Its digests are not those of the real images: this machine has no internet. They come from a
loopback mirror (Debian's docker-registry on 127.0.0.1) holding small stand-in images under the
catalog's names, one per platform upstream publishes it for (test data with its sources:
tests/data/example_platforms.yaml; slm-deploy itself learns the platforms from the registry). A
user runs `slm-deploy lock` against the real registries before deploying (README, "Image digests").

  python -m tests.example_lock           regenerate the shipped lock
  python -m tests.example_lock --check   start the mirror and run `slm-deploy lock --check` on it
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from slm_deploy.catalog import Image, load_catalog
from slm_deploy.supply import lock as locking
from slm_deploy.supply.registry import RegistryClient, mirror_path
from tests.registry import LiveRegistry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_NOTE = (
    "example data: digests of stand-in images on a loopback test mirror (python -m tests.example_lock), "
    "not of the real images; run `slm-deploy lock` before deploying"
)


PLATFORMS_DATA = Path(__file__).resolve().parent / "data" / "example_platforms.yaml"
# Images the example stacks name themselves (runtime onnx's server): locked with the catalog's, as
# `slm-deploy lock --images examples/stack-images.yaml` does.
STACK_IMAGES = ROOT / "examples" / "stack-images.yaml"


def _images() -> list[Image]:
    return [*load_catalog().images.values(), *locking.load_images_file(STACK_IMAGES)]


def published_platforms() -> dict[str, tuple[str, ...]]:
    """Test data: repository -> the architectures upstream publishes it for (with sources in the file)."""
    data = yaml.safe_load(PLATFORMS_DATA.read_text(encoding="utf-8"))["platforms"]
    return {repository: tuple(entry["archs"]) for repository, entry in data.items()}


def start_mirror(workdir: Path, platforms: dict[str, tuple[str, ...]] | None = None) -> LiveRegistry:
    """A registry holding a stand-in for every catalog image, at MIRROR/<registry>/<path>:<tag>,
    for the platforms of tests/data/example_platforms.yaml (PLATFORMS[repository] overrides)."""
    published = published_platforms() | (platforms or {})
    missing = sorted({i.repository for i in _images()} - set(published))
    if missing:
        raise ValueError(f"{PLATFORMS_DATA}: no platforms for {', '.join(missing)}")
    registry = LiveRegistry(workdir)
    try:
        for image in sorted(_images(), key=lambda i: (i.repository, i.tag)):
            archs = published[image.repository]
            name = mirror_path(registry.host, image.repository).split("/", 1)[1]
            registry.push(name, image.tag, archs, label=f"{image.repository}:{image.tag}")
    except BaseException:
        registry.stop()
        raise
    return registry


def regenerate(path: Path = locking.PACKAGED_LOCK) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        registry = start_mirror(Path(tmp))
        try:
            catalog = load_catalog()
            previous = locking.load(path) if path.exists() else None
            refs = locking.wanted_images(catalog, locking.load_images_file(STACK_IMAGES))
            current = locking.resolve(refs, RegistryClient(credentials=lambda host: None), previous, mirror=registry.host)
        finally:
            registry.stop()
    locking.write(path, locking.LockFile(version=1, example=EXAMPLE_NOTE, images=current))
    print(f"wrote {path.relative_to(ROOT)}: {len(current)} images (example data)")


def check(path: Path = locking.PACKAGED_LOCK) -> int:
    if shutil.which("docker-registry") is None:
        print("lock check skipped: docker-registry is not installed (apt-get install docker-registry)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        registry = start_mirror(Path(tmp))
        try:
            images = str(STACK_IMAGES.relative_to(ROOT))
            cmd = [
                "slm-deploy",
                "lock",
                "--check",
                "--lock",
                str(path.relative_to(ROOT)),
                "--images",
                images,
                "--mirror",
                registry.host,
            ]
            print("$ " + " ".join(cmd), flush=True)
            script = Path(sys.executable).parent / "slm-deploy"  # the console script, as a user runs it
            program = [str(script)] if script.exists() else [sys.executable, "-m", "slm_deploy.cli"]
            return subprocess.run([*program, *cmd[1:]], cwd=ROOT, check=False).returncode
        finally:
            registry.stop()


if __name__ == "__main__":
    sys.exit(check() if "--check" in sys.argv[1:] else regenerate())
