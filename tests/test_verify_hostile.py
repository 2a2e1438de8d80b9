"""verify against an attacker on the box (issue 10, item 11): a re-hashed manifest, a widened
ignore list, changed metadata, modes beyond the manifest's and added FIFOs are all reported."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from slm_deploy.bundle.verify import verify_bundle
from slm_deploy.bundle.writer import build_fleet, write_box
from slm_deploy.fleet import load_fleet
from tests.conftest import ROOT, run_cli

FLEET = load_fleet(ROOT / "examples" / "fleet.yaml")


@pytest.fixture
def box(tmp_path: Path) -> Path:
    (bundle,) = build_fleet(FLEET, tuple(b for b in FLEET.boxes if b.id == "kiosk-0003"))
    return write_box(tmp_path, bundle)


def _edit_manifest(box: Path, change: object) -> None:
    manifest = json.loads((box / "MANIFEST.json").read_text())
    change(manifest)  # type: ignore[operator]
    (box / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_bundle_prints_the_manifest_digest_and_verify_expect_catches_a_rehashed_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out), "--box", "kiosk-0003")
    assert result.returncode == 0, result.stderr
    [digest] = re.findall(r"kiosk-0003 (sha256:[0-9a-f]{64})", result.stdout)
    box = out / "kiosk-0003"
    assert digest == "sha256:" + hashlib.sha256((box / "MANIFEST.json").read_bytes()).hexdigest()
    ok = run_cli("verify", str(box), "--expect", digest)
    assert ok.returncode == 0 and digest in ok.stdout
    compose = box / "compose.yaml"
    compose.write_text(compose.read_text().replace("read_only: true", "read_only: false"))
    _edit_manifest(box, lambda m: m["files"]["compose.yaml"].update(sha256=hashlib.sha256(compose.read_bytes()).hexdigest()))
    assert run_cli("verify", str(box)).returncode == 0  # the manifest alone cannot tell
    caught = run_cli("verify", str(box), "--expect", digest)
    assert caught.returncode == 1 and "expected " + digest in caught.stdout
    bad = run_cli("verify", str(box), "--expect", "sha256:nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error: arguments: --expect")


def test_a_widened_ignore_list_or_changed_manifest_shape_is_refused(box: Path) -> None:
    _edit_manifest(box, lambda m: m["ignored"].append("compose.yaml"))
    result = run_cli("verify", str(box))
    assert result.returncode == 2 and "ignore list was changed" in result.stderr
    _edit_manifest(box, lambda m: (m["ignored"].remove("compose.yaml"), m.update(note="trust me")))
    assert run_cli("verify", str(box)).returncode == 2


def test_modes_beyond_the_manifest_and_special_files_are_reported(box: Path) -> None:
    os.chmod(box / "compose.yaml", 0o666)
    os.chmod(box / "README.md", 0o4644)
    os.mkfifo(box / "pipe")
    report = verify_bundle(box)
    assert not report.ok
    text = "\n".join(report.modes)
    assert "compose.yaml: mode 0666" in text and "README.md: mode 4644" in text
    assert "pipe: a FIFO added" in text and report.extra == ("pipe",)


def test_a_fewer_bits_copy_is_reported_unreadable_not_tampered(box: Path) -> None:
    # Edge review E5: the containers (10001, nobody) read the bind-mounted config, so a copy that
    # others cannot read breaks the box; verify says so (it used to pass such a copy).
    for path in box.rglob("*"):
        if path.is_file():
            os.chmod(path, os.stat(path).st_mode & 0o700)
    report = verify_bundle(box)
    assert not report.ok and not report.missing and not report.extra
    assert all("cannot read" in line for line in report.modes), report.modes


def test_a_manifest_that_is_a_fifo_or_too_large_is_refused_before_it_is_read(box: Path) -> None:
    manifest = box / "MANIFEST.json"
    manifest.unlink()
    os.mkfifo(manifest)
    result = run_cli("verify", str(box))
    assert (result.returncode, result.stderr) == (2, f"error: {manifest}: not a manifest (a FIFO)\n")
    manifest.unlink()
    manifest.write_bytes(b" " * (16 * 1024 * 1024 + 1))
    result = run_cli("verify", str(box))
    expected = f"error: {manifest}: too large for a manifest (16777217 bytes; at most 16777216)\n"
    assert (result.returncode, result.stderr) == (2, expected)
