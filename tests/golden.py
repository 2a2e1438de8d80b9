"""`make golden`: regenerate the golden files from the bundled examples. Never edit them by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

from slm_deploy.bundle.writer import build_fleet
from slm_deploy.fleet import load_fleet

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
GOLDEN_BOXES = (
    "store-0001",
    "factory-0009",
    "clinic-0007",
    "branch-0013",
)  # vLLM on GPU, two Ollama models, offline llama.cpp, onnx


def golden_bundles() -> dict[str, bytes]:
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    boxes = tuple(b for b in fleet.boxes if b.id in GOLDEN_BOXES)
    return {f"bundles/{b.box.id}/{rel}": data for b in build_fleet(fleet, boxes) for rel, data in b.files.items()}


def golden_manifests(stack: str = "prod") -> dict[str, bytes]:
    """The Kubernetes manifests of the prod stack's offline preview."""
    import os
    import tempfile

    from slm_deploy.preview import run_preview, write_manifests

    # The shipped stacks are examples: rendered as such, on a fixed day (slm_deploy/catalog/aks.yaml dates).
    os.environ.setdefault("SLM_EXAMPLE_STACKS", "1")
    os.environ.setdefault("SLM_TODAY", "2026-12-06")
    result = run_preview(stack, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        return {f"manifests/{stack}/{p.relative_to(out).as_posix()}": p.read_bytes() for p in write_manifests(result, out)}


def generate() -> dict[str, bytes]:
    return golden_bundles() | golden_manifests()


def main() -> None:
    files = generate()
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    for rel, data in sorted(files.items()):
        path = GOLDEN / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} golden files under {GOLDEN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
