"""bundle --out never destroys what is not ours (issue 10, items 8-10): user folders and files
refused, links refused, operator files kept, a lock against concurrent runs, and a swap that is
safe at every step (fault injection)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slm_deploy.bundle import BoxBundle, swap
from slm_deploy.bundle.writer import build_fleet, verify_bundle, write_box
from slm_deploy.catalog import load_catalog
from slm_deploy.errors import InputError
from slm_deploy.fleet import parse_fleet
from tests.conftest import ROOT, run_cli

FLEET = ROOT / "examples" / "fleet.yaml"
BOX = "factory-0009"


def _bundle(models: list[dict[str, Any]]) -> BoxBundle:
    data = {
        "fleet": "t",
        "defaults": {"runtime": "ollama", "quantization": "q4_k_m", "context": 4096, "concurrency": 2},
        "boxes": [
            {
                "id": BOX,
                "hardware": {"cpu_arch": "amd64", "cpus": 16, "memory_gib": 64, "gpu": {"model": "rtx-3090", "count": 1}},
                "models": models,
            }
        ],
    }
    fleet = parse_fleet(data, "t.yaml")
    [built] = build_fleet(fleet, fleet.boxes, load_catalog())
    return built


OLD = _bundle([{"model": "phi-4-mini-instruct"}, {"model": "qwen3-4b"}])
NEW = _bundle([{"model": "qwen3-1.7b"}])
OPERATOR = {
    "secrets/api_key": b"k" * 40,
    "secrets/tls_key": b"-----BEGIN PRIVATE KEY-----\n",
    ".env": b"GRAFANA_PORT=3000\n",
    "compose.override.yaml": b"services: {}\n",
    "certs/ca.pem": b"ca\n",
    # E7: what init-secrets.sh and the offline README add (the cert copy sits in a generated folder).
    "gateway/tls_cert.pem": b"-----BEGIN CERTIFICATE-----\n",
    "images.tar": b"tar\n",
}


def _generated(directory: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not swap._is_operator(rel):
            out[rel] = path.read_bytes()
    return out


def _with_operator_files(out: Path) -> Path:
    write_box(out, OLD)
    box = out / BOX
    for rel, data in OPERATOR.items():
        (box / rel).parent.mkdir(exist_ok=True)
        (box / rel).write_bytes(data)
    return box


def _operator_files_intact(box: Path) -> None:
    for rel, data in OPERATOR.items():
        assert (box / rel).read_bytes() == data, rel


def test_a_user_folder_or_file_at_the_box_path_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "store-0001").mkdir(parents=True)
    (out / "store-0001" / "notes.txt").write_text("mine")
    (out / "kiosk-0003").write_text("also mine")
    result = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "store-0001")
    assert result.returncode == 2 and result.stderr.count("error:") == 1
    assert "store-0001" in result.stderr and "--force" in result.stderr
    assert (out / "store-0001" / "notes.txt").read_text() == "mine"
    result = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "kiosk-0003")
    assert result.returncode == 2 and (out / "kiosk-0003").read_text() == "also mine"
    forced = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "store-0001", "--force")
    assert forced.returncode == 0, forced.stderr
    assert verify_bundle(out / "store-0001").ok


def test_a_symlink_at_the_box_path_is_refused_even_with_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("x")
    out.mkdir()
    (out / "store-0001").symlink_to(target)
    for extra in ((), ("--force",)):
        result = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "store-0001", *extra)
        assert result.returncode == 2 and "symbolic link" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["precious"]


def test_operator_files_survive_regeneration_and_unknown_files_stop_the_run(tmp_path: Path) -> None:
    box = _with_operator_files(tmp_path)
    write_box(tmp_path, NEW)
    _operator_files_intact(box)
    assert _generated(box) == _generated_of(NEW)
    assert verify_bundle(box).extra == ("certs/ca.pem", "compose.override.yaml")  # kept, and still reported
    (box / "notes.md").write_text("mine")
    with pytest.raises(InputError, match=r"notes\.md.*not part of the bundle"):
        write_box(tmp_path, OLD)
    assert (box / "notes.md").read_text() == "mine"
    write_box(tmp_path, OLD, force=True)
    assert not (box / "notes.md").exists()
    _operator_files_intact(box)
    assert [p.name for p in tmp_path.iterdir()] == [BOX]  # nothing hidden left behind


def _generated_of(bundle: BoxBundle) -> dict[str, bytes]:
    return dict(sorted(bundle.files.items()))


def test_a_second_run_on_the_same_out_fails_cleanly_while_the_first_holds_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with swap.out_lock(out):
        result = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "kiosk-0003")
    assert result.returncode == 2 and "another slm-deploy run" in result.stderr
    assert list(out.iterdir()) == []


class Fault(Exception):
    pass


class Injector:
    """Counts every filesystem mutation; makes number `at` fail. With `dead`, every later one
    fails too, which is what a killed process looks like to the disk (its clean-up never runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int, dead: bool, error: Callable[[], BaseException]) -> None:
        self.count = 0
        self.at = at
        self.dead = dead
        self.error = error
        self.fired = False
        for module, name in [
            (os, "rename"),
            (os, "replace"),
            (os, "mkdir"),
            (os, "rmdir"),
            (os, "unlink"),
            (os, "link"),
            (os, "write"),
            (os, "chmod"),
            (os, "fchmod"),
            (swap, "exchange"),
        ]:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))
        real_open = os.open

        def guarded_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self._step()
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)

    def _step(self) -> None:
        self.count += 1
        if self.count == self.at or (self.dead and self.count > self.at):
            self.fired = True
            raise self.error()

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._step()
            return real(*args, **kwargs)

        return wrapper


