"""Issue 25: signed release artifacts, the box's verifier, waves through Ansible, fleet status and
the fleet-scale simulation. The signatures are real (ssh-keygen), the registry is real (Debian's
docker-registry on 127.0.0.1), and the playbook is checked by the real ansible-playbook."""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from slm_deploy.rollout import boxagent
from slm_deploy.rollout.playbook import copy_agent
from tests.conftest import ROOT, need, need_binary, run_cli

FLEET = ROOT / "examples" / "fleet.yaml"
RELEASE = "2026.12.06-1"


def keypair(folder: Path, name: str, options: str = "") -> tuple[Path, str]:
    need_binary("ssh-keygen")
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", str(key), "-N", "", "-C", name], check=True)
    line = f'release@retail-stores namespaces="slm-deploy-release"{"," + options if options else ""} {(folder / (name + ".pub")).read_text()}'
    return key, line


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key, line = keypair(tmp_path, "release_key")
    signers = tmp_path / "allowed_signers"
    signers.write_text(line)
    return key, signers


def publish(
    tmp_path: Path,
    key: Path,
    *extra: str,
    boxes: tuple[str, ...] = ("store-0001", "kiosk-0003"),
    release: str = RELEASE,
    sequence: int = 1,
) -> Path:
    layout = tmp_path / "layout"
    args = ["publish", str(FLEET), "--release", release, "--sequence", str(sequence), "--key", str(key), "--layout", str(layout)]
    args += extra
    for box in boxes:
        args += ["--box", box]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return layout


