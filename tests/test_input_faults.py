"""The fault list of issue 22: FIFOs named as the lock, images, key, CA or docker-config file are
refused in one line (never waited on); `init` on a full disk leaves nothing, and a symbolic link
planted where it writes cannot redirect the write; absurd sizes are refused in one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

BOUND = 60  # seconds: a command that waits on a FIFO would never end


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLM_DEPLOY_NET_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=BOUND,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_a_fifo_as_the_lock_file_is_refused(fifo: Path, tmp_path: Path) -> None:
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": [{"id": "a", "repository": "127.0.0.1:9/team/app", "tag": "1"}]}))
    for extra in ((), ("--check",)):
        line = one_line(cli("lock", "--no-catalog", "--images", str(images), "--lock", str(fifo), *extra))
        assert line == f"error: {fifo}: not a regular file (a FIFO)"


def test_a_fifo_as_the_images_file_is_refused(fifo: Path, tmp_path: Path) -> None:
    line = one_line(cli("lock", "--no-catalog", "--images", str(fifo), "--lock", str(tmp_path / "images.lock.yaml")))
    assert line == f"error: {fifo}: not a regular file (a FIFO)"


def test_a_fifo_as_the_api_key_or_the_ca_file_is_refused(fifo: Path, tmp_path: Path) -> None:
    line = one_line(cli("smoke", "https://127.0.0.1:9", "--api-key-file", str(fifo)))
    assert line == f"error: {fifo}: not a regular file (a FIFO)"
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    line = one_line(cli("smoke", "https://127.0.0.1:9", "--api-key-file", str(key), "--cacert", str(fifo)))
    assert line == f"error: {fifo}: not a regular file (a FIFO)"


def test_a_fifo_as_the_docker_config_is_refused(fifo: Path) -> None:
    from slm_deploy.supply.credentials import CredentialError, lookup

    with pytest.raises(CredentialError, match=r"not a regular file \(a FIFO\)$"):
        lookup("ghcr.io", fifo)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cpu", "--memory-gib", "1e308"), "error: arguments: memory_gib: Input should be less than or equal to 65536"),
        (("--cpu", "--cpus", "99999999999"), "error: arguments: cpus: Input should be less than or equal to 4096"),
    ],
)
def test_absurd_machine_sizes_are_one_line(args: tuple[str, ...], message: str) -> None:
    assert one_line(cli("plan", "--model", "qwen3-4b", "--runtime", "ollama", *args)) == message


# ---------------------------------------------------------------------------------------------
# init: all or nothing


def _init_files() -> dict[str, str]:
    return {"README.md": "readme\n", ".github/workflows/ci.yml": "on: push\n", "stacks/Pulumi.dev.yaml": "config: {}\n"}


def test_a_full_disk_leaves_no_file_and_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_deploy.errors import InputError
    from slm_deploy.scaffold import write_files

    real = os.write
    calls = {"n": 0}

    def fill(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", fill)
    target = tmp_path / "deploy"
    with pytest.raises(InputError, match="No space left on device; nothing was written"):
        write_files(target, _init_files())
    assert not target.exists()
    monkeypatch.undo()
    written = write_files(target, _init_files())
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(_init_files())
    assert len(written) == 3


def test_a_planted_symlink_cannot_redirect_inits_write(tmp_path: Path) -> None:
    from slm_deploy.errors import InputError
    from slm_deploy.scaffold import write_files

    target = tmp_path / "deploy"
    outside = tmp_path / "outside"
    outside.mkdir()
    target.mkdir()
    # The temporary name the old writer used, planted as a link to a file outside DIR.
    (target / "README.md.slm-init-tmp").symlink_to(outside / "victim")
    (target / ".github").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match=r"\.github: is a symbolic link: refusing to write through it"):
        write_files(target, _init_files())
    assert list(outside.iterdir()) == []
    (target / ".github").unlink()
    write_files(target, _init_files())
    assert list(outside.iterdir()) == [] and (target / "README.md").read_text() == "readme\n"


# ---------------------------------------------------------------------------------------------
# bundle --tar and verify


def test_a_directory_where_the_archive_goes_is_named_under_the_users_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "kiosk-0003.tar.gz").mkdir(parents=True)
    line = one_line(cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out), "--box", "kiosk-0003", "--tar"))
    assert line == f"error: {out / 'kiosk-0003.tar.gz'}: a directory is in the way of the archive; move it away"
    assert sorted(p.name for p in out.iterdir()) == ["kiosk-0003.tar.gz"]


def test_verify_names_a_huge_manifest_too_large_and_a_digest_mismatch_as_such(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out), "--box", "kiosk-0003").returncode == 0
    box = out / "kiosk-0003"
    other = "sha256:" + "0" * 64
    result = cli("verify", str(box), "--expect", other)
    assert result.returncode == 1
    assert result.stdout.startswith("digest: MANIFEST.json: sha256:") and result.stdout.endswith(f", expected {other}\n")
    assert "mode:" not in result.stdout and "changed:" not in result.stdout
    manifest = box / "MANIFEST.json"
    manifest.write_bytes(manifest.read_bytes() + b" " * 21_000_000)
    line = one_line(cli("verify", str(box)))
    assert line.startswith(f"error: {manifest}: too large for a manifest (")


def test_a_fifo_as_the_bundles_image_list_is_refused(tmp_path: Path) -> None:
    from slm_deploy.errors import InputError
    from slm_deploy.supply.loaded import check

    os.mkfifo(tmp_path / "images.lock.json")
    with pytest.raises(InputError, match=r"images\.lock\.json: not a regular file \(a FIFO\)$"):
        check(tmp_path)
