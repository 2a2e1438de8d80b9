"""De-duplication by content: files with the same content key are checked once, whatever
their path, and every finding is reported for every path that shares the key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from slm_deploy.review.artifacts import role_of
from slm_deploy.review.model import Artifact

SHA256_HEX = re.compile(rb"\b[0-9a-f]{64}\b")
# The onnx server's image is built on the box and tagged with a hash of its build context, which
# names the box (slm_deploy/runtimes.py): the tag follows the box id, never a verdict.
BUILT_TAG = re.compile(rb"(slm-deploy/onnx-server):[0-9a-f]{12}\b")


def fleet_key(box_id: str, name: str, data: bytes) -> str:
    """Bundles of one fleet differ by their box id, the tag of the image built on the box and, in
    MANIFEST.json, the hashes that follow from them; none changes a verdict, so the content key
    sets them aside."""
    normalized = BUILT_TAG.sub(rb"\1:<tag>", data.replace(box_id.encode(), b"<box>"))
    if name == "MANIFEST.json":
        normalized = SHA256_HEX.sub(b"<sha256>", normalized)
    return hashlib.sha256(name.encode() + b"\0" + normalized).hexdigest()


def fleet_artifacts(fleet_path: Path, workdir: Path) -> list[Artifact]:
    """Bundle a fleet in memory; write to disk only the bundles that bring content not seen yet
    (the tools run on those), and point every other box's files at their representatives."""
    from slm_deploy.bundle.writer import build_fleet, write_box
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(fleet_path)
    out = workdir / f"fleet-{fleet.name}"
    seen: dict[str, tuple[Path, str]] = {}
    artifacts = []
    for bundle in build_fleet(fleet, fleet.boxes):
        keys = {rel: fleet_key(bundle.box.id, rel, data) for rel, data in bundle.files.items()}
        if any(key not in seen for key in keys.values()):
            directory = write_box(out, bundle)
            for rel, key in keys.items():
                if key not in seen:
                    seen[key] = (directory / rel, role_of(directory / rel))
        for rel, key in sorted(keys.items()):
            path, role = seen[key]
            artifacts.append(Artifact(path, f"{fleet_path.name}:{bundle.box.id}/{rel}", key, role))
    return artifacts