def verify(archive: Path, box: str, signers: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("verify", str(archive), "--box", box, "--allowed-signers", str(signers))


def rewrite_layout(archive: Path, change: dict[str, bytes | None]) -> None:
    """Replace (or drop, with None) members of a layout archive, as an attacker with the file could."""
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in members:
            if member.name in change:
                if change[member.name] is None:
                    continue
                data = change[member.name]  # type: ignore[assignment]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    archive.write_bytes(out.getvalue())


def layout_parts(archive: Path) -> tuple[dict, dict, dict[str, bytes]]:
    with tarfile.open(archive) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    return index, manifest, blobs


AgentRun = Callable[..., "subprocess.CompletedProcess[str]"]
AGENT_PACKAGE = Path(boxagent.__file__).parent


@pytest.fixture(scope="session")
def shipped_agent(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The box agent as `rollout` ships it (the slm-box folder), run as a box runs it, by a python
    without site-packages (-S) or environment (-I): nothing but the standard library and the folder
    itself can be imported, not even slm_deploy."""
    folder = tmp_path_factory.mktemp("box-agent") / "slm-box"
    copy_agent(folder)
    return [sys.executable, "-I", "-S", str(folder)]


@pytest.fixture
def box_agent(shipped_agent: list[str]) -> AgentRun:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*shipped_agent, *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
        )

    return run


@pytest.mark.parametrize("module", sorted(p.name for p in AGENT_PACKAGE.glob("*.py")))
def test_the_box_agent_runs_on_the_standard_library_alone(module: str) -> None:
    """Each module is copied to boxes: no slm_deploy import, no third-party module, only relative
    imports of the package's own modules (they work as slm_deploy.rollout.boxagent here and as the
    top-level boxagent on a box), and Python 3.9 syntax (Debian 11's python3)."""
    source = (AGENT_PACKAGE / module).read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    if module == "__main__.py":  # run as the folder's __main__ on a box: the package by its top-level name
        imported -= {AGENT_PACKAGE.name}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
    relative = {(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert {(level, (name or "").split(".")[0] + ".py") for level, name in relative} <= {
        (1, p.name) for p in AGENT_PACKAGE.glob("*.py")
    }


def test_the_shipped_agent_runs_without_slm_deploy(tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun) -> None:
    """`python3 slm-box` as the playbook and the pull script run it; -S leaves slm_deploy out of reach."""
    key, signers = keys
    archive = publish(tmp_path, key, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    done = box_agent("verify", "--box", "kiosk-0003", "--allowed-signers", str(signers), "--layout", str(archive))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["release"] == RELEASE
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import slm_deploy"], capture_output=True, check=False)
    assert probe.returncode != 0  # the isolation is real: the agent did not lean on the installed package


def test_publish_is_byte_identical_and_a_box_accepts_only_its_own_signed_release(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, signers = keys
    first = publish(tmp_path / "a", key)
    second = publish(tmp_path / "b", key)
    for box in ("store-0001", "kiosk-0003"):
        assert (first / f"{box}.oci.tar").read_bytes() == (second / f"{box}.oci.tar").read_bytes()
    ok = verify(first / "store-0001.oci.tar", "store-0001", signers)
    assert ok.returncode == 0, ok.stderr
    assert "store-0001" in ok.stdout and RELEASE in ok.stdout
    other = verify(first / "store-0001.oci.tar", "kiosk-0003", signers)
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "addressed to box store-0001, not to this box (kiosk-0003)" in other.stderr


def test_a_tampered_bundle_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, signers = keys
    archive = publish(tmp_path, key) / "store-0001.oci.tar"
    _, manifest, blobs = layout_parts(archive)
    name = "blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]
    raw = bytearray(blobs[name])
    raw[len(raw) // 2] ^= 1
    rewrite_layout(archive, {name: bytes(raw)})
    done = verify(archive, "store-0001", signers)
    assert done.returncode == 2 and "tampered" in done.stderr


def test_a_rebuilt_manifest_with_another_bundle_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The attacker swaps the bundle layer for another box's (validly signed) bundle and rewrites the
    manifest and index consistently: only the signed statement catches it."""
    key, signers = keys
    layout = publish(tmp_path, key)
    archive = layout / "store-0001.oci.tar"
    index, manifest, blobs = layout_parts(archive)
    _, kiosk_manifest, kiosk_blobs = layout_parts(layout / "kiosk-0003.oci.tar")
    kiosk_bundle = kiosk_manifest["layers"][0]
    manifest["layers"][0] = kiosk_bundle
    body = json.dumps(manifest).encode()
    digest = boxagent.sha256(body)
    index["manifests"][0].update(digest=digest, size=len(body))
    bundle_name = "blobs/sha256/" + kiosk_bundle["digest"].split(":")[1]
    change: dict[str, bytes | None] = {"index.json": json.dumps(index).encode()}
    blobs["blobs/sha256/" + digest.split(":")[1]] = body
    blobs[bundle_name] = kiosk_blobs[bundle_name]
    rewrite_layout(archive, change)
    with tarfile.open(archive, "a") as tar:
        for name in ("blobs/sha256/" + digest.split(":")[1], bundle_name):
            info = tarfile.TarInfo(name)
            info.size = len(blobs[name])
            tar.addfile(info, io.BytesIO(blobs[name]))
    done = verify(archive, "store-0001", signers)
    assert done.returncode == 2 and "not the archive the statement signs" in done.stderr


def test_unsigned_and_foreign_signatures_are_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, signers = keys
    archive = publish(tmp_path, key, boxes=("store-0001",)) / "store-0001.oci.tar"
    index, manifest, _ = layout_parts(archive)
    manifest["layers"] = [layer for layer in manifest["layers"] if layer["mediaType"] != boxagent.SIGNATURE_TYPE]
    body = json.dumps(manifest).encode()
    index["manifests"][0].update(digest=boxagent.sha256(body), size=len(body))
    unsigned = tmp_path / "unsigned.oci.tar"
    shutil.copy(archive, unsigned)
    rewrite_layout(unsigned, {"index.json": json.dumps(index).encode()})
    with tarfile.open(unsigned, "a") as tar:
        info = tarfile.TarInfo("blobs/sha256/" + boxagent.sha256(body).split(":")[1])
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    done = verify(unsigned, "store-0001", signers)
    assert done.returncode == 2 and "unsigned" in done.stderr
    # Signed, but by a key the box does not trust.
    stranger, _ = keypair(tmp_path, "stranger")
    foreign = publish(tmp_path / "foreign", stranger, boxes=("store-0001",)) / "store-0001.oci.tar"
    done = verify(foreign, "store-0001", signers)
    assert done.returncode == 2 and "signature: not valid for release@retail-stores" in done.stderr


def test_key_rotation_through_allowed_signers(tmp_path: Path) -> None:
    """ssh-keygen's allowed_signers options are the rotation: a key whose valid-before has passed
    no longer verifies; the new key's line verifies; removing the old line retires it."""
    old, old_line = keypair(tmp_path, "old", 'valid-before="20260101"')
    new, new_line = keypair(tmp_path, "new", 'valid-after="20261201"')
    signers = tmp_path / "allowed_signers"
    signers.write_text(old_line + new_line)
    old_release = publish(tmp_path / "o", old, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    new_release = publish(tmp_path / "n", new, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    assert verify(new_release, "kiosk-0003", signers).returncode == 0
    expired = verify(old_release, "kiosk-0003", signers)
    assert expired.returncode == 2 and "signature" in expired.stderr


def test_install_keeps_operator_files_and_rolls_back(tmp_path: Path, keys: tuple[Path, Path], shipped_agent: list[str]) -> None:
    key, signers = keys
    root = tmp_path / "box"
    first = publish(tmp_path / "r1", key, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    agent = shipped_agent
    common = ["--box", "kiosk-0003", "--allowed-signers", str(signers), "--root", str(root), "--operator-entry", "secrets"]
    done = subprocess.run([*agent, "install", "--layout", str(first), *common], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    current = root / "current"
    assert (current / "compose.yaml").is_file() and (current / "MANIFEST.json").is_file()
    (current / "secrets").mkdir()
    (current / "secrets" / "api_key").write_text("operator's key")
    os.chmod(current / "secrets" / "api_key", 0o600)
    os.chown(current / "secrets" / "api_key", 10001, 10001)  # as init-secrets.sh leaves it (we run as root)
    # Release 2: the same bundle under another release name is enough to exercise the swap.
    second_layout = tmp_path / "r2"
    done = run_cli(
        "publish",
        str(FLEET),
        "--release",
        "2026.12.07-1",
        "--sequence",
        "2",
        "--key",
        str(key),
        "--layout",
        str(second_layout),
        "--box",
        "kiosk-0003",
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*agent, "install", "--layout", str(second_layout / "kiosk-0003.oci.tar"), *common],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert os.readlink(current) == "releases/2026.12.07-1/kiosk-0003"
    assert (current / "secrets" / "api_key").read_text() == "operator's key"
    copied = (current / "secrets" / "api_key").stat()
    assert (copied.st_uid, copied.st_gid, copied.st_mode & 0o777) == (10001, 10001, 0o600)  # the gateway's user can read it
    assert os.readlink(root / "previous") == "releases/2026.12.06-1/kiosk-0003"
    done = subprocess.run([*agent, "rollback", "--root", str(root)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert os.readlink(current) == "releases/2026.12.06-1/kiosk-0003"
    # A refused artifact changes nothing on the box.
    refused = subprocess.run(
        [*agent, "install", "--layout", str(first), *common[:1], "store-0001", *common[2:]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert os.readlink(current) == "releases/2026.12.06-1/kiosk-0003"


@pytest.mark.tools
def test_publish_to_a_real_registry_and_the_box_pulls_and_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from tests.registry import LiveRegistry

    key, signers = keys
    registry = LiveRegistry(tmp_path)
    try:
        repository = f"{registry.host}/slm/releases"
        done = run_cli(
            "publish",
            str(FLEET),
            "--release",
            RELEASE,
            "--sequence",
            "1",
            "--key",
            str(key),
            "--to",
            repository,
            "--box",
            "store-0001",
            "--json",
        )
        assert done.returncode == 0, done.stderr
        [item] = json.loads(done.stdout)
        assert item["pushed"] == f"{repository}:store-0001-{RELEASE}"
        artifact = boxagent.fetch(registry.host, "slm/releases", f"store-0001-{RELEASE}")
        assert artifact.digest == item["digest"]
        values, bundle = artifact.verified("store-0001", str(signers))
        assert values["release"] == RELEASE and bundle[:2] == b"\x1f\x8b"
        with pytest.raises(boxagent.Refused, match="not to this box"):
            artifact.verified("kiosk-0003", str(signers))
        # Publishing again sends the same bytes: the registry keeps the same digest.
        again = run_cli(
            "publish",
            str(FLEET),
            "--release",
            RELEASE,
            "--sequence",
            "1",
            "--key",
            str(key),
            "--to",
            repository,
            "--box",
            "store-0001",
            "--json",
        )
        assert json.loads(again.stdout)[0]["digest"] == item["digest"]
    finally:
        registry.stop()


def write_rollout(tmp_path: Path, keys: tuple[Path, Path], *extra: str) -> Path:
    """`slm-deploy rollout` of the example fleet into TMP/rollout (no --apply): its folder."""
    key, signers = keys
    layout = publish(tmp_path, key, boxes=())
    out = tmp_path / "rollout"
    done = run_cli(
        "rollout", str(FLEET), "--release", RELEASE, "--artifacts", str(layout), "--allowed-signers", str(signers),
        "--out", str(out), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_the_agent_is_shipped_without_compiled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A box compiles for its own python3: the __pycache__ an import leaves beside the sources
    (this machine's python, its timestamps) is not copied, so the rollout folder stays the same."""
    import compileall

    from slm_deploy.rollout import shipping

    package = tmp_path / "src" / "boxagent"
    shutil.copytree(AGENT_PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(package, quiet=1) and (package / "__pycache__").is_dir()
    monkeypatch.setattr(shipping, "AGENT", package)
    written = copy_agent(tmp_path / "slm-box")
    assert [str(p.relative_to(tmp_path / "slm-box")) for p in written] == [
        "__main__.py",
        *(f"boxagent/{p.name}" for p in sorted(AGENT_PACKAGE.glob("*.py")) if p.name != "__main__.py"),
    ]
    assert not list((tmp_path / "slm-box").rglob("__pycache__"))


def test_rollout_writes_waves_that_ansible_accepts(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("store-0001: {ansible_host: 10.0.0.1, ansible_user: ops}\n")
    out = write_rollout(tmp_path, keys, "--hosts", str(hosts))
    import yaml

    inventory = yaml.safe_load((out / "inventory.yml").read_text())
    fleet = inventory["all"]["children"]["slm_fleet"]
    assert list(fleet["hosts"])[:2] == ["store-0001", "store-0002"]  # canary first, then 10%
    assert fleet["hosts"]["store-0001"]["ansible_host"] == "10.0.0.1"
    assert fleet["vars"]["slm_root"] == "/srv/slm-deploy"  # a group default: a box's own slm_root wins
    assert fleet["vars"]["slm_work"] == str(out.resolve() / "work")  # absolute: fetch and command agree
    assert "forks = 50" in (out / "ansible.cfg").read_text()
    play = yaml.safe_load((out / "playbook.yml").read_text())[0]
    assert play["serial"] == [1, 1, 6] and play["max_fail_percentage"] == 0
    # The agent's folder holds the package's modules, byte for byte, and its __main__.py on top (only
    # there): nothing else (no __pycache__ of this machine's python), nothing left out.
    shipped = out / "files" / "slm-box"
    expected = {"__main__.py": AGENT_PACKAGE / "__main__.py"}
    expected |= {f"boxagent/{p.name}": p for p in AGENT_PACKAGE.glob("*.py") if p.name != "__main__.py"}
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == sorted(expected)
    assert [rel for rel, source in expected.items() if (shipped / rel).read_bytes() != source.read_bytes()] == []
    playbook_binary = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    need(Path(playbook_binary).is_file(), "ansible is not installed (pip install ansible)")
    check = subprocess.run(
        [playbook_binary, "-i", "inventory.yml", "playbook.yml", "--syntax-check"],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listed = subprocess.run(
        [playbook_binary, "-i", "inventory.yml", "playbook.yml", "--list-hosts"],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0 and "hosts (8)" in listed.stdout


def test_the_agent_tasks_leave_exactly_the_shipped_agent_on_a_box(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The generated playbook's agent tasks, run by the real ansible-playbook on this machine (connection
    local) against a box folder an earlier release left behind: a module the package no longer has, a
    folder opened to everyone, the one-file agent of the releases before the package. After the run the
    folder holds exactly the shipped files, at 0755/0644, and the one-file agent is gone; a second run
    changes nothing."""
    import yaml

    out = write_rollout(tmp_path, keys)
    play = yaml.safe_load((out / "playbook.yml").read_text())[0]
    (block,) = [t["block"] for t in play["tasks"] if t.get("name") == "Rollout"]
    tasks = [t for t in block if str(t.get("name", "")).startswith(("Box agent", "Earlier box agent"))]
    assert [t["name"] for t in tasks][-1] == "Earlier box agent"  # removed only once the new agent is in place
    root = tmp_path / "box"
    agent = root / "bin" / "slm-box"
    (agent / "boxagent").mkdir(parents=True)
    (agent / "boxagent" / "gone.py").write_text("raise SystemExit('a module of an earlier release')\n")
    (agent / "stale").mkdir()
    (agent / "stale" / "x.py").write_text("")
    (agent / "boxagent" / "__pycache__").mkdir()
    (agent / "boxagent" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"")
    agent.chmod(0o777)
    (root / "bin" / "slm-box.py").write_text("# the one-file agent\n")
    mini = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"slm_root": str(root), "ansible_python_interpreter": sys.executable},
            "tasks": tasks,
        }
    ]
    (out / "agent.yml").write_text(yaml.safe_dump(mini))
    playbook_binary = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    need(Path(playbook_binary).is_file(), "ansible is not installed (pip install ansible)")

    def run() -> str:
        done = subprocess.run(
            [playbook_binary, "-i", "localhost,", "agent.yml"], cwd=out, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run()
    shipped = out / "files" / "slm-box"
    on_box = sorted(str(p.relative_to(agent)) for p in agent.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert on_box == sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file())
    assert [p for p in (agent / "boxagent").iterdir() if p.name == "gone.py"] == [] and not (agent / "stale").exists()
    assert not (root / "bin" / "slm-box.py").exists()
    assert stat.S_IMODE(agent.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in agent.rglob("*.py")} == {0o644}
    assert "changed=0" in run()  # nothing left to change (the compiled files a box's python3 writes are kept)
    version = subprocess.run([sys.executable, "-I", "-S", str(agent), "--help"], capture_output=True, text=True, check=False)
    assert version.returncode == 0, version.stderr


def test_the_docs_agent_upgrade_for_a_pull_box_leaves_exactly_the_shipped_agent(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """docs/rollout.md's block for a pull or offline box, run as written (systemctl aside) with /srv
    and OUT pointing here, on a box an earlier release set up: the folder is the shipped one, the
    one-file agent is gone, the pull script is the new one, and the agent runs."""
    import re

    out = write_rollout(tmp_path, keys)
    doc = (ROOT / "docs" / "rollout.md").read_text()
    (block,) = [b for b in re.findall(r"^```sh\n(.*?)^```", doc, flags=re.S | re.M) if "slm-box.new" in b]
    root = tmp_path / "srv" / "slm-deploy"
    agent = root / "bin" / "slm-box"
    (agent / "boxagent").mkdir(parents=True)
    (agent / "boxagent" / "gone.py").write_text("")
    (root / "bin" / "slm-box.py").write_text("# the one-file agent\n")
    (root / "bin" / "slm-deploy-pull.sh").write_text('python3 "$ROOT/bin/slm-box.py" install\n')
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("systemctl ")]
    script = "set -eu\n" + "\n".join(lines).replace("/srv/slm-deploy", str(root)).replace("OUT/", f"{out}/")
    script = script.replace("python3 ", f"{sys.executable} -I -S ")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = out / "files" / "slm-box"
    on_box = sorted(str(p.relative_to(agent)) for p in agent.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert on_box == sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file())
    assert not (root / "bin" / "slm-box.py").exists() and not (root / "bin" / "slm-box.new").exists()
    assert (root / "bin" / "slm-deploy-pull.sh").read_text() == (out / "pull" / "slm-deploy-pull.sh").read_text()
    assert stat.S_IMODE(agent.stat().st_mode) == 0o755


def test_a_ring_naming_an_unknown_box_is_one_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.read_text() + "rollout:\n  rings:\n    - {name: canary, boxes: [store-9999]}\n    - {name: rest}\n")
    done = run_cli(
        "rollout",
        str(fleet),
        "--release",
        RELEASE,
        "--artifacts",
        str(tmp_path),
        "--allowed-signers",
        str(fleet),
        "--out",
        str(tmp_path / "o"),
    )
    assert done.returncode == 2
    assert done.stderr == "error: fleet.yaml: rollout.rings[0].boxes[0]: no box 'store-9999' in this fleet\n"


def test_fleet_status_names_the_failed_wave(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    rows = [
        {
            "box": "store-0001",
            "ring": "canary",
            "release": RELEASE,
            "installed": True,
            "gate": "passed",
            "rolled_back": False,
            "error": "",
        },
        {
            "box": "store-0002",
            "ring": "early",
            "release": RELEASE,
            "installed": True,
            "gate": "failed",
            "rolled_back": True,
            "error": "smoke: chat failed",
        },
    ]
    for row in rows:
        (reports / f"{row['box']}.json").write_text(json.dumps(row))
    done = run_cli("fleet", "status", str(reports))
    assert done.returncode == 1
    assert "smoke: chat failed" in done.stdout and "1 of 2 boxes failed, in ring early" in done.stdout


def test_fleet_simulation_stops_a_bad_release_at_the_canary() -> None:
    done = run_cli("fleet", "simulate", "--boxes", "10000")
    assert done.returncode == 0, done.stderr
    assert "bad release: stopped at wave 1 after reaching 1 boxes" in done.stdout
    assert "good release: 10000 boxes" in done.stdout


@pytest.mark.tools
def test_the_pull_variant_script_passes_shellcheck(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    out = write_rollout(tmp_path, keys)
    script = out / "pull" / "slm-deploy-pull.sh"
    checked = subprocess.run([need_binary("shellcheck"), "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout
    # The release folder, never the `current` link, is what compose is started in.
    assert 'cd "$(readlink -f "$ROOT/current")"' in script.read_text()


def test_a_box_pinned_to_its_fleet_refuses_another_fleets_release(tmp_path: Path, shipped_agent: list[str]) -> None:
    """One allowed_signers file may trust the same key for two fleets; the box names its own
    (outside review F5), and `fleet trust` for one fleet keeps the other fleet's line (F6)."""
    key, _ = keypair(tmp_path, "shared")
    signers = tmp_path / "allowed_signers"
    other = tmp_path / "other.yaml"
    other.write_text(FLEET.read_text().replace("fleet: retail-stores", "fleet: other-fleet"))
    for fleet_file in (FLEET, other):
        done = run_cli("fleet", "trust", str(fleet_file), str(tmp_path / "shared.pub"), "--out", str(signers))
        assert done.returncode == 0, done.stderr
    lines = signers.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["release@other-fleet", "release@retail-stores"]
    layout = tmp_path / "layout"
    done = run_cli(
        "publish",
        str(other),
        "--release",
        RELEASE,
        "--sequence",
        "1",
        "--key",
        str(key),
        "--layout",
        str(layout),
        "--box",
        "kiosk-0003",
    )
    assert done.returncode == 0, done.stderr
    agent = [*shipped_agent, "install", "--box", "kiosk-0003", "--allowed-signers", str(signers)]
    root = ["--root", str(tmp_path / "box"), "--layout", str(layout / "kiosk-0003.oci.tar")]
    refused = subprocess.run([*agent, "--fleet", "retail-stores", *root], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "a release of fleet other-fleet" in refused.stderr
    assert not (tmp_path / "box" / "current").exists()


def test_rollout_refuses_a_release_name_that_is_not_one(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, signers = keys
    layout = publish(tmp_path, key, boxes=())
    done = run_cli(
        "rollout", str(FLEET), "--release", "{{ lookup('pipe', 'id') }}", "--artifacts", str(layout),
        "--allowed-signers", str(signers), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: arguments: --release:")
    assert not (tmp_path / "o").exists()


LAB_FLEET = """\
fleet: wave-lab
defaults: {runtime: ollama, model: qwen3-0.6b, context: 2048, concurrency: 1, webui: false, monitoring: false}
rollout:
  rings: [{name: canary, count: 2}, {name: rest}]
boxes:
""" + "".join(
    f"  - {{id: {b}, hardware: {{cpu_arch: amd64, cpus: 2, memory_gib: 8, disk_gib: 64}}}}\n"
    for b in ("box-a", "box-b", "box-c", "box-d")
)


def test_a_box_that_becomes_unreachable_stops_the_wave_and_shows_as_unreachable(tmp_path: Path) -> None:
    """Outside review F1. The generated play runs under the real ansible-playbook; only the box work
    inside the block is replaced by one command (no Docker here). box-b's SSH port is closed, so
    Ansible finds it unreachable in the canary wave: with max_fail_percentage 0 the rollout must stop
    there (box-c and box-d untouched), and `fleet status` must name box-b unreachable."""
    import yaml

    from tests.registry import free_port

    playbook_binary = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    need(Path(playbook_binary).is_file(), "ansible is not installed (pip install ansible)")
    need_binary("ssh")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(LAB_FLEET)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for box in ("box-a", "box-b", "box-c", "box-d"):
        (artifacts / f"{box}.oci.tar").write_bytes(b"")
    (tmp_path / "allowed_signers").write_text("")
    out = tmp_path / "rollout"
    done = run_cli(
        "rollout", str(fleet), "--release", RELEASE, "--artifacts", str(artifacts),
        "--allowed-signers", str(tmp_path / "allowed_signers"), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    inventory = yaml.safe_load((out / "inventory.yml").read_text())
    hosts = inventory["all"]["children"]["slm_fleet"]["hosts"]
    for variables in hosts.values():
        variables.update(ansible_connection="local", ansible_python_interpreter=sys.executable, ansible_become=False)
    hosts["box-b"].update(
        ansible_connection="ssh",
        ansible_host="127.0.0.1",
        ansible_port=free_port(),  # nothing listens: connection refused, Ansible's `unreachable`
        ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5",
    )
    (out / "inventory.yml").write_text(yaml.safe_dump(inventory))
    plays = yaml.safe_load((out / "playbook.yml").read_text())
    [rollout_block] = [t for t in plays[0]["tasks"] if t.get("name") == "Rollout"]
    rollout_block["block"] = [
        {"name": "Touch the box", "ansible.builtin.command": "true", "changed_when": False},
        {"name": "Gate passed", "ansible.builtin.set_fact": {"slm_installed": True, "slm_gate": "passed"}},
    ]
    (out / "playbook.yml").write_text(yaml.safe_dump(plays))
    ran = subprocess.run(
        [playbook_binary, "-i", "inventory.yml", "playbook.yml"],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"},
    )
    assert ran.returncode != 0, ran.stdout
    reports = out / "reports"
    assert sorted(p.name for p in reports.glob("*.json")) == ["box-a.json", "box-b.json"], ran.stdout  # wave 2 untouched
    status = run_cli("fleet", "status", str(reports), "--json")
    assert status.returncode == 1, status.stderr
    rows = {row["box"]: row for row in json.loads(status.stdout)}
    assert rows["box-a"]["gate"] == "passed"
    assert rows["box-b"]["gate"] == "unreachable"
    assert {rows["box-c"]["gate"], rows["box-d"]["gate"]} == {"not reached"}
    table = run_cli("fleet", "status", str(reports))
    assert "1 unreachable: box-b" in table.stdout


def test_a_replayed_older_release_is_refused_unless_the_operator_allows_the_downgrade(
    tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun
) -> None:
    """Outside review F4: the order is the signed sequence; rollback stays allowed."""
    key, signers = keys
    old = publish(tmp_path / "old", key, boxes=("kiosk-0003",), release="2026.12.01-1", sequence=1) / "kiosk-0003.oci.tar"
    new = publish(tmp_path / "new", key, boxes=("kiosk-0003",), release="2026.12.06-1", sequence=2) / "kiosk-0003.oci.tar"
    root = tmp_path / "box"
    common = ["--box", "kiosk-0003", "--allowed-signers", str(signers), "--root", str(root)]
    for archive in (old, new):
        done = box_agent("install", "--layout", str(archive), *common)
        assert done.returncode == 0, done.stderr
    replayed = box_agent("install", "--layout", str(old), *common)
    assert replayed.returncode == 2
    assert "release 2026.12.01-1 (sequence 1) is older than 2026.12.06-1 (sequence 2), installed here before" in replayed.stderr
    assert os.readlink(root / "current") == "releases/2026.12.06-1/kiosk-0003"
    assert box_agent("rollback", "--root", str(root)).returncode == 0  # going back on purpose is a rollback
    assert os.readlink(root / "current") == "releases/2026.12.01-1/kiosk-0003"
    assert box_agent("install", "--layout", str(new), *common).returncode == 0
    allowed = box_agent("install", "--layout", str(old), *common, "--allow-downgrade")
    assert allowed.returncode == 0, allowed.stderr
    assert os.readlink(root / "current") == "releases/2026.12.01-1/kiosk-0003"


def test_after_a_rollback_a_release_older_than_the_newest_ever_installed_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun
) -> None:
    """Outside review H4: the order was checked against the current release only; after a rollback
    (or a failed first release, unlinked) a replayed release between the two went in."""
    key, signers = keys
    archives = {
        seq: publish(tmp_path / f"r{seq}", key, boxes=("kiosk-0003",), release=f"2026.12.0{seq}-1", sequence=seq)
        / "kiosk-0003.oci.tar"
        for seq in (1, 2, 3)
    }
    root = tmp_path / "box"
    common = ["--box", "kiosk-0003", "--allowed-signers", str(signers), "--root", str(root)]
    for seq in (1, 3):
        assert box_agent("install", "--layout", str(archives[seq]), *common).returncode == 0
    assert box_agent("rollback", "--root", str(root)).returncode == 0
    assert os.readlink(root / "current") == "releases/2026.12.01-1/kiosk-0003"
    replayed = box_agent("install", "--layout", str(archives[2]), *common)
    assert replayed.returncode == 2, replayed.stderr
    assert "is older than 2026.12.03-1 (sequence 3), installed here before" in replayed.stderr
    assert os.readlink(root / "current") == "releases/2026.12.01-1/kiosk-0003"
    assert box_agent("install", "--layout", str(archives[3]), *common).returncode == 0  # the newest again: fine


def fake_ssh(folder: Path, version: str) -> dict[str, str]:
    """`ssh -V` of an older box (Debian 11 ships OpenSSH 8.4p1); ssh-keygen stays the real one."""
    folder.mkdir(exist_ok=True)
    ssh = folder / "ssh"
    ssh.write_text(f"#!/bin/sh\necho 'OpenSSH_{version} Debian-5+deb11u3, OpenSSL 1.1.1w  11 Sep 2023' >&2\n")
    ssh.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_a_box_whose_openssh_ignores_key_windows_refuses_with_its_version(tmp_path: Path, box_agent: AgentRun) -> None:
    """Outside review F7: valid-after/valid-before exist from OpenSSH 8.7; 8.4 rejects such a line
    and with it every signature, with no word of why. The agent names the version instead."""
    key, line = keypair(tmp_path, "windowed", 'valid-after="20250101"')
    signers = tmp_path / "allowed_signers"
    signers.write_text(line)
    archive = publish(tmp_path, key, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    verify_args = ["verify", "--box", "kiosk-0003", "--allowed-signers", str(signers), "--layout", str(archive)]
    assert box_agent(*verify_args).returncode == 0  # this machine's OpenSSH honours the window
    old_box = fake_ssh(tmp_path / "bin", "8.4p1")
    refused = box_agent(*verify_args, env=old_box)
    assert refused.returncode == 2
    assert "this box has OpenSSH 8.4" in refused.stderr and "from 8.7" in refused.stderr
    # Without windows, 8.4 verifies (rotation by adding and removing lines).
    plain, plain_line = keypair(tmp_path, "plain_key")
    signers.write_text(plain_line)
    plain_archive = publish(tmp_path / "p", plain, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    ok = box_agent(
        "verify", "--box", "kiosk-0003", "--allowed-signers", str(signers), "--layout", str(plain_archive), env=old_box
    )
    assert ok.returncode == 0, ok.stderr


def test_a_box_without_the_ssh_client_verifies_with_ssh_keygen_alone(tmp_path: Path, box_agent: AgentRun) -> None:
    """Outside review H5: on RHEL ssh-keygen comes in `openssh` and ssh in `openssh-clients`; a box
    without `ssh` could not tell its version and refused every release of a fleet with key windows."""
    key, line = keypair(tmp_path, "windowed", 'valid-after="20250101"')
    signers = tmp_path / "allowed_signers"
    signers.write_text(line)
    archive = publish(tmp_path, key, boxes=("kiosk-0003",)) / "kiosk-0003.oci.tar"
    keygen_only = tmp_path / "keygen-only"
    keygen_only.mkdir()
    keygen = shutil.which("ssh-keygen")
    assert keygen is not None
    (keygen_only / "ssh-keygen").symlink_to(keygen)
    done = box_agent(
        "verify",
        "--box",
        "kiosk-0003",
        "--allowed-signers",
        str(signers),
        "--layout",
        str(archive),
        env={"PATH": str(keygen_only)},
    )
    assert done.returncode == 0, done.stderr


def fake_docker(folder: Path, ids: dict[str, str]) -> dict[str, str]:
    """A docker command for a box without an engine here: records `load`, answers `image inspect`
    with the image Ids a real `docker load` of the archive would give."""
    folder.mkdir(exist_ok=True)
    log = folder / "docker.log"
    cases = "".join(f'  "{name}") echo "{image_id}" ;;\n' for name, image_id in ids.items())
    docker = folder / "docker"
    docker.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'if [ "$1" = load ]; then [ -f "$3" ] || exit 1; exit 0; fi\n'
        f'case "$5" in\n{cases}  *) echo "Error: No such image: $5" >&2; exit 1 ;;\nesac\n'
    )
    docker.chmod(0o755)
    return {boxagent.DOCKER_ENV: str(docker)}


def test_an_offline_box_loads_its_images_archive_and_checks_the_locked_digests(
    tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun
) -> None:
    """Outside review F11: the bundle README's air-gapped step (`docker load -i images.tar`) is part
    of the agent's offline install, and a loaded image other than the locked one is refused."""
    key, signers = keys
    archive = publish(tmp_path, key, boxes=("clinic-0007",)) / "clinic-0007.oci.tar"
    _, manifest, blobs = layout_parts(archive)
    bundle = blobs["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        pinned = json.loads(tar.extractfile("clinic-0007/images.lock.json").read())["images"]  # type: ignore[union-attr]
    locked = {ref.split("@")[0]: want["config"] for ref, want in pinned.items() if want["config"]}
    assert locked, "the example lock pins the offline box's images"
    images = tmp_path / "carried" / "images.tar"  # on another mount in real life: read in place
    images.parent.mkdir()
    images.write_bytes(b"docker save output")
    root = tmp_path / "box"
    common = ["--box", "clinic-0007", "--allowed-signers", str(signers), "--root", str(root), "--layout", str(archive)]
    wrong = fake_docker(tmp_path / "wrong", {**locked, sorted(locked)[0]: "sha256:" + "0" * 64})
    refused = box_agent("install", *common, "--images", str(images), env=wrong)
    assert refused.returncode == 2 and f"{sorted(locked)[0]} is sha256:000" in refused.stderr
    assert not (root / "current").exists()
    right = fake_docker(tmp_path / "right", locked)
    done = box_agent("install", *common, "--images", str(images), env=right)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "right" / "docker.log").read_text().splitlines()[0] == f"load -i {images}"
    assert images.is_file()  # neither moved nor linked away


def publish_to(repository: str, key: Path, release: str, sequence: int, box: str, env: dict[str, str] | None = None) -> None:
    """Push BOX's release and move BOX's own tag to it (what the pull timer fetches)."""
    done = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "publish", str(FLEET), "--release", release, "--sequence", str(sequence),
         "--key", str(key), "--to", repository, "--box", box, "--promote"],
        capture_output=True, text=True, cwd=ROOT, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.tools
def test_the_pull_timer_does_not_retry_a_release_that_failed_on_the_box(
    tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun
) -> None:
    """Outside review F2. The generated pull script runs as the timer would, against a real registry;
    `docker compose up --wait` fails for the bad release (a docker stand-in: no engine here). After
    the rollback the next ticks leave the box on the good release; an explicit retry, or a newer
    release, installs again."""
    from tests.registry import LiveRegistry

    key, signers = keys
    out = write_rollout(tmp_path, keys)
    root = tmp_path / "box"
    (root / "bin").mkdir(parents=True)
    copy_agent(root / "bin" / "slm-box")
    shutil.copy(signers, root / "allowed_signers")
    script = tmp_path / "pull.sh"
    script.write_text((out / "pull" / "slm-deploy-pull.sh").read_text().replace("ROOT=/srv/slm-deploy", f"ROOT={root}"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$PWD $*" >> {tmp_path / "up.log"}\ncase "$PWD" in *bad*) exit 1 ;; esac\n')
    (bin_dir / "docker").chmod(0o755)
    registry = LiveRegistry(tmp_path)
    try:
        repository = f"{registry.host}/slm/releases"
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLM_BOX": "kiosk-0003",
            "SLM_FLEET": "retail-stores",
            "SLM_REGISTRY": repository,
        }

        def tick() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, check=False)

        publish_to(repository, key, "good-1", 1, "kiosk-0003")
        assert tick().returncode == 0
        publish_to(repository, key, "bad-2", 2, "kiosk-0003")
        assert tick().returncode == 1  # up failed: rolled back
        assert os.readlink(root / "current") == "releases/good-1/kiosk-0003"
        ups = (tmp_path / "up.log").read_text().count("\n")
        for _ in range(2):
            later = tick()
            assert later.returncode == 0, later.stderr
            assert "release bad-2 failed on this box" in later.stderr
        assert os.readlink(root / "current") == "releases/good-1/kiosk-0003"
        assert (tmp_path / "up.log").read_text().count("\n") == ups  # nothing was brought up again
        # The operator's explicit retry installs it again.
        retry = box_agent(
            "install", "--box", "kiosk-0003", "--fleet", "retail-stores", "--allowed-signers", str(signers),
            "--root", str(root), "--registry", f"{repository}:kiosk-0003", "--retry-failed",
        )  # fmt: skip
        assert retry.returncode == 0, retry.stderr
        assert os.readlink(root / "current") == "releases/bad-2/kiosk-0003"
        assert box_agent("rollback", "--root", str(root), "--failed", "still bad").returncode == 0
        # A box whose first release fails has nothing to go back to: the failed release stops being
        # current, and the next ticks do not bring it up again either.
        first = tmp_path / "first"
        (first / "bin").mkdir(parents=True)
        copy_agent(first / "bin" / "slm-box")
        shutil.copy(signers, first / "allowed_signers")
        script.write_text(script.read_text().replace(f"ROOT={root}", f"ROOT={first}"))
        publish_to(repository, key, "bad-4", 4, "kiosk-0003")
        assert tick().returncode == 1
        assert not (first / "current").exists()
        assert tick().returncode == 0 and "release bad-4 failed on this box" in tick().stderr
        script.write_text(script.read_text().replace(f"ROOT={first}", f"ROOT={root}"))
        # A newer release is installed at the next tick.
        publish_to(repository, key, "fixed-5", 5, "kiosk-0003")
        assert tick().returncode == 0
        assert os.readlink(root / "current") == "releases/fixed-5/kiosk-0003"
    finally:
        registry.stop()


@pytest.mark.tools
def test_the_box_fetches_from_a_token_protected_registry_with_a_credentials_file(
    tmp_path: Path, keys: tuple[Path, Path], box_agent: AgentRun
) -> None:
    """Outside review F3: the registry (Debian's docker-registry with token auth) answers 401 with a
    Bearer challenge; the box gets a token from the realm with the user and password of a 0600 file."""
    import base64

    from tests.registry import PASSWORD, USER, LiveRegistry, TokenIssuer

    key, signers = keys
    issuer = TokenIssuer(tmp_path)
    with issuer.serve() as realm:
        registry = LiveRegistry(tmp_path, token_realm=realm, issuer=issuer)
        try:
            repository = f"{registry.host}/private/releases"
            docker_dir = tmp_path / "docker"
            docker_dir.mkdir()
            config = {"auths": {registry.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
            (docker_dir / "config.json").write_text(json.dumps(config))
            publish_to(repository, key, RELEASE, 1, "store-0001", env={"DOCKER_CONFIG": str(docker_dir)})
            fetch = ["verify", "--box", "store-0001", "--allowed-signers", str(signers), "--registry", f"{repository}:store-0001"]
            anonymous = box_agent(*fetch)
            assert anonymous.returncode == 2 and "--registry-auth" in anonymous.stderr
            secret = tmp_path / "registry-auth"
            secret.write_text(f"{USER}:{PASSWORD}\n")
            secret.chmod(0o644)
            loose = box_agent(*fetch, "--registry-auth", str(secret))
            assert loose.returncode == 2 and "readable by others (mode 644): chmod 600 it" in loose.stderr
            secret.chmod(0o600)
            done = box_agent(*fetch, "--registry-auth", str(secret))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["release"] == RELEASE
            assert "repository:private/releases:pull" in issuer.issued
            (docker_dir / "config.json").chmod(0o600)
            assert box_agent(*fetch, "--registry-auth", str(docker_dir / "config.json")).returncode == 0
            secret.write_text(f"{USER}:wrong\n")
            refused = box_agent(*fetch, "--registry-auth", str(secret))
            assert refused.returncode == 2 and "the credentials were refused" in refused.stderr
        finally:
            registry.stop()
