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


# ---------------------------------------------------------------------------------------------
# review (issue 24): whole processes, as a user runs them in CI


def _review_wall(*args: str, program: tuple[str, ...] = ()) -> float:
    """Wall seconds of one `slm-deploy review ARGS` (or of `program ARGS`) in a fresh process."""
    import subprocess
    import sys

    command = [*program, *args] if program else [sys.executable, "-m", "slm_deploy.cli", "review", *args]
    start = time.perf_counter()
    subprocess.run(command, check=False, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_review(boxes: int) -> None:
    import sys

    import yaml as _yaml

    stacks = _review_wall("--stack", "dev", "--stack", "staging", "--stack", "prod", "--fleet", "examples/fleet.yaml")
    print(f"review: 3 stacks + example fleet: {stacks:.1f} s (goal: under 10 s)")
    kinds = len(_yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())["boxes"])
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "synthetic.yaml"
        big.write_text(_yaml.safe_dump(synthetic_fleet(boxes)))
        distinct = Path(tmp) / "distinct.yaml"
        distinct.write_text(_yaml.safe_dump(synthetic_fleet(kinds)))
        bundles = Path(tmp) / "bundles"
        from slm_deploy.bundle.writer import build_fleet, write_box
        from slm_deploy.fleet import load_fleet

        fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
        for bundle in build_fleet(fleet, fleet.boxes):
            write_box(bundles, bundle)
        ours = _review_wall(str(bundles))
        checkov = Path(sys.executable).parent / "checkov"
        alone = _review_wall("-d", str(bundles), "--quiet", "--compact", program=(str(checkov),))
        print(
            f"review: the {kinds} example bundles {ours:.1f} s vs `checkov -d` alone {alone:.1f} s: "
            f"{ours / alone:.2f}x (goal: under 1x)"
        )
        small = _review_wall("--fleet", str(distinct))
        large = _review_wall("--fleet", str(big))
        print(
            f"review: {boxes:,}-box fleet {large:.1f} s vs its {kinds} distinct bundles {small:.1f} s: "
            f"{large / small:.1f}x (goal: within 2x)"
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
