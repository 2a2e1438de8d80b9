"""Stand-in images for the live compose test, built under the exact references the bundles use.

A minimal Debian base is made once with debootstrap (cached as a tarball under
~/.cache/slm-standins, keyed by the package list, so CI on the same machine reuses it) and
imported into the engine. Each stand-in is then built from that base and from the image's profile
in the catalog (slm_deploy/catalog/images.yaml): its user, entrypoint, working directory, file
capabilities, the programs present for healthchecks (the others are removed) and what it writes at
start. Debian's own binaries serve where Debian has the real program (caddy, prometheus,
prometheus-node-exporter, prometheus-alertmanager); tests/standins/fakes/standin.py stands in for
the rest; the python stand-in gets pip from the Debian wheel on this machine. Builds run with
`--network none`: nothing is downloaded after debootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from slm_deploy.catalog import OLLAMA_QUANT_TAG, Catalog, ImageProfile

HERE = Path(__file__).parent
SUITE = "bookworm"
PACKAGES = (
    "python3",
    "curl",
    "wget",
    "libcap2-bin",
    "caddy",
    "prometheus",
    "prometheus-node-exporter",
    "prometheus-alertmanager",
    # vLLM's CPU build compiles its torch.compile (inductor) kernels with the system C++ compiler at
    # start, as the GPU image compiles Triton kernels: docker/Dockerfile.cpu installs gcc/g++.
    "g++",
    # and its vllm._C links libnuma (Dockerfile.cpu: libnuma-dev); inductor runs `openssl` and its generated
    # C++ includes Python.h (seen here: FileNotFoundError openssl, CppCompileError Python.h).
    "libnuma1",
    "openssl",
    "python3.11-dev",
)
# Programs of the base that an image keeps only when its profile lists them.
OPTIONAL = {
    "curl": "/usr/bin/curl",
    "wget": "/usr/bin/wget",
    "python3": "/usr/bin/python3",
    "bash": "/usr/bin/bash",
    "tar": "/usr/bin/tar",
}
PY = "/opt/standin/python3"
FAKE = "/opt/standin/standin.py"
CACHE = Path(os.environ.get("SLM_STANDIN_CACHE", Path.home() / ".cache" / "slm-standins"))


def _mirror() -> str:
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    return line.split()[1]
                if line.startswith("deb ") and "security" not in line:
                    return line.split()[1]
    return "http://deb.debian.org/debian"


def base_key() -> str:
    spec = json.dumps({"suite": SUITE, "packages": sorted(PACKAGES), "variant": "minbase"}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def docker(*args: str, env: dict[str, str], input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], env=env, input=input, capture_output=True, check=check)


def _has_image(ref: str, env: dict[str, str]) -> bool:
    return docker("image", "inspect", ref, env=env, check=False).returncode == 0


def base_image(env: dict[str, str]) -> str:
    """The Debian base in the engine, from the cached tarball or a fresh debootstrap."""
    key = base_key()
    ref = f"slm-standin/base:{key}"
    if _has_image(ref, env):
        return ref
    tarball = CACHE / f"base-{key}.tar"
    if not tarball.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="slm-debootstrap-") as root:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, root, _mirror()],
                check=True,
                capture_output=True,
            )
            shutil.rmtree(Path(root, "var/cache/apt/archives"), ignore_errors=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.replace(tarball)
    with tarball.open("rb") as handle:
        subprocess.run(["docker", "import", "-", ref], env=env, stdin=handle, check=True, capture_output=True)
    return ref


def debian_pip_wheel() -> Path:
    """pip's wheel as Debian ships it (python3-pip-whl, installed with python3.11-venv)."""
    wheels = sorted(Path("/usr/share/python-wheels").glob("pip-*-py3-none-any.whl"))
    if not wheels:
        raise RuntimeError("no pip wheel in /usr/share/python-wheels: apt-get install python3-pip-whl")
    return wheels[-1]


