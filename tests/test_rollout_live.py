"""Issue 25, for real: three boxes that Ansible reaches over real SSH (Debian's OpenSSH server on
127.0.0.1, one sshd per box), each box its own release root and compose project on the test's
Docker engine, running real bundles with the live-test images (tests/standins). A good release
rolls out in waves and passes the smoke gate; a bad release (a broken gateway, as a generator bug
would make it, validly signed) stops at its canary, which rolls back and comes up again on the
previous release while the other boxes are not touched; a box that was offline during a release
catches up when the rollout is run again.

Nothing leaves the machine: each box's compose override (an operator file, seeded in
ROOT/operator/ before the first release) makes every network internal with a fixed subnet, and the
controller's smoke gate reaches the gateway at its container address (`smoke --connect-to`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import compose_binary, need, need_binary, run_cli, stop
from tests.test_compose_live import engine, override  # noqa: F401 (the session fixture)

pytestmark = pytest.mark.live_compose

BOXES = ("box-a", "box-b", "box-c")
FLEET = """\
fleet: rollout-lab
defaults: {runtime: ollama, model: qwen3-0.6b, context: 2048, concurrency: 1, webui: false, monitoring: false}
rollout:
  rings: [{name: canary, count: 1}, {name: rest}]
  wait_seconds: 300
boxes:
""" + "".join(f"  - {{id: {box}, hardware: {{cpu_arch: amd64, cpus: 2, memory_gib: 8, disk_gib: 64}}}}\n" for box in BOXES)


def subnet(i: int) -> tuple[str, str]:
    return f"172.31.{200 + i}.0/24", f"172.31.{200 + i}.10"


class Lab:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.sshd: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self.fleet = root / "fleet.yaml"
        self.fleet.write_text(FLEET)
        (root / "images.lock.yaml").write_text("version: 1\nimages: {}\n")  # tag references: the stand-ins
        self.key = root / "release_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", str(self.key), "-N", ""], check=True)
        self.signers = root / "allowed_signers"
        self.signers.write_text(f'release@rollout-lab namespaces="slm-deploy-release" {(root / "release_key.pub").read_text()}')
        # SSH: a client key, a host key, known_hosts pinned (no trust on first use).
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", str(root / "client"), "-N", ""], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", str(root / "hostkey"), "-N", ""], check=True)
        (root / "authorized_keys").write_text((root / "client.pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        # The Compose CLI plugin where a box's docker-compose-plugin package puts it (docker_compose_v2
        # runs `docker compose`); removed again at the end if this test put it there.
        self.plugin: Path | None = None
        plugin = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
        if not plugin.exists():
            plugin.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(compose_binary(), plugin)
            self.plugin = plugin
        self.hosts: dict[str, Any] = {}
        for i, box in enumerate(BOXES):
            self.start_sshd(box)
            box_root = root / box
            (box_root / "operator").mkdir(parents=True)
            self.hosts[box] = {
                "ansible_host": "127.0.0.1",
                "ansible_port": self.ports[box],
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(root / "client"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={root / 'known_hosts'} -o StrictHostKeyChecking=yes",
                "slm_root": str(box_root),
                "slm_docker_host": env["DOCKER_HOST"],
                "slm_gate_host": "localhost",
                "slm_gateway_port": 8443,
                "slm_gate_connect_to": subnet(i)[1],
            }
        (root / "known_hosts").write_text(
            "".join(f"[127.0.0.1]:{port} {(root / 'hostkey.pub').read_text()}" for port in self.ports.values())
        )
        (root / "hosts.yaml").write_text(yaml.safe_dump(self.hosts))

    def start_sshd(self, box: str) -> None:
        from tests.registry import free_port

        port = self.ports.get(box) or free_port()
        self.ports[box] = port
        config = self.root / f"sshd-{box}.conf"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'hostkey'}\nPidFile none\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)
        with open(self.root / f"sshd-{box}.log", "ab") as log:
            proc = subprocess.Popen([need_binary("sshd"), "-D", "-e", "-f", str(config)], stderr=log)
        self.sshd.append(proc)
        self.procs = getattr(self, "procs", {})
        self.procs[box] = proc

    def stop_sshd(self, box: str) -> None:
        stop(self.procs.pop(box))

    def seed_override(self, release: str) -> None:
        """Each box's compose.override.yaml, from a bundle of this fleet: internal networks with
        fixed subnets, the gateway at a known address, CPUs capped to this machine."""
        out = self.root / "probe"
        done = run_cli("bundle", str(self.fleet), "--out", str(out), "--allow-unlocked", "--force")
        assert done.returncode == 0, done.stderr
        for i, box in enumerate(BOXES):
            compose = yaml.safe_load((out / box / "compose.yaml").read_text())
            text = override(compose)
            doc = yaml.safe_load(text.replace("!reset null", "RESET"))
            net, address = subnet(i)
            doc["networks"]["edge"] = {"internal": True, "ipam": {"config": [{"subnet": net}]}}
            doc["services"].setdefault("gateway", {})["networks"] = {"edge": {"ipv4_address": address}, "internal": {}}
            # What real Ollama reads from qwen3-0.6b's GGUF for its memory summary, which the plan gate
            # compares: 2 (K, V) x 28 layers x 8 KV heads x 128 head dim x 2 bytes (REFERENCE, Qwen3-0.6B).
            doc["services"].setdefault("ollama", {})["environment"] = {"STANDIN_OLLAMA_KV_BYTES_PER_TOKEN": "114688"}
            dumped = yaml.safe_dump(doc, sort_keys=True).replace("RESET", "!reset null")
            (self.root / box / "operator" / "compose.override.yaml").write_text(dumped)

    def publish(self, release: str, broken_gateway: bool = False) -> Path:
        layout = self.root / "releases" / release
        sequence = int(release.lstrip("r"))  # r1, r2, ...: the signed order a box checks
        if not broken_gateway:
            done = run_cli(
                "publish",
                str(self.fleet),
                "--release",
                release,
                "--sequence",
                str(sequence),
                "--key",
                str(self.key),
                "--layout",
                str(layout),
                "--allow-unlocked",
            )
            assert done.returncode == 0, done.stderr
            return layout
        # A release with a generator bug: the gateway's config does not parse. Signed like any other.
        code = f"""
