"""How each runtime is run, for both targets: its server command and environment, the one-shot
model fetch, and (edge, offline) the Dockerfile that bakes the model in. Sizes come from the
Plan; nothing is recomputed here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_deploy.catalog import Catalog
from slm_deploy.launcher.foundry import QUIET_ENVIRONMENT
from slm_deploy.onnx_builds import load_onnx_builds, load_onnx_server
from slm_deploy.planner import Plan
from slm_deploy.spec import Runtime
from slm_deploy.templating import render

APP_UID = 10001
# The Kubernetes model-fetch Job's CPU request: it runs beside its server on the server's pool
# (the server is created at once and waits for the model), so the server's request leaves it room.
FETCH_JOB_CPU_MILLIS = 500
MODEL_DIR = "/models"
OFFLINE_MODEL_DIR = "/opt/model"
SERVER_PORT = {Runtime.VLLM: 8000, Runtime.OLLAMA: 11434, Runtime.LLAMACPP: 8080, Runtime.ONNX: load_onnx_server().port}
METRICS_PATH = {Runtime.VLLM: "/metrics", Runtime.LLAMACPP: "/metrics"}  # Ollama exports none (ollama #3144)
HEALTH_PATH = {Runtime.VLLM: "/health", Runtime.OLLAMA: "/api/version", Runtime.LLAMACPP: "/health", Runtime.ONNX: "/status"}
HF_URL = "https://huggingface.co"
# vLLM's compile caches (torch inductor, Triton): kernels written there are loaded as shared
# objects, so the directory must allow exec; the edge bundle mounts an exec tmpfs here.
COMPILE_CACHE_DIR = "/tmp/compile"
APP_USER = "slm"  # a name for the unnamed uid: torch's getpass.getuser() raises without one


@dataclass(frozen=True)
class RuntimeSpec:
    """The server side of one box: one service, serving every model planned for it."""

    runtime: Runtime
    image: str
    command: list[str]
    entrypoint: list[str] | None
    environment: dict[str, str]
    healthcheck: list[str]
    uses_hf_token: bool
    fetch: dict[str, Any] | None  # the one-shot fetch service, or None when the image holds the model
    dockerfile: str | None  # offline: the Dockerfile that bakes the model in
    files: dict[str, str]  # extra files the runtime needs (Modelfiles), path -> text
    built: bool = False  # the server image is built from `dockerfile` on every box, not pulled (onnx)

    @property
    def service(self) -> str:
        """The compose service (and Kubernetes container) that runs the server: named after its runtime."""
        return self.runtime.value

    @property
    def port(self) -> int:
        return SERVER_PORT[self.runtime]


def runtime_image_id(plan: Plan) -> str:
    """The catalog image a plan's server runs (llama.cpp has a CUDA build for GPUs)."""
    if plan.runtime == Runtime.LLAMACPP.value:
        return "llamacpp-cuda" if plan.resources.gpu_count else "llamacpp"
    if plan.runtime == Runtime.ONNX.value:
        return load_onnx_server().base_image  # the server is built on it
    return plan.runtime


def _python_probe(port: int, path: str) -> list[str]:
    code = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)"
    return ["CMD", "python3", "-c", code]


def _hf_repo(plan: Plan) -> str:
    return plan.weights_source.removeprefix("hf://")


def _gguf_url(plan: Plan) -> tuple[str, str]:
    repo, _, filename = plan.weights_source.removeprefix("hf://").rpartition("/")
    # A model resolved from the Hub is fetched at the revision it was planned on.
    return f"{HF_URL}/{repo}/resolve/{plan.model_revision or 'main'}/{filename}", filename


def _ollama_tag(plan: Plan) -> str:
    return plan.weights_source.removeprefix("ollama://")


CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja")


# Why Hugging Face refused (401/403), in two pieces: the end of the error's first line and its second line.
TOKEN_REFUSED = ("the token in ", "/run/secrets/hf_token has no access; accept the licence and store a token that has it")
# hf_xet keeps a chunk cache of up to 10 GB under $HF_HOME/xet (xet-runtime chunk_cache.rs
# DEFAULT_CHUNK_CACHE_CAPACITY; huggingface_hub HF_XET_CACHE): on the models volume, uncounted by the
# plan's disk figure. A one-time download needs none (edge review E13).
HF_FETCH_CACHE = {"HF_XET_CHUNK_CACHE_SIZE_BYTES": "0"}
# The onnx fetch runs without a token (the repos are public): a refusal means the repo or revision is wrong or gone.
PUBLIC_REFUSED = (
    "the fetch sends no token ",
    "(the repo is public): check the repo and revision in slm-deploy's catalog (onnx_models.yaml)",
)