def _setup(image_id: str, profile: ImageProfile, real: bool = False) -> list[str]:
    """Shell lines that make the base look like the image (run as root at build time). `real`: the
    real program is installed (tests/standins/real.py), so no fake wraps it."""
    uid, gid = profile.user.split(":")
    lines = [f"mkdir -p /opt/standin {profile.home}", f"cp /usr/bin/python3.11 {PY}"]
    if gid not in ("0", "65534"):
        lines.append(f"getent group {gid} >/dev/null || groupadd -g {gid} standin")
    if uid != "0":
        lines.append(f"getent passwd {uid} >/dev/null || useradd -u {uid} -g {gid} -M -d {profile.home} standin")
    wrappers = {
        "vllm": {"/usr/local/bin/vllm": "vllm"},
        "ollama": {"/bin/ollama": "ollama"},
        "llamacpp": {"/app/llama-server": "llama-server"},
        "llamacpp-cuda": {"/app/llama-server": "llama-server"},
        "grafana": {"/usr/share/grafana/bin/grafana": "grafana"},
        "dcgm-exporter": {"/usr/bin/dcgm-exporter": "dcgm-exporter"},
        "loki": {"/usr/bin/loki": "loki"},
        "alloy": {"/bin/alloy": "alloy"},
    }.get(image_id, {})
    if real:
        wrappers = {}
    for path, program in wrappers.items():
        lines.append(
            f"mkdir -p {os.path.dirname(path)} && printf '#!/bin/sh\\nexec {PY} {FAKE} {program} \"$@\"\\n' > {path} && chmod 755 {path}"
        )
    if image_id == "vllm" and not real:
        # huggingface_hub's snapshot_download, writing what the real one writes, offline.
        lines.append(
            "mkdir -p /usr/lib/python3/dist-packages/huggingface_hub && printf "
            '\'import sys\\nsys.path.insert(0, "/opt/standin")\\nfrom standin import hf_snapshot\\n'
            "def snapshot_download(repo_id, **kw):\\n    return hf_snapshot(repo_id)\\n' "
            "> /usr/lib/python3/dist-packages/huggingface_hub/__init__.py"
        )
    if image_id == "python":
        wheel = f"/opt/standin/{debian_pip_wheel().name}"
        # python:*-slim: CPython with pip in /usr/local/bin, no EXTERNALLY-MANAGED marker. Here: Debian's
        # python3.11 and the pip wheel Debian ships (python3-pip-whl), installed from the build context.
        lines.append(
            "rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3.11 /usr/local/bin/python3"
            f" && /usr/bin/python3.11 {wheel}/pip install --quiet --no-index --no-cache-dir {wheel} && rm {wheel}"
        )
    if image_id == "prometheus":
        lines.append("mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus")
    if image_id == "alertmanager":
        lines.append(
            "ln -sf /usr/bin/prometheus-alertmanager /bin/alertmanager && mkdir -p /alertmanager /etc/alertmanager && chown 65534:65534 /alertmanager"
        )
    if image_id == "node-exporter":
        lines.append("ln -sf /usr/bin/prometheus-node-exporter /bin/node_exporter")
    if image_id == "loki":
        lines.append("mkdir -p /loki/rules /loki/rules-temp /etc/loki && chown -R 10001:10001 /loki /etc/loki")
    if image_id == "alloy":
        lines.append(
            "mkdir -p /var/lib/alloy/data /etc/alloy && chown 473:473 /var/lib/alloy/data && chmod 770 /var/lib/alloy/data"
        )
    if image_id == "gateway":
        lines.append("mkdir -p /config /data /etc/caddy /srv")
    if image_id == "grafana":
        lines.append(
            'printf \'#!/bin/bash\\nmkdir -p "$GF_PATHS_DATA/plugins"\\nexec grafana server "$@"\\n\' > /run.sh && chmod 755 /run.sh'
            " && mkdir -p /var/lib/grafana/plugins /etc/grafana/provisioning && chown -R 472:0 /var/lib/grafana"
        )
    if image_id == "open-webui" and not real:
        # start.sh keeps a generated secret key in the working directory when none is given.
        lines.append(
            "mkdir -p /app/backend/data && printf '#!/bin/bash\\nset -e\\ncd /app/backend\\n"
            'if [ -z "${WEBUI_SECRET_KEY:-}" ]; then\\n  if [ ! -e .webui_secret_key ]; then head -c 12 /dev/urandom | od -An -tx1 | tr -d " \\\\n" > .webui_secret_key; fi\\n'
            "  WEBUI_SECRET_KEY=$(cat .webui_secret_key)\\nfi\\nexport WEBUI_SECRET_KEY\\n"
            f"exec {PY} {FAKE} webui\\n' > /app/backend/start.sh && chmod 755 /app/backend/start.sh"
        )
    if image_id == "dcgm-exporter":
        lines.append(
            'mkdir -p /usr/local/dcgm && printf \'#!/bin/bash\\nset -euo pipefail\\nldconfig\\nset -- /usr/bin/dcgm-exporter "$@"\\nexec "$@"\\n\''
            " > /usr/local/dcgm/dcgm-exporter-entrypoint.sh && chmod 755 /usr/local/dcgm/dcgm-exporter-entrypoint.sh"
        )
    if image_id == "model-fetch":
        lines.append(
            'printf \'#!/bin/sh\\nset -e\\nif [ "${1#-}" != "$1" ]; then set -- curl "$@"; fi\\nexec "$@"\\n\' > /entrypoint.sh && chmod 755 /entrypoint.sh'
        )
    for path, caps in sorted(profile.file_capabilities.items()):
        lines.append(f"setcap {caps} {path}")
    for program, path in sorted(OPTIONAL.items()):
        if program not in profile.binaries:
            lines.append(f"rm -f {path}")
    return lines


def _registry_facts(image_id: str, catalog: Catalog) -> dict[str, str]:
    """What the fakes know of the outside world: the tags ollama.com publishes, the gated repos."""
    if image_id == "ollama":
        tags = sorted(m.ollama_tag(q) for m in catalog.models.values() for q in (m.ollama_quants or OLLAMA_QUANT_TAG))
        return {"STANDIN_OLLAMA_TAGS": ",".join(tags)}
    if image_id == "vllm":
        return {"STANDIN_GATED_REPOS": ",".join(sorted(m.hf_repo for m in catalog.models.values() if m.gated))}
    return {}


