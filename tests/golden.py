"""`make golden`: regenerate the golden files from the bundled examples. Never edit them by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.bundle.writer import build_fleet
from generator.fleet import load_fleet

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
GOLDEN_BOXES = ("store-0001", "factory-0009", "clinic-0007")  # vLLM on GPU, two Ollama models, offline llama.cpp


def golden_bundles() -> dict[str, bytes]:
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    boxes = tuple(b for b in fleet.boxes if b.id in GOLDEN_BOXES)
    return {f"bundles/{b.box.id}/{rel}": data for b in build_fleet(fleet, boxes) for rel, data in b.files.items()}


def generate() -> dict[str, bytes]:
    return golden_bundles()


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
