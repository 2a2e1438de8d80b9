"""`make bench`: speed and memory figures, printed, never asserted (machines differ).

`--quick` runs every measurement at a small size (the suite's check that the benchmark still
drives the current code); its figures mean little."""

from __future__ import annotations

import copy
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path.cwd()  # `make bench` runs from the repository: examples/ and the stack files


def synthetic_fleet(n: int) -> dict[str, Any]:
    """N boxes cycling through the example fleet's boxes, each with its own id."""
    base = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    boxes = []
    for i in range(n):
        box = copy.deepcopy(base["boxes"][i % len(base["boxes"])])
        box["id"] = f"box-{i:05d}"
        boxes.append(box)
    return {"fleet": "synthetic", "defaults": base["defaults"], "boxes": boxes}


def bench_planner(rounds: int) -> None:
    from slm_deploy.planner import plan
    from slm_deploy.spec import GpuAttachment, Hardware, Serving

    serving = Serving(model="qwen3-8b", context=32768, concurrency=8)
    hardware = Hardware(cpus=8, memory_gib=32, gpu=GpuAttachment(model="l4"))
    start = time.perf_counter()
    for _ in range(rounds):
        plan(serving, hardware)
    took = (time.perf_counter() - start) / rounds
    print(f"planner: {took * 1000:.2f} ms per plan that does not fit (with suggestions)")


def bench_bundles(n: int) -> float:
    from slm_deploy.bundle.writer import build_fleet, write_box
    from slm_deploy.fleet import parse_fleet

    fleet = parse_fleet(synthetic_fleet(n), "synthetic.yaml")
    gc.collect()
    start = time.perf_counter()
    bundles = build_fleet(fleet, fleet.boxes)
    built = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("SLM_BENCH_DIR")) as tmp:
        for bundle in bundles:
            write_box(Path(tmp), bundle)
        written = time.perf_counter()
    total = written - start
    print(
        f"bundle: {n:>6} boxes in {total:6.2f} s = {total / n * 1000:5.2f} ms/box "
        f"(build {(built - start) / n * 1000:.2f} ms/box, write {(written - built) / n * 1000:.2f} ms/box)"
    )
    return total


def _measure(code: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a fresh interpreter running `code` (from pathlib import Path first)."""
    import resource
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from pathlib import Path; {code}"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kb / 1024


def bench_preview() -> None:
    bare, bare_mb = _measure("import pulumi, pulumi_kubernetes")
    wall, peak = _measure("from slm_deploy.preview import run_preview; run_preview('prod', Path('.'))")
    print(
        f"preview prod: {wall:.2f} s, peak {peak:.0f} MB; bare `import pulumi, pulumi_kubernetes`: "
        f"{bare:.2f} s, {bare_mb:.0f} MB; ratio {wall / bare:.1f}x (goals: 2 s, 200 MB, 2x)"
    )


def bench_review(boxes: int) -> None:
    import yaml as _yaml

    from slm_deploy.review import review

    start = time.perf_counter()
    review(stacks=["dev", "staging", "prod"], fleets=[ROOT / "examples" / "fleet.yaml"], project=ROOT)
    first = time.perf_counter() - start
    print(f"review: 3 stacks + example fleet: {first:.1f} s (goal: under 10 s)")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "synthetic.yaml"
        big.write_text(_yaml.safe_dump(synthetic_fleet(boxes)))
        distinct = Path(tmp) / "distinct.yaml"
        distinct.write_text(_yaml.safe_dump(synthetic_fleet(7)))
        start = time.perf_counter()
        small_report = review(fleets=[distinct])
        small = time.perf_counter() - start
        start = time.perf_counter()
        big_report = review(fleets=[big])
        large = time.perf_counter() - start
    print(
        f"review: {boxes:,}-box fleet {large:.1f} s ({big_report.files} files, {big_report.distinct} distinct) vs its "
        f"7 distinct bundles {small:.1f} s ({small_report.files} files): {large / small:.1f}x (goal: within 2x)"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m slm_deploy.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every measurement at a small size")
    quick = parser.parse_args(argv).quick
    small, large = (10, 100) if quick else (1000, 10000)
    target = os.environ.get("SLM_BENCH_DIR") or tempfile.gettempdir()
    print(f"slm-deploy bench (one process, one core); bundles written under {target} (set SLM_BENCH_DIR)")
    bench_planner(5 if quick else 200)
    bench_preview()
    t_small = bench_bundles(small)
    t_large = bench_bundles(large)
    print(f"bundle: {large:,} boxes took {t_large / t_small:.1f}x the time of {small:,} (goal: within 10x; < 5 ms/box)")
    bench_review(70 if quick else 1000)


if __name__ == "__main__":
    main()
