"""preview under hostile input (issue 10, items 4-7 and 12-13): stack names by Pulumi's rule,
every write under --out and atomic, a user's file never overwritten, PULUMI_CONFIG ignored, a
near-miss config namespace refused, an internet-wide API server refused however it is spelled."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.errors import InputError
from slm_deploy.policies.azure_rules import api_server_restricted
from slm_deploy.preview import INDEX, PreviewResult, run_preview, write_manifests
from tests.conftest import ROOT, run_cli

_CACHE: dict[str, PreviewResult] = {}


def _dev() -> PreviewResult:
    if "dev" not in _CACHE:
        _CACHE["dev"] = run_preview("dev", ROOT)
    return _CACHE["dev"]


def _dev_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]


def _project(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    (root / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["x/../../elsewhere/evil", "../dev", "a b", "", "x" * 101, "dev\n"])
def test_a_stack_name_outside_pulumis_rules_is_refused_before_anything_is_read(tmp_path: Path, name: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Pulumi.evil.yaml").write_text((ROOT / "Pulumi.dev.yaml").read_text())
    result = run_cli("preview", name, "--out", str(tmp_path / "out" / "m"), "--project", str(ROOT))
    assert result.returncode == 2 and result.stderr.count("error:") == 1, result.stderr
    assert "not a Pulumi stack name" in result.stderr or "arguments" in result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["Pulumi.evil.yaml"]


def test_an_empty_out_is_refused(tmp_path: Path) -> None:
    result = run_cli("preview", "dev", "--out", "", cwd=tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_users_file_is_never_overwritten_and_stale_manifests_of_ours_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "m"
    (out / "slm").mkdir(parents=True)
    mine = out / "slm" / "deployment-phi4mini.yaml"
    mine.write_text("my own notes\n")
    with pytest.raises(InputError, match="not written by slm-deploy preview"):
        write_manifests(_dev(), out)
    assert _tree(out) == {"slm/deployment-phi4mini.yaml": b"my own notes\n"}
    mine.unlink()
    (out / "README.txt").write_text("mine too\n")
    first = write_manifests(_dev(), out)
    stale = out / "slm" / "configmap-left-over.yaml"
    stale.write_text("# ours, from an older preview\n")
    index = json.loads((out / INDEX).read_text())
    index["files"]["slm/configmap-left-over.yaml"] = __import__("hashlib").sha256(stale.read_bytes()).hexdigest()
    (out / INDEX).write_text(json.dumps(index))
    second = write_manifests(_dev(), out)
    assert first == second and not stale.exists()
    assert (out / "README.txt").read_text() == "mine too\n"


def test_a_full_disk_leaves_out_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m"
    write_manifests(_dev(), out)
    before = _tree(out)
    real = Path.write_bytes
    calls = {"n": 0}

    def fill(self: Path, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill)
    with pytest.raises(InputError, match="No space left"):
        write_manifests(_dev(), out)
    assert _tree(out) == before  # nothing half written, no staging folder left


def test_a_symlinked_namespace_folder_is_not_written_through(tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "slm").symlink_to(elsewhere)
    with pytest.raises(InputError, match="outside"):
        write_manifests(_dev(), out)
    assert list(elsewhere.iterdir()) == []


def test_pulumi_config_in_the_environment_does_not_change_the_preview(tmp_path: Path) -> None:
    plain = run_cli("preview", "dev", "--json")
    env_config = {"slm-deploy:hfToken": "hf_" + "z" * 34, "slm-deploy:gateway": json.dumps({"replicas": 9})}
    import subprocess
    import sys

    env = {**os.environ, "PULUMI_CONFIG": json.dumps(env_config), "PULUMI_CONFIG_SLM_DEPLOY_GATEWAY": "{}"}
    dirty = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "preview", "dev", "--json"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert dirty.returncode == 0, dirty.stderr
    assert dirty.stdout == plain.stdout
    assert "note: ignored PULUMI_CONFIG, PULUMI_CONFIG_SLM_DEPLOY_GATEWAY" in dirty.stderr
    assert "pulumi up" in dirty.stderr and "error:" not in dirty.stderr


@pytest.mark.parametrize("namespace", ["slm-deplyo", "slm_deploy", "SLM-deploy", "slm-deploi"])
def test_a_near_miss_config_namespace_is_refused(tmp_path: Path, namespace: str) -> None:
    config = _dev_config()
    config[f"{namespace}:models"] = config.pop("slm-deploy:models")
    with pytest.raises(InputError, match=f"config.{namespace}:models: namespace"):
        run_preview("typo", _project(tmp_path, "typo", config))


@pytest.mark.parametrize(
    "ranges",
    [["0.0.0.0/1", "128.0.0.0/1"], ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1", "10.0.0.0/8"], ["::/1", "8000::/1"], ["2000::/3"]],
)
def test_an_api_server_open_to_the_internet_through_several_ranges_is_refused(tmp_path: Path, ranges: list[str]) -> None:
    config = _dev_config()
    config["slm-deploy:cluster"]["apiServer"] = {"authorizedIpRanges": ranges}
    with pytest.raises(InputError, match="open to the internet"):
        run_preview("wide", _project(tmp_path, "wide", config))
    cluster = {
        "type": "azure-native:containerservice:ManagedCluster",
        "props": {"apiServerAccessProfile": {"authorizedIPRanges": ranges}},
    }
    assert api_server_restricted(cluster)


def test_narrow_ranges_still_pass() -> None:
    cluster = {
        "type": "azure-native:containerservice:ManagedCluster",
        "props": {"apiServerAccessProfile": {"authorizedIPRanges": ["203.0.113.0/24", "0.0.0.0/1", "2001:db8::/32"]}},
    }
    assert api_server_restricted(cluster) == []


def test_an_interruption_at_every_step_of_writing_manifests_leaves_whole_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    old = copy.deepcopy(_dev())
    old.resources = [r for r in old.resources if r.type.startswith("kubernetes:") and "kind" in r.inputs][:6]
    new = copy.deepcopy(old)
    new.resources.pop(0)  # a manifest the new preview no longer has: removed as stale
    for resource in new.resources:
        resource.inputs.setdefault("metadata", {}).setdefault("labels", {})["fuzz"] = "new"
    old_files = {
        p.relative_to(tmp_path / "ref-old").as_posix(): p.read_bytes() for p in write_manifests(old, tmp_path / "ref-old")
    }
    new_files = {
        p.relative_to(tmp_path / "ref-new").as_posix(): p.read_bytes() for p in write_manifests(new, tmp_path / "ref-new")
    }
    operations = ((os, "replace"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"), (Path, "write_bytes"), (Path, "write_text"))
    step = 1
    while True:
        out = tmp_path / f"run-{step}"
        write_manifests(old, out)
        (out / "notes.txt").write_text("mine\n")
        state = {"calls": 0, "fired": False, "at": step}

        def fault(real: Any, state: dict[str, Any] = state) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                state["calls"] += 1
                if state["calls"] == state["at"]:
                    state["fired"] = True
                    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
                return real(*args, **kwargs)

            return wrapper

        with monkeypatch.context() as patch:
            for owner, name in operations:
                patch.setattr(owner, name, fault(getattr(owner, name)))
            with contextlib.suppress(InputError):
                write_manifests(new, out)
        if not state["fired"]:
            break
        for path in out.rglob("*"):
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in ("notes.txt", INDEX) and not rel.startswith(".slm-preview-"):
                assert path.read_bytes() in (old_files.get(rel), new_files.get(rel)), f"step {step}: {rel} is half written"
        assert (out / "notes.txt").read_text() == "mine\n"
        write_manifests(new, out)  # the next run completes the job and clears an interrupted one's staging
        assert not [p for p in out.iterdir() if p.name.startswith(".slm-preview-")], f"step {step}: staging left"
        assert _tree(out) == {**new_files, "notes.txt": b"mine\n", INDEX: (out / INDEX).read_bytes()}, f"step {step}"
        step += 1
    assert step > 10
