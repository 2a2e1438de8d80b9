"""`make bench` runs to the end and prints every figure it promises. Figures are never asserted
(machines differ): this only proves the benchmark still drives the current code, at a size small
enough for the suite (`--quick`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_bench_runs_every_measurement_and_prints_its_figures() -> None:
    # As `make bench` runs it: without the suite's permission to use the example stacks and lock
    # (tests/conftest.py sets both for in-process tests).
    env = {k: v for k, v in os.environ.items() if k not in ("SLM_EXAMPLE_STACKS", "SLM_DEPLOY_ALLOW_EXAMPLE_LOCK")}
    done = subprocess.run(
        [sys.executable, "-m", "slm_deploy.bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    out = done.stdout
    for figure in ("planner:", "preview prod:", "bundle:", "review: 3 stacks", "review: "):
        assert figure in out, out
    assert out.count("boxes, streamed:") == 3 and "boxes took" in out and "time per box" in out, out
    assert "paired ratio" in out, out
    assert "preview prod: floor, importing only the" in out and "x its floor" in out, out
    assert "fleet" in out.splitlines()[-1], out


def test_bench_removes_only_scratch_folders_of_benches_that_are_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench killed outright leaves its scratch folder (on a tmpfs: memory until a restart); the
    next one removes it, and nothing else: not a folder of the user's that merely starts the same
    way (a date is no process id), not a live bench's."""
    from slm_deploy import bench

    monkeypatch.setenv("SLM_BENCH_DIR", str(tmp_path))
    orphan = tmp_path / "slm-bench-3999999-abcd1234"
    users = tmp_path / "slm-bench-20261207"
    live = tmp_path / f"slm-bench-{os.getpid()}-abcd1234"
    for folder in (orphan, users, live):
        (folder / "out").mkdir(parents=True)
        (folder / "out" / "figures.txt").write_text("kept?\n")
    bench._remove_orphans()
    assert not orphan.exists()
    assert (users / "out" / "figures.txt").read_text() == "kept?\n" and (live / "out" / "figures.txt").exists()
