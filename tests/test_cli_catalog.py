"""`slm-deploy catalog`: what the catalog knows, with sources; first-contact output of the command
line (a bare `slm-deploy` is help, not an error; counts are singular where there is one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slm_deploy.catalog import load_catalog
from tests.conftest import ROOT


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def test_a_bare_command_prints_help_and_succeeds() -> None:
    out = run()
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("Usage: slm-deploy") and "catalog" in out.stdout and "plan" in out.stdout


@pytest.mark.parametrize(
    ("kind", "ids"),
    [
        ("models", lambda c: c.models),
        ("gpus", lambda c: c.gpus),
        ("vm-sizes", lambda c: c.vm_sizes),
        ("images", lambda c: c.images),
    ],
)
def test_catalog_lists_every_entry_with_a_source(kind: str, ids: object) -> None:
    out = run("catalog", kind, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)[kind]
    expected = sorted(ids(load_catalog()))  # type: ignore[operator]
    assert [r["id"] for r in rows] == expected
    assert all(r["source"] for r in rows)


def test_catalog_shows_what_a_user_needs_to_pick_an_id() -> None:
    listing = json.loads(run("catalog", "--json").stdout)
    assert sorted(listing) == ["gpus", "images", "models", "vm-sizes"]
    grid = next(r for r in listing["vm-sizes"] if r["id"] == "Standard_NV36ads_A10_v5")
    assert grid["driver"] == "grid" and "learn.microsoft.com" in grid["source"]
    assert any(r["id"] == "phi-4-mini-instruct" and r["hf_repo"] == "microsoft/Phi-4-mini-instruct" for r in listing["models"])
    table = run("catalog", "gpus")
    assert table.returncode == 0 and f"gpus: {len(listing['gpus'])} in the catalog" in table.stdout
    bad = run("catalog", "h100")
    assert bad.returncode == 2 and bad.stderr.startswith("error: arguments: ") and bad.stderr.count("\n") == 1
    assert run("catalog", "--json").stdout == json.dumps(listing, indent=2, sort_keys=True) + "\n"  # the same every run


def test_one_bundle_is_one_bundle(tmp_path: Path) -> None:
    fleet = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    fleet["boxes"] = fleet["boxes"][:1]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    out = run("bundle", "fleet.yaml", "--out", "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 bundle in out" in out.stdout and "1 bundles" not in out.stdout