@pytest.mark.parametrize(
    ("dead", "error"),
    [
        (False, lambda: OSError(errno.ENOSPC, "No space left on device")),
        (False, KeyboardInterrupt),
        (True, lambda: Fault("killed")),
    ],
    ids=["enospc", "ctrl-c", "killed"],
)
def test_an_interruption_at_every_step_keeps_a_whole_bundle_and_the_operator_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead: bool, error: Callable[[], BaseException]
) -> None:
    old_files, new_files = _generated_of(OLD), _generated_of(NEW)
    step = 1
    while True:
        out = tmp_path / f"run-{step}"
        box = _with_operator_files(out)
        with monkeypatch.context() as patch:
            injector = Injector(patch, step, dead, error)
            with contextlib.suppress(InputError, KeyboardInterrupt, Fault):
                write_box(out, NEW)
        if not injector.fired:
            break
        # Right after the interruption: a whole bundle, old or new, with the operator's files in it.
        assert _generated(box) in (old_files, new_files), f"step {step}"
        _operator_files_intact(box)
        if not dead:
            assert sorted(p.name for p in out.iterdir()) == [BOX], f"step {step}: leftovers"
        # The next run finishes the job.
        write_box(out, NEW)
        assert _generated(box) == new_files, f"step {step}"
        _operator_files_intact(box)
        assert sorted(p.name for p in out.iterdir()) == [BOX], f"step {step}"
        step += 1
    assert step > 20  # every write, link, rename and removal was interrupted once


def test_a_secrets_mount_point_is_never_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = _with_operator_files(tmp_path)
    secrets = box / "secrets"
    inode = secrets.stat().st_ino
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(secrets) or real_ismount(p))
    real_rename, real_exchange = os.rename, swap.exchange

    def no_moving_mounts(*paths: Any) -> None:
        if any(str(p) == str(secrets) for p in paths):
            raise OSError(errno.EBUSY, "Device or resource busy", str(secrets))

    monkeypatch.setattr(os, "rename", lambda a, b: (no_moving_mounts(a, b), real_rename(a, b))[1])
    monkeypatch.setattr(swap, "exchange", lambda a, b: (no_moving_mounts(a, b), real_exchange(a, b))[1])
    write_box(tmp_path, NEW)
    assert secrets.stat().st_ino == inode
    _operator_files_intact(box)
    assert _generated(box) == _generated_of(NEW)
    assert [p.name for p in tmp_path.iterdir()] == [BOX]


def test_operator_files_that_cannot_be_hard_linked_stay_where_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-root operator may not hard-link root-owned secrets (fs.protected_hardlinks)."""
    box = _with_operator_files(tmp_path)
    inodes = {rel: (box / rel).stat().st_ino for rel in OPERATOR}

    def refused(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted", str(args[0]))

    monkeypatch.setattr(os, "link", refused)
    write_box(tmp_path, NEW)
    _operator_files_intact(box)
    assert {rel: (box / rel).stat().st_ino for rel in OPERATOR} == inodes
    assert _generated(box) == _generated_of(NEW)
    assert [p.name for p in tmp_path.iterdir()] == [BOX]


def test_leftovers_of_older_versions_are_named_never_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = out / ".kiosk-0003.old.k2j4h6g8" / "bundle" / "secrets"
    old.mkdir(parents=True)
    (old / "api_key").write_text("k")
    result = run_cli("bundle", str(FLEET), "--out", str(out), "--box", "kiosk-0003")
    assert result.returncode == 0, result.stderr
    assert "note: " in result.stderr and ".kiosk-0003.old.k2j4h6g8" in result.stderr and "error:" not in result.stderr
    assert (old / "api_key").read_text() == "k"


def test_two_runs_on_the_same_out_never_destroy_each_others_work(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    two = ("--box", "kiosk-0003", "--box", "store-0002")
    first = run_cli("bundle", str(FLEET), "--out", str(out), *two)
    assert first.returncode == 0, first.stderr
    boxes = sorted(p for p in out.iterdir() if p.is_dir())
    for box in boxes:
        (box / "secrets").mkdir()
        (box / "secrets" / "api_key").write_text(box.name)
        (box / ".env").write_text(f"BOX={box.name}\n")
    command = [sys.executable, "-m", "slm_deploy.cli", "bundle", str(FLEET), "--out", str(out), *two]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=600), run.stderr.read() if run.stderr else "") for run in runs]
    for run in runs:
        if run.stderr:
            run.stderr.close()
    for code, err in results:
        assert code == 0 or (code == 2 and "another slm-deploy run is writing here" in err), err
        assert "Traceback" not in err
    assert any(code == 0 for code, _ in results)
    for box in boxes:
        assert (box / "secrets" / "api_key").read_text() == box.name
        assert (box / ".env").read_text() == f"BOX={box.name}\n"
        assert verify_bundle(box).ok
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