def dockerfile(
    image_id: str, profile: ImageProfile, base: str, facts: dict[str, str] | None = None, install: list[str] | None = None
) -> str:
    """`install`: the real program's install lines (tests/standins/real.py) instead of a fake."""
    out = [f"FROM {base}", *(install or [])]
    if install is None:
        out.append("COPY standin.py /opt/standin/standin.py")
    if image_id == "python":
        out.append(f"COPY {debian_pip_wheel().name} /opt/standin/")
    out += [f"RUN {line}" for line in _setup(image_id, profile, real=install is not None)]
    env = {"HOME": profile.home, **profile.environment, **(facts or {})}
    if image_id == "vllm" and install is None:
        env["PYTHONPATH"] = "/usr/lib/python3/dist-packages"
    if image_id == "grafana":
        env["PATH"] = "/usr/share/grafana/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    out.append("ENV " + " ".join(f"{k}={v}" for k, v in sorted(env.items())))
    if profile.workdir:
        out.append(f"WORKDIR {profile.workdir}")
    out.append(f"USER {profile.user}")
    out.append(f"ENTRYPOINT {json.dumps(list(profile.entrypoint))}" if profile.entrypoint else "ENTRYPOINT []")
    if profile.command:
        out.append(f"CMD {json.dumps(list(profile.command))}")
    return "\n".join(out) + "\n"


def _ensure(ref: str, text: str, env: dict[str, str], files: dict[str, Path | str]) -> None:
    """Build `text` as `ref` unless the engine holds it with the same label; `files`: the build
    context besides the Dockerfile (a Path is copied, a str is written)."""
    label = text.rsplit("=", 1)[1].strip()
    current = docker(
        "image", "inspect", "--format", '{{ index .Config.Labels "org.slm-deploy.standin" }}', ref, env=env, check=False
    )
    if current.returncode == 0 and current.stdout.decode().strip() == label:
        return
    with tempfile.TemporaryDirectory(prefix="slm-standin-") as ctx:
        for name, source in files.items():
            target = Path(ctx, name)
            if isinstance(source, str):
                target.write_text(source)
            elif source.is_dir():  # a wheelhouse of a few GB: linked, not copied, where the file system allows
                shutil.copytree(source, target, copy_function=_link_or_copy)
            else:
                shutil.copy(source, target)
        Path(ctx, "Dockerfile").write_text(text)
        result = docker("build", "--network", "none", "-q", "-t", ref, ctx, env={**env, "DOCKER_BUILDKIT": "0"}, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"building the image for {ref} failed:\n{result.stderr.decode()[-3000:]}")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _labelled(text: str, extra: str = "") -> str:
    """The Dockerfile with a label that changes with it and with what it copies in."""
    if "COPY standin.py" in text:
        extra += (HERE / "fakes" / "standin.py").read_text()
    label = hashlib.sha256((text + extra).encode()).hexdigest()[:16]
    return text + f"LABEL org.slm-deploy.standin={label}\n"


def _real_parts(image_id: str, catalog: Catalog) -> tuple[list[str], dict[str, Path | str]]:
    """The real package's install lines and build context (wheelhouse, pip, extra files)."""
    from tests.standins import real

    house = real.wheelhouse(image_id, catalog, CACHE)
    files: dict[str, Path | str] = {"wheels": house, "wheels/pip.whl": debian_pip_wheel(), **real.context_files(image_id, CACHE)}
    return real.install_lines(image_id, catalog), files


def build(catalog: Catalog, env: dict[str, str], image_ids: list[str] | None = None) -> dict[str, str]:
    """Build (or reuse) every stand-in; returns image id -> reference. The gateway is the real Caddy
    at the pinned version (tests/standins/real.py); the others are the profiles' stand-ins."""
    base = base_image(env)
    built = {}
    for image_id, profile in sorted(catalog.profiles.items()):
        if image_ids is not None and image_id not in image_ids:
            continue
        ref = catalog.images[image_id].ref
        files: dict[str, Path | str] = {"standin.py": HERE / "fakes" / "standin.py"}
        install = None
        if image_id == "gateway":
            install, real_files = _real_parts(image_id, catalog)
            files |= real_files
        if image_id == "python":
            files[debian_pip_wheel().name] = debian_pip_wheel()
        text = _labelled(dockerfile(image_id, profile, base, _registry_facts(image_id, catalog), install))
        _ensure(ref, text, env, files)
        built[image_id] = ref
    return built


def build_real(catalog: Catalog, env: dict[str, str], image_id: str) -> str:
    """The real program's image (vllm, llamacpp, open-webui, gateway) under slm-real/<id>:<tag>,
    beside the stand-in that keeps the catalog's reference."""
    profile = catalog.profiles[image_id]
    ref = f"slm-real/{image_id}:{catalog.images[image_id].tag}"
    install, files = _real_parts(image_id, catalog)
    text = _labelled(dockerfile(image_id, profile, base_image(env), None, install), json.dumps(sorted(map(str, files.values()))))
    _ensure(ref, text, env, files)
    return ref