def _hf_fetch_code(
    repo: str,
    revision: str | None = None,
    patterns: tuple[str, ...] = CHECKPOINT_PATTERNS,
    local_dir: str | None = None,
    refused: tuple[str, str] = TOKEN_REFUSED,
) -> str:
    """The one-shot download; a refused download ends with one clear line (`refused`: why) instead of a traceback."""
    pin = f", revision={revision!r}" if revision else ""
    into = f", local_dir={local_dir!r}" if local_dir else ""
    return (
        "import sys\n"
        "from huggingface_hub import snapshot_download\n"
        "try:\n"
        f"    snapshot_download({repo!r}{pin}{into}, allow_patterns={list(patterns)!r})\n"
        "except Exception as exc:\n"
        "    text = str(exc)\n"
        "    if any(code in text for code in ('401', '403')):\n"
        f"        sys.exit('error: Hugging Face refused the download of {repo} (401/403): {refused[0]}'\n"
        f"                 {refused[1]!r})\n"
        "    raise\n"
    )


def vllm_runtime(plans: tuple[Plan, ...], catalog: Catalog, offline: bool, box_id: str) -> RuntimeSpec:
    (plan,) = plans  # one vLLM server per box; the fleet loader refuses more
    image = catalog.images["vllm"].ref
    port = SERVER_PORT[Runtime.VLLM]
    repo = _hf_repo(plan)
    model_ref = OFFLINE_MODEL_DIR if offline else repo
    args = [model_ref, *plan.runtime_args[1:], "--host", "0.0.0.0", "--port", str(port)]
    env = {
        "HOME": "/tmp",
        "HF_HOME": f"{MODEL_DIR}/hf",
        "HF_HUB_OFFLINE": "1",  # the fetch service downloaded everything; the server never goes online
        "VLLM_CACHE_ROOT": "/tmp/vllm",
        "USER": APP_USER,
        "LOGNAME": APP_USER,
        "TORCHINDUCTOR_CACHE_DIR": f"{COMPILE_CACHE_DIR}/inductor",
        "TRITON_CACHE_DIR": f"{COMPILE_CACHE_DIR}/triton",
        # FlashInfer JIT-builds its sampling kernels under $FLASHINFER_WORKSPACE_BASE/.cache (default
        # HOME=/tmp, noexec): the exec-capable compile cache instead (edge review E12; unconfirmed on a GPU).
        "FLASHINFER_WORKSPACE_BASE": f"{COMPILE_CACHE_DIR}/flashinfer",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    fetch = None
    dockerfile = None
    if offline:
        env.pop("HF_HOME")
        dockerfile = render(
            "Dockerfile.vllm",
            base=image,
            repo=repo,
            revision=plan.model_revision,
            model_dir=OFFLINE_MODEL_DIR,
            uid=APP_UID,
            port=port,
            start_period=plan.resources.startup_budget_seconds,
            box_id=box_id,
        )
    else:
        code = _hf_fetch_code(repo, plan.model_revision)  # vLLM serves that revision
        fetch = {
            "image": image,
            "entrypoint": ["python3", "-c", code],
            "environment": {
                "HOME": "/tmp",
                "HF_HOME": f"{MODEL_DIR}/hf",
                "HF_TOKEN_PATH": "/run/secrets/hf_token",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                **HF_FETCH_CACHE,
            },
        }
    return RuntimeSpec(
        runtime=Runtime.VLLM,
        image=image,
        command=args,
        entrypoint=["vllm", "serve"],
        environment=env,
        healthcheck=_python_probe(port, "/health"),
        uses_hf_token=not offline,
        fetch=fetch,
        dockerfile=dockerfile,
        files={},
    )


def _modelfile(plan: Plan) -> str:
    return render("Modelfile", tag=_ollama_tag(plan), context=plan.context, model=plan.model)


def ollama_runtime(plans: tuple[Plan, ...], catalog: Catalog, offline: bool, box_id: str) -> RuntimeSpec:
    image = catalog.images["ollama"].ref
    port = SERVER_PORT[Runtime.OLLAMA]
    models_dir = f"{OFFLINE_MODEL_DIR}/ollama" if offline else MODEL_DIR
    env = dict(plans[0].runtime_env)
    # One server holds every model: slots and loaded models are server-wide settings.
    env["OLLAMA_NUM_PARALLEL"] = str(max(p.concurrency for p in plans))
    env["OLLAMA_CONTEXT_LENGTH"] = str(max(p.context for p in plans))
    env |= {"OLLAMA_HOST": f"0.0.0.0:{port}", "OLLAMA_MODELS": models_dir, "HOME": "/tmp", "OLLAMA_NOPRUNE": "1"}
    gpu = catalog.gpus.get(plans[0].device)
    if gpu is not None and gpu.jetpack:
        env["JETSON_JETPACK"] = gpu.jetpack  # Ollama picks its Jetson libraries by this in Docker
    files = {f"ollama/Modelfile.{p.model}": _modelfile(p) for p in plans}
    pulls = [(_ollama_tag(p), p.model, f"/config/Modelfile.{p.model}") for p in plans]
    fetch = None
    dockerfile = None
    if offline:
        dockerfile = render(
            "Dockerfile.ollama",
            base=image,
            pulls=pulls,
            models_dir=models_dir,
            uid=APP_UID,
            port=port,
            box_id=box_id,
            start_period=plans[0].resources.startup_budget_seconds,
        )
    else:
        script = render("ollama-fetch.sh", pulls=pulls).strip()
        fetch = {
            "image": image,
            "entrypoint": ["/bin/sh", "-c", script],
            "environment": {"HOME": "/tmp", "OLLAMA_MODELS": MODEL_DIR, "OLLAMA_HOST": "127.0.0.1:11434"},
            "config_files": {path: f"/config/{path.rsplit('/', 1)[1]}" for path in files},
        }
    return RuntimeSpec(
        runtime=Runtime.OLLAMA,
        image=image,
        command=["serve"],
        entrypoint=["/bin/ollama"],
        environment=env,
        healthcheck=["CMD", "/bin/ollama", "list"],
        uses_hf_token=False,
        fetch=fetch,
        dockerfile=dockerfile,
        files=files,
    )


def llamacpp_runtime(plans: tuple[Plan, ...], catalog: Catalog, offline: bool, box_id: str) -> RuntimeSpec:
    (plan,) = plans  # one llama.cpp server per model; the fleet loader refuses more per box
    image = catalog.images[runtime_image_id(plan)].ref
    port = SERVER_PORT[Runtime.LLAMACPP]
    url, filename = _gguf_url(plan)
    model_path = f"{OFFLINE_MODEL_DIR}/{filename}" if offline else f"{MODEL_DIR}/{filename}"
    args = [
        "-m",
        model_path,
        "--alias",
        plan.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--metrics",
        # llama.cpp's own INFO lines (its KV-cache and model-buffer sizes, which the rollout's plan
        # gate reads) show from verbosity 4 at b11434: common/log.cpp:534, default 3 in common/common.h:539.
        # It costs ~2.5x the log per request (TRACE lines, tools/server/server-http.cpp:67 and
        # server-context.cpp:1937-1938); /props has no byte sizes. Trade-off: docs/rollout.md.
        "--log-verbosity",
        "4",
        *plan.runtime_args,
    ]
    fetch = None
    dockerfile = None
    if offline:
        dockerfile = render(
            "Dockerfile.llamacpp",
            fetch_image=catalog.images["model-fetch"].ref,
            base=image,
            url=url,
            filename=filename,
            model_dir=OFFLINE_MODEL_DIR,
            uid=APP_UID,
            port=port,
            box_id=box_id,
            start_period=plan.resources.startup_budget_seconds,
        )
    else:
        fetch = {
            "image": catalog.images["model-fetch"].ref,
            "entrypoint": [
                "curl",
                "--fail",
                "--location",
                "--silent",
                "--show-error",
                "--retry",
                "5",
                "--continue-at",
                "-",
                "--output",
                model_path,
                url,
            ],
            "environment": {"HOME": "/tmp"},
        }
    return RuntimeSpec(
        runtime=Runtime.LLAMACPP,
        image=image,
        command=args,
        entrypoint=["/app/llama-server"],
        environment={"HOME": "/tmp"},
        healthcheck=["CMD", "curl", "--fail", "--silent", f"http://127.0.0.1:{port}/health"],
        uses_hf_token=False,
        fetch=fetch,
        dockerfile=dockerfile,
        files={},
    )


ONNX_LAUNCHER = "/opt/slm/foundry_launcher.py"
ONNX_SCRATCH = "/tmp/foundry"
# Download argv[1] to argv[3] only if its sha256 is argv[2] (the Dockerfile's .deb pins). One line,
# no single quote, no `$`: it sits in single quotes in a shell-form RUN.
DEB_FETCH = (
    "import hashlib, sys, urllib.request; url, sha256, out = sys.argv[1:4]; "
    "data = urllib.request.urlopen(url, timeout=300).read(); got = hashlib.sha256(data).hexdigest(); "
    'sys.exit(f"error: {url}: sha256 {got}, expected {sha256}") if got != sha256 else open(out, "wb").write(data)'
)


def _launcher_source() -> str:
    from slm_deploy.launcher import foundry

    return Path(foundry.__file__).read_text(encoding="utf-8")


def _arg(args: tuple[str, ...], flag: str) -> str:
    return args[args.index(flag) + 1]


def onnx_runtime(plans: tuple[Plan, ...], catalog: Catalog, offline: bool, box_id: str) -> RuntimeSpec:
    """Foundry Local with the launcher, built on the catalog's python image from the bundle's
    Dockerfile (pinned, hash-checked wheels), serving the variant folder of the model's ONNX repo."""
    (plan,) = plans  # one Foundry Local server per box; the fleet loader refuses more
    server = load_onnx_server()
    port = server.port
    repo = _hf_repo(plan)
    variant = _arg(plan.runtime_args, "--variant")
    model_dir = f"{OFFLINE_MODEL_DIR if offline else MODEL_DIR}/{repo}"
    revision = load_onnx_builds()[plan.model].revision or plan.model_revision
    fetch_code = _hf_fetch_code(repo, revision, (f"{variant}/*",), model_dir, refused=PUBLIC_REFUSED)
    healthcheck = ["CMD", "python3", ONNX_LAUNCHER, "--scratch", ONNX_SCRATCH, "--check", f"http://127.0.0.1:{port}"]
    files = {"onnx/requirements.txt": server.requirements_text(), "onnx/foundry_launcher.py": _launcher_source()}
    dockerfile = render(
        "Dockerfile.onnx",
        base=catalog.images[server.base_image].ref,
        sdk=server.sdk,
        debian_packages=server.debian_packages,
        deb_fetch=DEB_FETCH,
        launcher=ONNX_LAUNCHER,
        fetch_run=json.dumps(["python3", "-c", fetch_code]) if offline else None,
        model_dir=model_dir,
        uid=APP_UID,
        port=port,
        healthcheck=json.dumps(healthcheck[1:]),
        entrypoint=json.dumps(["python3", ONNX_LAUNCHER]),
        start_period=plan.resources.startup_budget_seconds,
        box_id=box_id,
    )
    content = hashlib.sha256("\0".join([dockerfile, *(files[k] for k in sorted(files))]).encode()).hexdigest()
    image = f"slm-deploy/onnx-server:{content[:12]}"  # built on the box; the tag follows what goes into it
    fetch = None
    if not offline:
        fetch = {
            "image": image,
            "pull_policy": "never",  # the image the server service builds
            "entrypoint": ["python3", "-c", fetch_code],
            # HF_HOME on the models volume, as the vLLM fetch: the Hub client caches there (the Xet
            # downloader's chunk cache under $HF_HOME/xet), too much for the fetch's tmpfs /tmp.
            "environment": {"HOME": "/tmp", "HF_HOME": f"{MODEL_DIR}/hf", "HF_HUB_DISABLE_TELEMETRY": "1", **HF_FETCH_CACHE},
        }
    return RuntimeSpec(
        runtime=Runtime.ONNX,
        image=image,
        command=["--model-dir", model_dir, *plan.runtime_args, "--listen", f"http://0.0.0.0:{port}", "--scratch", ONNX_SCRATCH],
        entrypoint=["python3", ONNX_LAUNCHER],
        # CI=true: undocumented, observed in foundry-local-sdk 2.2.1's log ("CI environment detected;
        # 1DS upload disabled"); without it the native library keeps looking up its telemetry host
        # even with non-essential telemetry off (the launcher sets it as well: QUIET_ENVIRONMENT).
        environment={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", **QUIET_ENVIRONMENT},
        healthcheck=healthcheck,
        uses_hf_token=False,  # Microsoft's ONNX repos are public (MIT); the fetch goes without a token
        fetch=fetch,
        dockerfile=dockerfile,
        files=files,
        built=True,
    )


BUILDERS = {
    Runtime.VLLM: vllm_runtime,
    Runtime.OLLAMA: ollama_runtime,
    Runtime.LLAMACPP: llamacpp_runtime,
    Runtime.ONNX: onnx_runtime,
}


def runtime_spec(plans: tuple[Plan, ...], catalog: Catalog, offline: bool, box_id: str) -> RuntimeSpec:
    return BUILDERS[Runtime(plans[0].runtime)](plans, catalog, offline, box_id)
