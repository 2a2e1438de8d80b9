"""`make bench` runs to the end and prints every figure it promises. Figures are never asserted
(machines differ): this only proves the benchmark still drives the current code, at a size small
enough for the suite (`--quick`)."""

from __future__ import annotations

import os
import subprocess
import sys

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