import hashlib, json
from pathlib import Path
from slm_deploy.bundle.writer import build_fleet
from slm_deploy.fleet import load_fleet
from slm_deploy.rollout.publish import build_release, write_layout
fleet = load_fleet(Path({str(self.fleet)!r}))
for bundle in build_fleet(fleet, fleet.boxes, allow_unlocked=True):
    broken = b"{{\\n  this is not caddyfile syntax\\n"
    bundle.files["gateway/Caddyfile"] = broken
    manifest = json.loads(bundle.files["MANIFEST.json"])
    manifest["files"]["gateway/Caddyfile"]["sha256"] = hashlib.sha256(broken).hexdigest()
    bundle.files["MANIFEST.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    write_layout(Path({str(layout)!r}), build_release(bundle, fleet.name, {release!r}, Path({str(self.key)!r}), {sequence}))
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return layout

    def rollout(self, release: str) -> tuple[int, list[dict[str, Any]]]:
        out = self.root / "rollout" / release
        if out.exists():
            shutil.rmtree(out / "reports")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ANSIBLE_HOST_KEY_CHECKING": "True"}
        done = subprocess.run(
            [sys.executable, "-m", "slm_deploy.cli", "rollout", str(self.fleet), "--release", release,
             "--artifacts", str(self.root / "releases" / release), "--allowed-signers", str(self.signers),
             "--out", str(out), "--hosts", str(self.root / "hosts.yaml"), "--apply"],
            capture_output=True, text=True, env=env, check=False, timeout=1800,
        )  # fmt: skip
        (self.root / f"rollout-{release}.log").write_text(done.stdout + done.stderr)
        status = run_cli("fleet", "status", str(out / "reports"), "--json")
        return done.returncode, json.loads(status.stdout)

    def current(self, box: str) -> str | None:
        link = self.root / box / "current"
        return os.readlink(link).split("/")[1] if link.is_symlink() else None

    def containers(self, box: str) -> dict[str, str]:
        out = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={box}", "--format", "{{.Names}} {{.ID}} {{.State}}"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return {line.split()[0]: line for line in out.splitlines()}

    def down(self) -> None:
        for box in BOXES:
            current = self.root / box / "current"
            if current.exists():
                subprocess.run(
                    [compose_binary(), "down", "-v", "--remove-orphans"],
                    cwd=current,
                    env=self.env,
                    capture_output=True,
                    check=False,
                )
        for proc in list(getattr(self, "procs", {}).values()):
            stop(proc)
        if self.plugin is not None:
            self.plugin.unlink()


@pytest.fixture
def lab(engine: dict[str, str], tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    need_binary("ssh-keygen")
    need(
        shutil.which("sshd") is not None or Path("/usr/sbin/sshd").is_file(),
        "sshd is not installed (apt-get install openssh-server)",
    )
    need((Path(sys.executable).parent / "ansible-playbook").is_file(), "ansible is not installed (pip install ansible)")
    lab = Lab(tmp_path, engine)
    try:
        yield lab
    finally:
        lab.down()


def by_box(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["box"]: row for row in rows}


def test_good_release_in_waves_bad_release_stops_at_canary_offline_box_catches_up(lab: Lab) -> None:
    lab.seed_override("r1")
    lab.publish("r1")
    code, rows = lab.rollout("r1")
    log = (lab.root / "rollout-r1.log").read_text()
    assert code == 0, log[-4000:]
    assert {r["box"]: (r["release"], r["gate"]) for r in rows} == {b: ("r1", "passed") for b in BOXES}, log[-4000:]
    assert all(lab.current(b) == "r1" for b in BOXES)
    before = {b: lab.containers(b) for b in BOXES[1:]}

    # A bad release: the canary fails its `up --wait` (the gateway never gets healthy), rolls back,
    # comes up again on r1; the rollout stops there, box-b and box-c are not touched.
    lab.publish("r2", broken_gateway=True)
    code, rows = lab.rollout("r2")
    log = (lab.root / "rollout-r2.log").read_text()
    assert code != 0, log[-4000:]
    rows_by = by_box(rows)
    assert rows_by["box-a"]["installed"] and rows_by["box-a"]["rolled_back"] and rows_by["box-a"]["gate"] == "failed", rows
    assert rows_by["box-b"]["gate"] == rows_by["box-c"]["gate"] == "not reached", rows
    assert lab.current("box-a") == "r1" and lab.current("box-b") == "r1" and lab.current("box-c") == "r1"
    assert {b: lab.containers(b) for b in BOXES[1:]} == before
    running = lab.containers("box-a")
    assert any("gateway" in name and "running" in line for name, line in running.items()), running

    # A good release while box-c is offline: its wave fails (unreachable), the others pass; once
    # box-c is back, running the rollout again brings it up to date and leaves the others as they are.
    lab.stop_sshd("box-c")
    lab.publish("r3")
    code, rows = lab.rollout("r3")
    assert code != 0
    rows_by = by_box(rows)
    assert rows_by["box-a"]["gate"] == "passed" and rows_by["box-b"]["gate"] == "passed", rows
    assert lab.current("box-c") == "r1"
    lab.start_sshd("box-c")
    code, rows = lab.rollout("r3")
    log = (lab.root / "rollout-r3.log").read_text()
    assert code == 0, log[-4000:]
    assert all(lab.current(b) == "r3" for b in BOXES)
