"""De-duplication by content: files with the same content key are checked once, whatever
their path, and every finding is reported for every path that shares the key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from slm_deploy.review.artifacts import role_of
from slm_deploy.review.model import Artifact

if TYPE_CHECKING:
    from slm_deploy.fleet import Box

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


def _spec(box: Box) -> str:
    """Everything a box's bundle is built from but its id (and where it sits in the fleet file)."""
    return repr((box.hardware, box.servings, box.options))


def fleet_artifacts(fleet_path: Path, workdir: Path) -> list[Artifact]:
    """Bundle one box per distinct specification (boxes that differ only by id get the same bundle
    but for the id: issue 24, a 1,000-box fleet was bundled 1,000 times to review 8 kinds); write
    to disk only the bundles that bring content not seen yet (the tools run on those), and point
    every box's files at their representatives."""
    from slm_deploy.bundle.writer import build_fleet, write_box
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(fleet_path)
    out = workdir / f"fleet-{fleet.name}"
    kinds: dict[str, Box] = {}
    for box in fleet.boxes:
        kinds.setdefault(_spec(box), box)
    seen: dict[str, tuple[Path, str]] = {}
    keys_of: dict[str, list[tuple[str, str]]] = {}
    for bundle in build_fleet(fleet, tuple(kinds.values())):
        keys = {rel: fleet_key(bundle.box.id, rel, data) for rel, data in bundle.files.items()}
        if any(key not in seen for key in keys.values()):
            directory = write_box(out, bundle)
            for rel, key in keys.items():
                if key not in seen:
                    seen[key] = (directory / rel, role_of(directory / rel))
        keys_of[bundle.box.id] = sorted(keys.items())
    artifacts = []
    for box in fleet.boxes:
        for rel, key in keys_of[kinds[_spec(box)].id]:
            path, role = seen[key]
            artifacts.append(Artifact(path, f"{fleet_path.name}:{box.id}/{rel}", key, role))
    return artifacts
