"""Runtime `onnx` (ONNX Runtime GenAI builds served by Foundry Local): the plan, the edge bundle
(a Foundry Local image built on the box from hash-pinned wheels), the boxes it refuses, the
launcher's pieces that need no Foundry Local, and the Kubernetes target's refusal of GPU pools."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slm_deploy.environment import plan_environment
from slm_deploy.errors import InputError
from slm_deploy.launcher.foundry import EXIT_BAD_MODEL
from slm_deploy.launcher.foundry import main as launcher_main
from slm_deploy.planner import plan
from slm_deploy.spec import GpuAttachment, Hardware, Serving
from tests.conftest import ROOT, run_cli

CPU_BOX = Hardware(cpus=8, memory_gib=16)
T4_BOX = Hardware(cpus=8, memory_gib=56, gpu=GpuAttachment(model="t4"))


def test_cpu_box_gets_the_cpu_variant_with_an_fp32_kv_cache_for_the_whole_context() -> None:
    p = plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=4096, concurrency=2), CPU_BOX)
    assert p.fits and p.quantization == "int4"
    assert p.weights_source == "hf://microsoft/Phi-4-mini-instruct-onnx"
    # 2 (K, V) x 32 layers x 8 KV heads x 128 head size x 4 bytes (fp32 io on CPU int4 builds)
    assert p.kv_bytes_per_token == 2 * 32 * 8 * 128 * 4
    assert p.kv_cache_gib == 2.0  # 2 sequences x 4096 tokens, allocated up front
    assert p.weights_gib == 4.3
    assert p.runtime_args == (
        "--variant",
        "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
        "--device",
        "cpu",
        "--model-id",
        "Phi-4-mini-instruct-generic-cpu:1",
        "--max-length",
        "4096",
    )
    assert any("variant cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4 (CPU)" in n for n in p.notes)
    assert any("not read from the repo's file list" in n for n in p.notes)


def test_nvidia_gpu_gets_the_cuda_variant_with_an_fp16_kv_cache() -> None:
    p = plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=8192, concurrency=4), T4_BOX)
    assert p.fits and p.resources.gpu_count == 1
    assert p.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert p.weights_gib < 4.3  # fp16 embeddings instead of fp32
    assert "gpu/gpu-int4-rtn-block-32" in p.runtime_args
    assert "Phi-4-mini-instruct-cuda-gpu:1" in p.runtime_args


def test_too_long_a_context_is_refused_with_a_context_that_fits() -> None:
    box = Hardware(cpus=8, memory_gib=32)
    p = plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=16384, concurrency=4), box)
    assert not p.fits
    assert p.reason is not None and "KV cache" in p.reason
    (context,) = [s.change for s in p.suggestions if s.change.startswith("context=")]
    fitted = int(context.split("=")[1])
    assert fitted >= 2560  # never one that Foundry Local's default output budget does not fit in
    assert plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=fitted, concurrency=4), box).fits


def test_jetson_is_refused_for_onnx() -> None:
    box = Hardware(cpu_arch="arm64", cpus=12, memory_gib=64, gpu=GpuAttachment(model="jetson-orin-64gb"))
    p = plan(Serving(model="phi-4-mini-instruct", runtime="onnx"), box)
    assert not p.fits and p.reason is not None and "amd64 hosts only" in p.reason


def test_a_model_without_an_onnx_build_is_a_one_line_error() -> None:
    result = run_cli("plan", "--model", "qwen3-4b", "--runtime", "onnx", "--cpu")
    assert result.returncode == 2
    assert result.stderr == (
        "error: arguments: model: qwen3-4b has no ONNX Runtime GenAI build in the catalog; "
        "onnx builds: phi-3.5-mini-instruct, phi-4-mini-instruct\n"
    )


def test_onnx_takes_only_its_own_quantization_and_kv_dtype() -> None:
    with pytest.raises(ValueError, match="quantization 'q4_k_m' is not available on onnx"):
        Serving(model="phi-4-mini-instruct", runtime="onnx", quantization="q4_k_m")
    with pytest.raises(ValueError, match="kv_cache_dtype 'q8_0' is not available on onnx"):
        Serving(model="phi-4-mini-instruct", runtime="onnx", kv_cache_dtype="q8_0")


@pytest.mark.parametrize(
    ("index", "field", "reason"),
    [
        (2, "cpu_arch", "runtime onnx needs a linux/amd64 box: foundry-local-sdk==2.2.1 ships Foundry Local's native"),
        (1, "gpu", "runtime onnx serves CPU boxes only: foundry-local-sdk==2.2.1's Linux packages carry"),
    ],
)
def test_an_edge_box_foundry_local_cannot_run_on_is_refused_with_the_reason(
    tmp_path: Path, index: int, field: str, reason: str
) -> None:
    data = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    data["boxes"][index]["serving"] = {
        "runtime": "onnx",
        "model": "phi-4-mini-instruct",
        "quantization": "int4",
        "context": 4096,
        "concurrency": 2,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = run_cli("bundle", str(path), "--out", str(out))
    assert result.returncode == 2, result.stderr
    box = data["boxes"][index]["id"]
    assert result.stderr.startswith(f"error: fleet.yaml: boxes[{index}].hardware.{field}: box {box}: {reason}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_the_onnx_box_builds_foundry_local_from_hash_pinned_wheels_and_fetches_only_its_variant() -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == "branch-0013"))
    compose = yaml.safe_load(bundle.files["compose.yaml"])
    server, fetch = compose["services"]["onnx"], compose["services"]["model-fetch"]
    # Built on the box, never pulled: the tag names no registry image. Built once and kept: an `up`
    # during a WAN outage after a prune must not need PyPI again (edge review E17).
    assert server["build"]["dockerfile"] == "Dockerfile" and server["pull_policy"] == "missing"
    assert fetch["image"] == server["image"] and fetch["pull_policy"] == "never"
    dockerfile = bundle.files["Dockerfile"].decode()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms and all(line.startswith("FROM python:3.11-slim-bookworm@sha256:") for line in froms), froms
    assert "--no-deps --only-binary=:all: --require-hashes -r /opt/slm/requirements.txt" in dockerfile
    requirements = [line for line in bundle.files["onnx/requirements.txt"].decode().splitlines() if not line.startswith("#")]
    assert "foundry-local-sdk==2.2.1" in {line.split()[0] for line in requirements}
    assert all(" --hash=sha256:" in line for line in requirements)
    from slm_deploy.launcher import foundry

    assert bundle.files["onnx/foundry_launcher.py"] == Path(foundry.__file__).read_bytes()
    assert "allow_patterns=['cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/*']" in fetch["entrypoint"][2]
    # The commit the catalog pins, not whatever `main` is on the day of the fetch.
    assert "revision='fc04c8f93df696602fd9f300a30d1bf2e3081347'" in fetch["entrypoint"][2]
    # Microsoft's ONNX repos are public and the fetch has no token: a 401/403 says so, not "the token in /run/secrets".
    assert "/run/secrets/hf_token" not in fetch["entrypoint"][2] and "hf_token" not in compose["secrets"]
    assert "(the repo is public): check the repo and revision" in fetch["entrypoint"][2]
    compile(fetch["entrypoint"][2], "model-fetch", "exec")
    # The Hub client's caches (the Xet chunk cache under $HF_HOME/xet) go to the models volume, not
    # to the fetch container's tmpfs /tmp, which several GB of model.onnx.data would fill.
    assert fetch["environment"]["HF_HOME"] == "/models/hf"
    assert {"type": "volume", "source": "models", "target": "/models"} in fetch["volumes"]
    # Foundry Local's native library stops its telemetry upload (and DNS lookups) only with CI=true.
    assert server["environment"]["CI"] == "true"
    command = server["command"]
    assert command[command.index("--model-dir") + 1] == "/models/microsoft/Phi-4-mini-instruct-onnx"
    assert command[command.index("--model-id") + 1] == "Phi-4-mini-instruct-generic-cpu:1"
    readme = " ".join(bundle.files["README.md"].decode().split())
    assert "`Phi-4-mini-instruct-generic-cpu:1`: that is the `model` to send to the API" in readme
    assert "Send `max_tokens` with every request: without it Foundry Local reserves 2048 output tokens" in readme
    assert "Foundry Local does not limit concurrent requests: the concurrency above (2)" in readme
    assert "onnx" not in bundle.files["prometheus/prometheus.yml"].decode()  # Foundry Local has no /metrics
    board = json.loads(bundle.files["grafana/provisioning/dashboards/gateway.json"])
    assert "Foundry Local (runtime onnx) exports no Prometheus metrics" in board["description"]


def test_a_stack_model_on_onnx_on_a_gpu_pool_is_refused_with_the_reason() -> None:
    """Foundry Local's Linux build serves on the CPU only: a GPU pool is refused, a cpuPools pool is
    the place (tests/test_onnx_stacks.py)."""
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in data.items() if k.startswith("slm-deploy:")}
    config["models"][0] |= {"runtime": "onnx", "model": "phi-4-mini-instruct", "image": "example.azurecr.io/slm-onnx:2.2.1"}
    with pytest.raises(InputError) as err:
        plan_environment("dev", config)
    assert str(err.value).startswith("Pulumi.dev.yaml: slm-deploy:models[0].pool: pool 't4' is a GPU pool: runtime onnx ")
    assert "put it on a cpuPools pool" in str(err.value)


def test_launcher_refuses_a_folder_without_genai_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    code = launcher_main(
        ["--model-dir", str(tmp_path), "--model-id", "m:1", "--listen", "http://127.0.0.1:1", "--scratch", str(tmp_path)]
    )
    assert code == EXIT_BAD_MODEL
    assert "no genai_config.json" in capsys.readouterr().err
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"filename": "other.onnx"}}}))
    assert launcher_main(["--model-dir", str(tmp_path), "--model-id", "m:1", "--listen", "http://127.0.0.1:1"]) == EXIT_BAD_MODEL
    assert "names other.onnx, which is missing" in capsys.readouterr().err


def test_every_onnx_build_names_a_catalog_model_and_has_a_cpu_and_a_cuda_variant() -> None:
    from slm_deploy.catalog import load_catalog
    from slm_deploy.onnx_builds import load_onnx_builds

    models = load_catalog().models
    for build in load_onnx_builds().values():
        assert build.id in models, build.id
        assert build.variant("cpu") is not None and build.variant("cuda") is not None, build.id
        assert len({v.path for v in build.variants}) == len(build.variants)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["phi-4-mini-instruct", "phi-3.5-mini-instruct"]),
    st.sampled_from([None, "t4", "l4", "a10", "rtx-4090"]),
    st.integers(min_value=256, max_value=131072),
    st.integers(min_value=1, max_value=16),
    st.sampled_from([8, 16, 32, 64]),
)
def test_an_onnx_plan_that_fits_stays_within_the_device_and_longer_contexts_never_hold_more(
    model: str, gpu: str | None, context: int, concurrency: int, memory: int
) -> None:
    hardware = Hardware(cpus=8, memory_gib=memory, gpu=GpuAttachment(model=gpu) if gpu else None)
    serving = Serving(model=model, runtime="onnx", context=context, concurrency=concurrency)
    result = plan(serving, hardware)
    if result.fits:
        assert result.memory_used_gib <= result.device_memory_gib
        assert result.max_concurrent_sequences >= concurrency
    longer = plan(serving.model_copy(update={"context": min(context * 2, 131072)}), hardware)
    assert longer.max_concurrent_sequences <= result.max_concurrent_sequences


def test_launcher_stages_the_folder_in_foundry_locals_cache_with_the_context_capped(tmp_path: Path) -> None:
    from slm_deploy.launcher.foundry import catalog_entry, stage_model

    folder = tmp_path / "repo" / "cpu"
    folder.mkdir(parents=True)
    config = {"model": {"context_length": 131072, "decoder": {"filename": "model.onnx"}}, "search": {"max_length": 131072}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    (folder / "model.onnx").write_bytes(b"graph")
    (folder / "model.onnx.data").write_bytes(b"weights")
    staged = stage_model(folder, "Phi-4-mini-instruct-generic-cpu:1", 4096, tmp_path / "cache")
    assert staged == tmp_path / "cache" / "slm-deploy" / "Phi-4-mini-instruct-generic-cpu-1"
    capped = json.loads((staged / "genai_config.json").read_text())
    assert capped["search"]["max_length"] == 4096 and capped["model"]["context_length"] == 4096
    # Foundry Local's cache scanner recognises a model folder by these two files.
    assert json.loads((staged / "inference_model.json").read_text()) == {"Name": "Phi-4-mini-instruct-generic-cpu:1"}
    assert (staged / "model.onnx.data").resolve() == (folder / "model.onnx.data").resolve()
    assert json.loads((folder / "genai_config.json").read_text()) == config
    # A second start restages instead of failing on the old links.
    assert stage_model(folder, "Phi-4-mini-instruct-generic-cpu:1", 2048, tmp_path / "cache") == staged
    assert json.loads((staged / "genai_config.json").read_text())["search"]["max_length"] == 2048
    entry = catalog_entry("Phi-4-mini-instruct-cuda-gpu:1", "cuda", 2048)
    assert (entry["name"], entry["version"]) == ("Phi-4-mini-instruct-cuda-gpu", "1")
    assert entry["variantInformation"]["variantMetadata"] == {"device": "GPU", "executionProvider": "CUDAExecutionProvider"}


def test_launcher_refuses_a_model_id_without_a_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = launcher_main(["--model-dir", str(tmp_path), "--model-id", "phi-4-mini", "--listen", "http://127.0.0.1:1"])
    assert code == EXIT_BAD_MODEL
    assert "--model-id 'phi-4-mini' is not <name>:<version>" in capsys.readouterr().err


def test_a_service_may_run_the_image_another_service_builds_only_if_it_never_pulls_it() -> None:
    from slm_deploy.policies.compose_rules import locked_image

    built = {"image": "slm-deploy/onnx-server:0123456789ab", "build": {"context": "."}, "pull_policy": "build"}
    fetch = {"image": "slm-deploy/onnx-server:0123456789ab", "pull_policy": "never"}
    document = {"services": {"onnx": built, "model-fetch": fetch}}
    assert locked_image({"name": "model-fetch", "service": fetch, "document": document}) == []
    pulled = {"image": fetch["image"]}  # compose would ask Docker Hub for slm-deploy/onnx-server
    document["services"]["model-fetch"] = pulled
    assert locked_image({"name": "model-fetch", "service": pulled, "document": document}) == [
        "service model-fetch uses 'slm-deploy/onnx-server:0123456789ab' without a digest"
    ]


def test_an_air_gapped_onnx_box_bakes_the_variant_into_the_image_it_builds(tmp_path: Path) -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet

    data = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    data["boxes"] = [dict(b, offline=True) for b in data["boxes"] if b["id"] == "branch-0013"]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    fleet = load_fleet(tmp_path / "fleet.yaml")
    (bundle,) = build_fleet(fleet, fleet.boxes)
    compose = yaml.safe_load(bundle.files["compose.yaml"])
    assert "model-fetch" not in compose["services"] and "models" not in compose["volumes"]
    server = compose["services"]["onnx"]
    assert server["pull_policy"] == "never" and server["image"].startswith("slm-offline/")
    assert server["command"][server["command"].index("--model-dir") + 1] == "/opt/model/microsoft/Phi-4-mini-instruct-onnx"
    dockerfile = bundle.files["Dockerfile"].decode()
    fetch_stage = dockerfile[dockerfile.index("FROM server AS fetch") : dockerfile.index("\nFROM server\n")]
    assert "allow_patterns=['cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/*']" in fetch_stage
    assert "COPY --from=fetch --chown=10001:10001 /opt/model/microsoft/Phi-4-mini-instruct-onnx " in dockerfile
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["python3", "/opt/slm/foundry_launcher.py"]')


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_a_windows_or_macos_box_is_refused_with_what_is_missing(tmp_path: Path, system: str) -> None:
    data = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    data["boxes"][0]["os"] = system
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    result = run_cli("bundle", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: fleet.yaml: boxes[0].os: {system} boxes are not generated: a bundle is a Docker Compose project for a "
        "Linux host; a native install with service registration, gateway and secrets for Windows or macOS is not "
        "generated because nothing here could validate it\n"
    )
    assert not (tmp_path / "out").exists()
    data["boxes"][0]["os"] = "linux"  # saying so is allowed
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    assert run_cli("bundle", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "out")).returncode == 0


def test_a_context_that_cannot_hold_foundry_locals_default_output_budget_is_refused() -> None:
    """Foundry Local reserves 2048 output tokens for a request without max_tokens (catalog: the live
    400 error); a plan whose context cannot hold that plus a prompt would answer such requests 400."""
    from slm_deploy.onnx_builds import load_onnx_server

    reserved = load_onnx_server().default_output_tokens
    assert reserved == 2048
    short = plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=2048, concurrency=1), CPU_BOX)
    assert not short.fits
    assert short.reason is not None and "2048 output tokens" in short.reason and "max_tokens" in short.reason
    assert "context >= 2560" in short.reason
    assert plan(Serving(model="phi-4-mini-instruct", runtime="onnx", context=2560, concurrency=1), CPU_BOX).fits


def test_the_onnx_dockerfile_installs_its_debian_package_from_a_fixed_url_checked_against_its_sha256(tmp_path: Path) -> None:
    """deb.debian.org keeps only the current version of a package, so `apt-get install libatomic1=<version>`
    breaks at the next point release; the Dockerfile downloads the pinned .deb from snapshot.debian.org
    (which keeps every version) and refuses it unless its sha256 is the catalog's."""
    import re
    import subprocess
    import sys

    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet
    from slm_deploy.onnx_builds import load_onnx_server

    (package,) = load_onnx_server().debian_packages
    assert package.url.startswith("https://snapshot.debian.org/archive/debian/2")
    assert package.url.endswith(f"/{package.name}_{package.version}_amd64.deb")
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == "branch-0013"))
    dockerfile = bundle.files["Dockerfile"].decode()
    assert "apt-get" not in dockerfile
    (run,) = [line for line in dockerfile.splitlines() if package.url in line]
    assert run.startswith("RUN python3 -c '") and run.endswith(f" {package.url} {package.sha256} /tmp/{package.name}.deb \\")
    assert f"dpkg -i /tmp/{package.name}.deb" in dockerfile
    code = re.match(r"RUN python3 -c '([^']*)'", run).group(1)  # type: ignore[union-attr]
    deb = tmp_path / "p.deb"
    deb.write_bytes(b"a package")
    url, out = deb.as_uri(), tmp_path / "out.deb"
    import hashlib

    good = hashlib.sha256(b"a package").hexdigest()
    assert subprocess.run([sys.executable, "-c", code, url, good, str(out)], check=False).returncode == 0
    assert out.read_bytes() == b"a package"
    out.unlink()
    bad = subprocess.run([sys.executable, "-c", code, url, "0" * 64, str(out)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and f"sha256 {good}, expected {'0' * 64}" in bad.stderr and not out.exists()
