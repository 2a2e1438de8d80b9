"""What `review` prints: counts in words a person reads, progress on a terminal only."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_cli


def test_one_finding_is_one_finding_not_one_findings(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("key: value   \n")  # trailing spaces: one yamllint finding
    result = run_cli("review", str(tmp_path / "c.yaml"), "--tool", "yamllint")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "1 finding"
    assert "1 findings" not in result.stdout
    assert "review: 1 file (1 distinct)" in result.stdout


def test_progress_is_shown_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("key: value\n")
    command = [sys.executable, "-m", "slm_deploy.cli", "review", str(tmp_path), "--tool", "yamllint", "--tool", "slm"]
    piped = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert piped.returncode == 0 and piped.stderr == ""
    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "TERM", "NO_COLOR")} | {"TERM": "xterm"}
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the review closed its end
            break
        if not chunk:
            break
        seen += chunk
    proc.communicate()
    os.close(main)
    assert proc.returncode == 0
    assert b"review: " in seen, seen[-500:]


def test_one_bundle_is_one_bundle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--box", "store-0001", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 bundle in " in result.stdout and "1 bundles" not in result.stdout
