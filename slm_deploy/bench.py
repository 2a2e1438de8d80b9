"""`make bench`: speed and memory figures, printed, never asserted (machines differ).

`--quick` runs every measurement at a small size (the suite's check that the benchmark still
drives the current code); its figures mean little."""

from __future__ import annotations

import copy
import gc
import os
import re
import stat
import subprocess
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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2


# Printed by the child's first exit handler, so last: after the command's own (slm_deploy.cli.run's)
# and whatever the command printed, even when it ends with sys.exit.
PEAK_RSS = "import atexit, resource; atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"


def _run_to_end(command: list[str], capture: bool = True) -> subprocess.CompletedProcess[str]:
    """COMMAND run from the repository. Stopped on the way (SIGTERM from CI's cancel, Ctrl-C), it
    is asked to end first and given time to clean up (a review removes its folder and children),
    killed only if it does not: subprocess.run would kill it at once."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    with subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _child(code: str) -> tuple[float, float, float, list[str]]:
    """Wall seconds, CPU seconds, peak RSS (MB) and the printed words of a fresh interpreter
    running `code` (`from pathlib import Path` first), as a user's command runs: a new process,
    timed to its end (Python's shutdown included)."""
    import resource
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    script = f"{PEAK_RSS}\nfrom pathlib import Path; {code}"
    done = _run_to_end([sys.executable, "-c", script])
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"bench: a measured child exited {done.returncode}: {done.stderr.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    words = done.stdout.split()
    return wall, cpu, int(words[-1]) / 1024, words[:-1]


SDK_PACKAGES = ("pulumi", "pulumi_azure_native", "pulumi_kubernetes", "pulumi_random")
# The SDK modules a preview of prod loads (the generated packages' lazy placeholders left out).
SDK_MODULES = (
    "import sys; from slm_deploy.preview import run_preview; run_preview('prod', Path('.')); "
    f"print(' '.join(sorted(m for m, v in sys.modules.items() if m.split('.')[0] in {SDK_PACKAGES!r} "
    "and type(v).__name__ != '_LazyModule')))"
)


# `slm-deploy preview prod` as the console script runs it, its exit included
PREVIEW_COMMAND = "import sys; sys.argv = ['slm-deploy', 'preview', 'prod']; from slm_deploy.cli import run; run()"


# The bare import and the floor end as the console script does (slm_deploy.cli._freeze_heap_at_exit):
# neither may count a shutdown that the preview does not pay.
FROZEN_EXIT = "import atexit, gc; atexit.register(gc.freeze)\n"


def bench_preview(rounds: int) -> None:
    """`slm-deploy preview prod` against a bare `import pulumi, pulumi_kubernetes`, in pairs run
    back to back, so that both see the same load; the ratio is the median of the pairs' ratios.
    Beside them, the floor: a process that only imports the Pulumi SDK modules the preview loads
    (the typed *Args the program is written with live in them), which no preview can go under."""
    *_, modules = _child(SDK_MODULES)
    floor_code = f"{FROZEN_EXIT}import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)"
    rounds_run = []
    for _ in range(rounds):
        bare = _child(f"{FROZEN_EXIT}import pulumi, pulumi_kubernetes")
        preview = _child(PREVIEW_COMMAND)
        floor = _child(floor_code)
        rounds_run.append((bare, preview, floor))
    wall = _median([r[1][0] for r in rounds_run])
    cpu = _median([r[1][1] for r in rounds_run])
    peak = max(r[1][2] for r in rounds_run)
    bare_wall = _median([r[0][0] for r in rounds_run])
    ratio = _median([r[1][0] / r[0][0] for r in rounds_run])
    cpu_ratio = _median([r[1][1] / r[0][1] for r in rounds_run])
    floor_wall = _median([r[2][0] for r in rounds_run])
    floor_peak = max(r[2][2] for r in rounds_run)
    floor_ratio = _median([r[2][0] / r[0][0] for r in rounds_run])
    over_floor = _median([r[1][0] / r[2][0] for r in rounds_run])
    print(
        f"preview prod: {wall:.2f} s wall (goal: <= 2 s), {cpu:.2f} s CPU, peak {peak:.0f} MB (goal: <= 200 MB); "
        f"bare `import pulumi, pulumi_kubernetes` {bare_wall:.2f} s; paired ratio {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU "
        f"(goal: <= 2x; median of {rounds} pairs)"
    )
    print(
        f"preview prod: floor, importing only the {len(modules)} Pulumi SDK modules it loads: {floor_wall:.2f} s wall, "
        f"peak {floor_peak:.0f} MB, {floor_ratio:.1f}x the bare import; the preview is {over_floor:.1f}x its floor"
    )


def synthetic_boxes(n: int) -> Any:
    """A Fleet of N boxes cycling through the example fleet's boxes, each with its own id and
    path; the boxes share their (immutable) specs, so the fleet itself costs little memory and
    the figure is the bundle's, not the fleet file's."""
    from dataclasses import replace

    from slm_deploy.fleet import Fleet, parse_fleet

    example = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    base = parse_fleet(synthetic_fleet(len(example["boxes"])), "synthetic.yaml")
    boxes = tuple(replace(base.boxes[i % len(base.boxes)], id=f"box-{i:06d}", path=f"boxes[{i}]") for i in range(n))
    return Fleet(base.name, boxes, base.source, None)


def bundle_child(n: int, out: str) -> None:
    """In a fresh interpreter: `slm-deploy bundle`'s streamed build and write of N boxes to OUT
    (the fleet is made before the clock starts); prints wall and CPU seconds."""
    from slm_deploy.bundle.writer import write_fleet

    fleet = synthetic_boxes(n)
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    write_fleet(Path(out), fleet, fleet.boxes)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{wall} {cpu}")


SCRATCH_PREFIX = "slm-bench-"
SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"([0-9]+)-[a-z0-9_]{8}")  # the prefix, pid, mkdtemp's name


