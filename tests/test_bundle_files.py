"""What an operator does on the box: create secrets, verify the bundle they received."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from slm_deploy.bundle.writer import build_fleet, write_box
from slm_deploy.fleet import load_fleet
from tests.conftest import ROOT, need, need_binary, run_cli

FLEET = load_fleet(ROOT / "examples" / "fleet.yaml")


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    (bundle,) = build_fleet(FLEET, tuple(b for b in FLEET.boxes if b.id == "lab-0005"))
    return write_box(tmp_path, bundle)


@pytest.mark.tools
def test_init_secrets_creates_private_random_secrets_and_never_overwrites(bundle_dir: Path) -> None:
    need_binary("openssl")
    need(os.geteuid() == 0, "init-secrets.sh gives the files to uid 10001, which needs root")
    first = subprocess.run(
        ["./init-secrets.sh"],
        cwd=bundle_dir,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HF_TOKEN": "hf_exampletoken"},
        check=False,
    )
    assert first.returncode == 0, first.stderr
    secrets = bundle_dir / "secrets"
    names = sorted(p.name for p in secrets.iterdir())
    assert names == ["api_key", "grafana_admin_password", "hf_token", "tls_cert", "tls_key"]
    for path in secrets.iterdir():
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, path.name
        assert (info.st_uid, info.st_gid) == (10001, 10001), path.name
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    key = (secrets / "api_key").read_text()
    assert len(key) == 64 and int(key, 16)
    assert (secrets / "hf_token").read_text() == "hf_exampletoken"
    assert "BEGIN CERTIFICATE" in (secrets / "tls_cert").read_text()
    assert (secrets / "grafana_admin_password").read_text() != key

    again = subprocess.run(["./init-secrets.sh"], cwd=bundle_dir, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "kept    secrets/api_key" in again.stdout
    assert (secrets / "api_key").read_text() == key


def test_verify_accepts_a_pristine_bundle_and_ignores_box_secrets(bundle_dir: Path) -> None:
    (bundle_dir / "secrets").mkdir()
    (bundle_dir / "secrets" / "api_key").write_text("x" * 64)
    result = run_cli("verify", str(bundle_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")


def test_verify_reports_changed_missing_and_extra_files(bundle_dir: Path) -> None:
    (bundle_dir / "gateway" / "Caddyfile").write_text("# tampered\n")
    (bundle_dir / "README.md").unlink()
    (bundle_dir / "backdoor.sh").write_text("echo hi\n")
    os.chmod(bundle_dir / "init-secrets.sh", 0o644)
    result = run_cli("verify", str(bundle_dir))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "missing: README.md" in lines
    assert "extra: backdoor.sh" in lines
    assert "changed: gateway/Caddyfile" in lines
    assert "changed: init-secrets.sh" in lines  # lost its executable bit


def test_verify_of_a_directory_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("verify", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "MANIFEST.json" in result.stderr


def test_manifest_lists_every_file_with_its_hash(bundle_dir: Path) -> None:
    import hashlib
    import json

    manifest = json.loads((bundle_dir / "MANIFEST.json").read_text())
    assert manifest["generator"].startswith("slm-deploy ")
    assert len(manifest["spec_sha256"]) == 64
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"MANIFEST.json"}
    for rel, entry in manifest["files"].items():
        assert hashlib.sha256((bundle_dir / rel).read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.tools
def test_every_readme_command_that_reads_a_secret_runs_it_through_sudo(bundle_dir: Path) -> None:
    """After `sudo ./init-secrets.sh`, secrets/ is root's (0700) and its files the container user's
    (0600): the operator's own shell cannot read even the public certificate. So every command of the
    box README that names a file under secrets/ reads it through sudo (`sudo CMD` or `$(sudo cat ...)`);
    `curl --cacert secrets/tls_cert` as the operator was curl error 77."""
    need_binary("openssl")
    setpriv = need_binary("setpriv")
    need(os.geteuid() == 0, "init-secrets.sh gives the files to uid 10001, which needs root")
    # The box serves a gated model: init-secrets.sh refuses to run without a token for it.
    env = {**os.environ, "HF_TOKEN": "hf_token_of_the_test_operator"}
    done = subprocess.run(["./init-secrets.sh"], cwd=bundle_dir, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    operator = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r", "secrets/tls_cert"]
    assert subprocess.run(operator, cwd=bundle_dir, check=False).returncode != 0  # the premise
    readme = (bundle_dir / "README.md").read_text()
    blocks = readme.split("```sh\n")[1:]
    commands = " \n".join(b.split("```", 1)[0] for b in blocks).replace("\\\n", " ").splitlines()
    for command in commands:
        code = command.split("  #", 1)[0]
        for part in code.split("secrets/")[:-1]:
            in_sudo_cat = part.rstrip().endswith("sudo cat")
            assert in_sudo_cat or code.lstrip().startswith("sudo "), f"reads a secret without sudo: {command.strip()}"