def _remove_orphans() -> None:
    """Scratch folders of a bench that was killed before it could remove them, wherever one may
    have written (a tmpfs one holds memory until the machine restarts, and would make this run
    choose the disk): only folders with exactly that name, of this user, whose bench is gone."""
    import shutil

    for where in {TMPFS, tempfile.gettempdir(), os.environ.get("SLM_BENCH_DIR") or TMPFS}:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            match = SCRATCH_NAME.fullmatch(name)
            path = os.path.join(where, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if match and stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not os.path.exists(f"/proc/{match[1]}"):
                shutil.rmtree(path, ignore_errors=True)


def _bundle_figure(n: int, where: str) -> tuple[float, float, float]:
    """(wall ms/box, CPU ms/box, peak MB) of bundle_child(n) writing under WHERE, in a scratch
    folder this process removes, whatever becomes of the child (killed for memory, or by CI)."""
    import shutil

    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=where)
    try:
        out = os.path.join(scratch, "out")
        _, _, peak, words = _child(f"from slm_deploy.bench import bundle_child; bundle_child({n}, {out!r})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall, cpu = (float(w) for w in words[-2:])
    return wall / n * 1000, cpu / n * 1000, peak


# What one box's bundle takes on a tmpfs (a page per file): 1.9 MB for 16 example boxes, 2026-12-07;
# the largest run must fit with room to spare, in the folder and in the machine's free memory.
TMPFS_BYTES_PER_BOX = 160 * 1024
TMPFS = "/dev/shm"


def _available_memory() -> int:
    """Bytes this process may still fill: the machine's available memory, or less where a cgroup
    (a container's limit) says so; tmpfs pages count against both."""
    available = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    # cgroup v2 ("0::PATH": memory.max, memory.current) and v1 ("N:memory:PATH": memory.limit_in_bytes,
    # memory.usage_in_bytes), the process's group and every group above it
    try:
        with open("/proc/self/cgroup", encoding="ascii") as cgroup:
            lines = [line.strip().split(":", 2) for line in cgroup]
    except OSError:
        return available
    for _, controllers, path in (parts for parts in lines if len(parts) == 3):
        if controllers == "":
            root, limit_name, used_name = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            root, limit_name, used_name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        group = root / path.lstrip("/")
        for folder in (group, *[p for p in group.parents if p.is_relative_to(root)]):
            try:
                limit = (folder / limit_name).read_text().strip()
                if limit != "max":
                    available = min(available, int(limit) - int((folder / used_name).read_text()))
            except (OSError, ValueError):
                continue
    return available


def bundle_folder(huge: int) -> tuple[str, str]:
    """Where the bundle figures are written, and why. SLM_BENCH_DIR when set; else a tmpfs when the
    largest run fits in it and in free memory, so that the figures are the writer's and not the
    disk's; else the system's temporary folder. The disk can dominate: on this machine's ext4
    (no journal), creating an inode skips every inode freed in the last 60-360 s, one buffer
    lookup each (fs/ext4/ialloc.c, find_inode_bit -> recently_deleted), and 1,000 boxes took
    2.6 to 33 ms/box depending on what the previous minutes had removed (perf, 2026-12-07)."""
    chosen = os.environ.get("SLM_BENCH_DIR")
    if chosen:
        return chosen, "SLM_BENCH_DIR"
    need = huge * TMPFS_BYTES_PER_BOX
    spare = 4 * 2**30  # what the machine keeps for everything else meanwhile
    try:
        room = os.statvfs(TMPFS)
        fits = room.f_bavail * room.f_frsize > need and _available_memory() > need + spare
    except OSError:
        fits = False
    if fits:
        return TMPFS, "a tmpfs: the writer's cost, not the disk's"
    return tempfile.gettempdir(), f"no tmpfs and {(need + spare) / 2**30:.1f} GB of free memory for {huge:,} boxes"


def bench_bundles(small: int, large: int, huge: int, where: str) -> None:
    """Each size in its own process (its own peak), printed as soon as it is measured; then, when
    the figures were taken on a tmpfs, the smallest size once more on the disk, for comparison.
    The smallest size, a few seconds long, is the median of three runs: one run moved by +-10%
    with the machine, and it is the denominator of the 10,000-box ratio."""
    figures = {}
    for n in (small, large, huge):
        runs = [_bundle_figure(n, where) for _ in range(3 if n == small else 1)]
        wall, cpu = _median([r[0] for r in runs]), _median([r[1] for r in runs])
        peak = max(r[2] for r in runs)
        figures[n] = (wall, cpu, peak)
        goal = f" (goal: <= 5 ms/box; median of {len(runs)})" if n == small else ""
        print(
            f"bundle: {n:>7,} boxes, streamed: {wall:5.2f} ms/box wall, {cpu:5.2f} ms/box CPU, peak {peak:4.0f} MB{goal}",
            flush=True,
        )
        if n == large:
            w_small, c_small, _ = figures[small]
            print(
                f"bundle: {large:,} boxes took {wall * large / (w_small * small):.1f}x the time of {small:,} "
                f"({cpu * large / (c_small * small):.1f}x CPU; goal: <= {large / small:.0f}x)",
                flush=True,
            )
    (w_large, c_large, _), (w_huge, c_huge, _) = figures[large], figures[huge]
    print(
        f"bundle: {huge:,} boxes: {w_huge / w_large:.2f}x the time per box of {large:,} "
        f"({c_huge / c_large:.2f}x CPU; goal: <= 1.5x; one bundle in memory at a time)",
        flush=True,
    )
    if where == TMPFS:
        disk = tempfile.gettempdir()
        wall, cpu, _ = _bundle_figure(small, disk)
        print(
            f"bundle: {small:>7,} boxes on the disk ({disk}): {wall:5.2f} ms/box wall, {cpu:5.2f} ms/box CPU "
            "(for comparison, not a goal: varies with the file system and what it freed lately)"
        )


# ---------------------------------------------------------------------------------------------
# review (issue 24): whole processes, as a user runs them in CI


def _review_wall(*args: str, program: tuple[str, ...] = ()) -> float:
    """Wall seconds of one `slm-deploy review ARGS` (or of `program ARGS`) in a fresh process."""
    import sys

    command = [*program, *args] if program else [sys.executable, "-m", "slm_deploy.cli", "review", *args]
    start = time.perf_counter()
    done = _run_to_end(command, capture=False)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: findings, still a whole review; anything else timed a refusal
        raise SystemExit(f"bench: {' '.join(command[-3:])} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return wall


def bench_review(boxes: int, rounds: int) -> None:
    import statistics
    import sys

    import yaml as _yaml

    walls = [
        _review_wall("--stack", "dev", "--stack", "staging", "--stack", "prod", "--fleet", "examples/fleet.yaml")
        for _ in range(rounds)
    ]
    each = ", ".join(f"{w:.1f}" for w in walls)
    print(f"review: 3 stacks + example fleet: {statistics.median(walls):.1f} s, median of {rounds} ({each}) (goal: under 10 s)")
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
    import signal
    import sys

    # CI's cancel or `timeout` (SIGTERM to the group): the scratch folders are removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The figures are taken on the bundled examples, named as examples as `make demo` names them
    # (their placeholder stacks and example lock are refused otherwise).
    os.environ.setdefault("SLM_EXAMPLE_STACKS", "1")
    os.environ.setdefault("SLM_DEPLOY_ALLOW_EXAMPLE_LOCK", "1")
    small, large, huge = (10, 100, 300) if quick else (1_000, 10_000, 100_000)
    _remove_orphans()
    where, why = bundle_folder(huge)
    print(f"slm-deploy bench (one process, one core); bundles written under {where} ({why}; set SLM_BENCH_DIR)")
    bench_planner(5 if quick else 200)
    bench_preview(1 if quick else 5)
    bench_bundles(small, large, huge, where)
    bench_review(70 if quick else 1000, 1 if quick else 3)


if __name__ == "__main__":
    main()
