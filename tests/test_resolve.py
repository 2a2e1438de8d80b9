"""Models outside the catalog, resolved against a fake Hub and a fake Ollama registry on loopback.

Fixture repos are generated from real config.json files (tests/data/hub, sources in SOURCES.md):
the tests build each repo's safetensors headers from the config, so every number the planner
prints here traces back to a published config, not to a number typed into the test.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slm_deploy.errors import InputError
from slm_deploy.planner import plan
from slm_deploy.spec import GpuAttachment, Hardware, Serving
from tests.fakehub import FakeHub, FakeRepo, VirtualFile, decoder_tensors, gguf_file, json_file, model_repo, serve, sharded_repo

DATA = Path(__file__).parent / "data" / "hub"
ROOT = Path(__file__).resolve().parents[1]
SHA = {
    name: f"{i:x}" * 40 for i, name in enumerate(("qwen2", "awq", "gptq", "fp8", "gemma", "gated", "sharded", "bert", "old"), 1)
}
SHA["old"] = "ab" * 20
AWQ = {"bits": 4, "group_size": 128, "modules_to_not_convert": None, "quant_method": "awq", "version": "gemm", "zero_point": True}
GPTQ = {"bits": 4, "group_size": 128, "desc_act": False, "sym": True, "quant_method": "gptq", "checkpoint_format": "gptq"}
FP8 = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "quantization_status": "compressed",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True},
        }
    },
    "ignore": ["lm_head"],
}


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


@functools.cache
def qwen2_gguf(file_type: str) -> VirtualFile:
    return gguf_file(config("qwen2-7b-instruct"), file_type)


def fake_hub() -> FakeHub:
    hub = FakeHub()
    qwen = config("qwen2-7b-instruct")
    hub.repos["Qwen/Qwen2-7B-Instruct"] = model_repo(qwen, decoder_tensors(qwen), SHA["qwen2"])
    hub.repos["Qwen/Qwen2-7B-Instruct"].branches["v1"] = SHA["old"]
    hub.repos["Qwen/Qwen2-7B-Instruct-AWQ"] = model_repo(
        {**qwen, "quantization_config": AWQ}, decoder_tensors(qwen, "awq"), SHA["awq"]
    )
    hub.repos["Qwen/Qwen2-7B-Instruct-GPTQ-Int4"] = model_repo(
        {**qwen, "quantization_config": GPTQ}, decoder_tensors(qwen, "gptq"), SHA["gptq"]
    )
    hub.repos["RedHatAI/Qwen2-7B-Instruct-FP8"] = model_repo(
        {**qwen, "quantization_config": FP8}, decoder_tensors(qwen, "fp8"), SHA["fp8"]
    )
    gemma = config("gemma-3-4b-it")
    gemma_text = {**gemma, "text_config": {**gemma["text_config"], "num_attention_heads": 8, "num_key_value_heads": 4,
                                           "head_dim": 256, "vocab_size": 262208, "tie_word_embeddings": True}}  # fmt: skip
    # A community mirror of gemma-3-4b-it (outside the catalog), gated here to exercise the token path.
    hub.repos["unsloth/gemma-3-4b-it"] = model_repo(
        gemma,
        decoder_tensors(gemma_text, prefix="language_model.model."),
        SHA["gemma"],
        gated=True,
        granted_tokens=("hf_granted",),
    )
    hub.repos["unsloth/Qwen2-7B-Instruct"] = sharded_repo(qwen, decoder_tensors(qwen), SHA["sharded"], shards=4)
    q4, q6, q8 = (qwen2_gguf(t) for t in ("Q4_K_M", "Q6_K", "Q8_0"))
    hub.add_ollama("library/qwen2", "7b", q4)
    hub.add_ollama("library/qwen2", "7b-instruct-q8_0", q8)
    hub.repos["bartowski/Qwen2-7B-Instruct-GGUF"] = FakeRepo(
        files={
            "Qwen2-7B-Instruct-Q4_K_M.gguf": q4,
            "Qwen2-7B-Instruct-Q6_K.gguf": q6,
            "Qwen2-7B-Instruct-Q8_0.gguf": q8,
            "README.md": json_file({}),
        },
        sha=SHA["old"][::-1],
        branches={"main": SHA["old"][::-1]},
    )
    hub.repos["google-bert/bert-base-uncased"] = FakeRepo(
        files={"config.json": json_file({"architectures": ["BertForMaskedLM"], "hidden_size": 768, "model_type": "bert"})},
        sha=SHA["bert"],
        branches={"main": SHA["bert"]},
    )
    return hub


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "SLM_DEPLOY_OFFLINE", "SLM_DEPLOY_CACHE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with serve(fake_hub()) as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        monkeypatch.setenv("OLLAMA_REGISTRY", running.url)
        yield running


def a100() -> Hardware:
    return Hardware(cpus=24, memory_gib=220, gpu=GpuAttachment(model="a100-80gb"))


def l4() -> Hardware:
    return Hardware(cpus=8, memory_gib=64, gpu=GpuAttachment(model="l4"))


# ---------------------------------------------------------------------------------------------
# Hugging Face


def test_a_catalog_models_pre_quantized_repo_is_planned_in_its_quantization() -> None:
    # `--model Qwen/Qwen2.5-7B-Instruct-AWQ` names the catalog's AWQ checkpoint: plan the 4-bit
    # weights from that repo, not the bf16 base model.
    result = plan(Serving(model="Qwen/Qwen2.5-7B-Instruct-AWQ"), l4())
    assert (result.quantization, result.weights_source) == ("awq", "hf://Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert result.weights_gib < 6


def test_a_hub_model_outside_the_catalog_is_planned_from_its_config_and_safetensors_headers(hub: FakeHub) -> None:
    result = plan(Serving(model="Qwen/Qwen2-7B-Instruct", context=8192), a100())
    assert result.fits, result.reason
    # 7,615,616,512 parameters in bf16: the exact sum of the tensors the headers list.
    assert result.weights_gib == round(7_615_616_512 * 2 / 2**30, 2)
    assert result.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2  # 28 layers x 4 KV heads x head_dim 128, bf16
    assert result.model == "qwen2-7b-instruct"
    assert result.model_revision == SHA["qwen2"]
    assert result.runtime_args[:1] == ("Qwen/Qwen2-7B-Instruct",)
    assert "--revision" in result.runtime_args and SHA["qwen2"] in result.runtime_args
    # Only headers crossed the wire: no weights were downloaded.
    assert hub.served_bytes < 2_000_000


def test_the_same_plan_works_offline_from_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online = plan(Serving(model="Qwen/Qwen2-7B-Instruct"), l4())
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = plan(Serving(model="Qwen/Qwen2-7B-Instruct"), l4())
    assert offline == online
    assert len(hub.requests) == seen  # not one request


def test_offline_without_a_cached_resolution_is_one_clear_error(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        InputError, match=r"model: Qwen/Qwen2-7B-Instruct@main is not in the resolve cache .* HF_HUB_OFFLINE is set"
    ):
        plan(Serving(model="Qwen/Qwen2-7B-Instruct"), l4())
    assert hub.requests == []


def test_an_unreachable_hub_falls_back_to_the_cached_revision(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online = plan(Serving(model="Qwen/Qwen2-7B-Instruct"), l4())
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    assert plan(Serving(model="Qwen/Qwen2-7B-Instruct"), l4()) == online


def test_a_revision_is_resolved_and_recorded(hub: FakeHub) -> None:
    result = plan(Serving(model="Qwen/Qwen2-7B-Instruct@v1"), l4())
    assert result.model_revision == SHA["old"]
    with pytest.raises(InputError, match=r"Qwen/Qwen2-7B-Instruct has no revision 'nope'"):
        plan(Serving(model="Qwen/Qwen2-7B-Instruct@nope"), l4())


@pytest.mark.parametrize(
    ("repo", "quant", "method", "exact_bytes_over_bf16"),
    [
        ("Qwen/Qwen2-7B-Instruct-AWQ", "awq", "awq", (0.25, 0.40)),
        ("Qwen/Qwen2-7B-Instruct-GPTQ-Int4", "gptq", "gptq", (0.25, 0.40)),
        ("RedHatAI/Qwen2-7B-Instruct-FP8", "fp8", "compressed-tensors", (0.5, 0.65)),
    ],
)
def test_pre_quantized_checkpoints_are_served_as_stored(
    hub: FakeHub, repo: str, quant: str, method: str, exact_bytes_over_bf16: tuple[float, float]
) -> None:
    result = plan(Serving(model=repo, context=4096), l4())
    bf16 = plan(Serving(model="Qwen/Qwen2-7B-Instruct", context=4096), l4())
    assert result.quantization == quant
    # The checkpoint's own quantization_config drives vLLM; a --quantization flag would contradict it.
    assert "--quantization" not in result.runtime_args and "--dtype" not in result.runtime_args
    low, high = exact_bytes_over_bf16
    assert low < result.weights_gib / bf16.weights_gib < high
    assert result.weights_source == f"hf://{repo}"
    assert result.fits


def test_a_4bit_checkpoint_fits_where_the_16bit_one_does_not(hub: FakeHub) -> None:
    t4 = Hardware(cpus=8, memory_gib=56, gpu=GpuAttachment(model="t4"))
    assert plan(Serving(model="Qwen/Qwen2-7B-Instruct-AWQ", context=4096), t4).fits
    bf16 = plan(Serving(model="Qwen/Qwen2-7B-Instruct", context=4096), t4)
    assert not bf16.fits and "exceed vLLM's budget" in (bf16.reason or "")


def test_unpacked_parameter_count_of_a_4bit_checkpoint_matches_the_original(hub: FakeHub) -> None:
    from slm_deploy.resolve import resolve
    from slm_deploy.spec import Runtime

    awq = resolve("Qwen/Qwen2-7B-Instruct-AWQ", Runtime.VLLM, None, "spec", "model")
    original = resolve("Qwen/Qwen2-7B-Instruct", Runtime.VLLM, None, "spec", "model")
    assert awq.arch.params_b == original.arch.params_b == 7.615616512


def test_asking_a_pre_quantized_checkpoint_for_another_quantization_is_refused(hub: FakeHub) -> None:
    result = plan(Serving(model="Qwen/Qwen2-7B-Instruct-AWQ", quantization="bf16"), a100())
    assert not result.fits
    assert (
        result.reason
        == "Qwen/Qwen2-7B-Instruct-AWQ stores awq-quantized weights; serve it as awq (drop `quantization`) or pick its unquantized repo"
    )


def test_a_multimodal_wrapper_is_planned_from_its_text_config_with_transformers_defaults(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    result = plan(Serving(model="unsloth/gemma-3-4b-it", context=32768, concurrency=2), l4())
    catalog = plan(Serving(model="gemma-3-4b-it", context=32768, concurrency=2), l4())
    # The sparse config.json (heads, KV heads, head_dim, window pattern left to transformers'
    # defaults) gives the same KV cache as the catalog entry checked against the full config.
    assert result.kv_bytes_per_token == catalog.kv_bytes_per_token
    assert result.fits == catalog.fits


def test_a_gated_repo_needs_a_token_with_access(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unsloth/gemma-3-4b-it is gated: accept its terms on the Hub, then set HF_TOKEN"):
        plan(Serving(model="unsloth/gemma-3-4b-it"), l4())
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(InputError, match=r"gated and this token has no access"):
        plan(Serving(model="unsloth/gemma-3-4b-it"), l4())
    # The token file `hf auth login` writes is read too.
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "hf").mkdir(exist_ok=True)
    (tmp_path / "hf" / "token").write_text("hf_granted\n")
    assert plan(Serving(model="unsloth/gemma-3-4b-it"), l4()).model_revision == SHA["gemma"]


def test_a_sharded_checkpoint_reads_every_shard_header(hub: FakeHub) -> None:
    sharded = plan(Serving(model="unsloth/Qwen2-7B-Instruct"), a100())
    single = plan(Serving(model="Qwen/Qwen2-7B-Instruct"), a100())
    assert sharded.weights_gib == single.weights_gib
    assert sum(1 for m, p, r in hub.requests if p.endswith(".safetensors") and r) >= 4


def test_missing_repos_and_non_causal_models_are_one_clear_error(hub: FakeHub) -> None:
    with pytest.raises(
        InputError,
        match=r"^spec: model: no model 'nobody/nothing' on the Hub at http://127\.0\.0\.1:\d+ \(a private repo needs HF_TOKEN\)$",
    ):
        plan(Serving(model="nobody/nothing"), l4())
    with pytest.raises(
        InputError,
        match=r"google-bert/bert-base-uncased: config.json: architectures: BertForMaskedLM is not a causal language model",
    ):
        plan(Serving(model="google-bert/bert-base-uncased"), l4())


def test_the_cli_plans_a_hub_model_and_fails_cleanly_offline(hub: FakeHub, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "plan", "--model", "Qwen/Qwen2-7B-Instruct-AWQ", "--gpu", "l4", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model_revision"] == SHA["awq"]
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty")
    env["HF_HOME"] = str(tmp_path / "empty-hf")
    env["HF_HUB_OFFLINE"] = "1"
    bad = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "plan", "--model", "Qwen/Qwen2-7B-Instruct", "--gpu", "l4"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: arguments: model: Qwen/Qwen2-7B-Instruct@main is not in the resolve cache")
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------------
# Fleet files and stacks


def _fleet(model: str, gpu: str = "l4", runtime: str = "vllm") -> Any:
    from slm_deploy.fleet import parse_fleet

    data = {
        "fleet": "edge",
        "boxes": [
            {
                "id": "box-1",
                "hardware": {"cpus": 8, "memory_gib": 64, "gpu": {"model": gpu}},
                "serving": {"model": model, "runtime": runtime, "context": 4096},
            }
        ],
    }
    return parse_fleet(data, "fleet.yaml")


def test_a_bundle_records_the_resolved_revision_in_its_manifest(hub: FakeHub) -> None:
    from slm_deploy.bundle import build_box

    fleet = _fleet("Qwen/Qwen2-7B-Instruct-AWQ")
    built = build_box(fleet.boxes[0], fleet)
    manifest = json.loads(built.files["MANIFEST.json"])
    assert manifest["resolved_models"] == {
        "qwen2-7b-instruct-awq": {"source": "hf://Qwen/Qwen2-7B-Instruct-AWQ", "revision": SHA["awq"]}
    }
    compose = built.files["compose.yaml"].decode()
    assert f'- "--revision"\n      - "{SHA["awq"]}"' in compose  # vLLM serves that revision
    assert f"revision='{SHA['awq']}'" in compose  # and the fetch service downloads that revision, not main


def test_a_llamacpp_bundle_fetches_the_gguf_file_at_its_resolved_revision(hub: FakeHub) -> None:
    from slm_deploy.bundle import build_box

    fleet = _fleet("bartowski/Qwen2-7B-Instruct-GGUF", runtime="llamacpp")
    built = build_box(fleet.boxes[0], fleet)
    text = b"".join(built.files.values()).decode(errors="replace")
    revision = SHA["old"][::-1]
    assert f"/bartowski/Qwen2-7B-Instruct-GGUF/resolve/{revision}/Qwen2-7B-Instruct-Q4_K_M.gguf" in text


def test_a_catalog_only_bundle_manifest_is_unchanged(hub: FakeHub) -> None:
    from slm_deploy.bundle import build_box

    fleet = _fleet("qwen3-4b")
    assert "resolved_models" not in json.loads(build_box(fleet.boxes[0], fleet).files["MANIFEST.json"])


def test_a_bundle_for_an_amd_gpu_is_refused_before_anything_is_written(hub: FakeHub) -> None:
    from slm_deploy.bundle import build_box

    fleet = _fleet("qwen3-4b", gpu="mi300x")
    with pytest.raises(
        InputError, match=r"fleet.yaml: boxes\[0\].hardware.gpu.model: box box-1: AMD Instinct MI300X needs ROCm images"
    ):
        build_box(fleet.boxes[0], fleet)


# ---------------------------------------------------------------------------------------------
# Ollama library and GGUF repos


def test_an_ollama_tag_is_planned_from_its_manifest_and_gguf_header(hub: FakeHub) -> None:
    result = plan(Serving(model="qwen2:7b", runtime="ollama", context=8192, concurrency=2), l4())
    assert result.fits, result.reason
    manifest, _blobs = hub.ollama["library/qwen2"].tags["7b"]
    layer = manifest["layers"][0]
    assert result.weights_gib == round(layer["size"] / 2**30, 2)  # the blob's exact size
    assert result.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2  # from qwen2.block_count / head_count_kv, f16 cache
    assert result.quantization == "q4_k_m"
    assert result.weights_source == "ollama://qwen2:7b"
    assert result.model_revision.startswith("sha256:")
    assert result.runtime_env["OLLAMA_CONTEXT_LENGTH"] == "8192"
    # Only the header of the 4.7 GiB blob was read.
    assert hub.served_bytes < 8 * 1024 * 1024


def test_the_gguf_header_range_grows_until_it_parses(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_deploy.resolve import gguf

    monkeypatch.setattr(gguf, "FIRST_RANGE", 4096)  # far smaller than the 2 MiB header
    result = plan(Serving(model="qwen2:7b", runtime="ollama"), l4())
    assert result.fits
    ranges = [r for m, p, r in hub.requests if "/blobs/" in p]
    assert ranges[0] == "bytes=0-4095" and len(ranges) > 1


def test_unknown_ollama_tags_and_models_are_refused(hub: FakeHub) -> None:
    with pytest.raises(InputError, match=r"^spec: model: the Ollama library has library/qwen2 but no tag '70b'$"):
        plan(Serving(model="qwen2:70b", runtime="ollama"), l4())
    with pytest.raises(InputError, match=r"^spec: model: no model library/nosuch in the Ollama library at http://127"):
        plan(Serving(model="nosuch:1b", runtime="ollama"), l4())


def test_an_unknown_ollama_tag_is_refused_before_a_bundle_is_written(hub: FakeHub, tmp_path: Path) -> None:
    import os

    import yaml

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "fleet": "edge",
                "boxes": [
                    {
                        "id": "box-1",
                        "hardware": {"cpus": 8, "memory_gib": 64},
                        "serving": {"model": "qwen2:70b", "runtime": "ollama"},
                    }
                ],
            }
        )
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "bundle", str(fleet), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "error: fleet.yaml: boxes[0].serving.model: the Ollama library has library/qwen2 but no tag '70b'\n"
    assert not out.exists()


def test_a_resolved_ollama_tag_plans_offline_from_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online = plan(Serving(model="qwen2:7b", runtime="ollama"), l4())
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert plan(Serving(model="qwen2:7b", runtime="ollama"), l4()) == online
    assert len(hub.requests) == seen


def test_a_gguf_repo_on_the_hub_is_read_from_the_file_header(hub: FakeHub) -> None:
    q8 = plan(Serving(model="bartowski/Qwen2-7B-Instruct-GGUF", runtime="llamacpp", quantization="q8_0"), l4())
    q4 = plan(Serving(model="bartowski/Qwen2-7B-Instruct-GGUF", runtime="llamacpp"), l4())
    assert q8.weights_source == "hf://bartowski/Qwen2-7B-Instruct-GGUF/Qwen2-7B-Instruct-Q8_0.gguf"
    assert q4.weights_source == "hf://bartowski/Qwen2-7B-Instruct-GGUF/Qwen2-7B-Instruct-Q4_K_M.gguf"
    assert q8.weights_gib > 1.5 * q4.weights_gib
    assert "-ngl" in q4.runtime_args and q4.runtime_args[q4.runtime_args.index("-ngl") + 1] == "29"
    via_ollama = plan(Serving(model="hf.co/bartowski/Qwen2-7B-Instruct-GGUF:Q6_K", runtime="ollama"), l4())
    assert via_ollama.weights_source == "ollama://hf.co/bartowski/Qwen2-7B-Instruct-GGUF:Q6_K"
    assert q4.weights_gib < via_ollama.weights_gib < q8.weights_gib
    assert any("q6_k" in note for note in via_ollama.notes)
    with pytest.raises(InputError, match=r"has no single-file IQ2_XS GGUF; it has: Q4_K_M, Q6_K, Q8_0"):
        plan(Serving(model="hf.co/bartowski/Qwen2-7B-Instruct-GGUF:IQ2_XS", runtime="ollama"), l4())


def test_a_gguf_model_cannot_be_served_by_vllm_or_in_another_quantization(hub: FakeHub) -> None:
    wrong = plan(Serving(model="qwen2:7b", runtime="ollama", quantization="q8_0"), l4())
    assert not wrong.fits
    assert wrong.reason == "qwen2:7b holds q4_k_m weights; drop `quantization` or pick the tag or file you want"


def test_a_stack_accepts_a_hub_reference_and_exports_its_revision(hub: FakeHub, tmp_path: Path) -> None:
    import yaml

    from slm_deploy.preview import run_preview

    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config["slm-deploy:models"][0]["model"] = "Qwen/Qwen2-7B-Instruct-AWQ"
    (tmp_path / "Pulumi.hub.yaml").write_text(yaml.safe_dump({"config": config}))
    result = run_preview("hub", tmp_path)
    name = config["slm-deploy:models"][0]["name"]
    assert result.outputs["modelRevisions"] == {name: f"hf://Qwen/Qwen2-7B-Instruct-AWQ@{SHA['awq']}"}
    args = [
        c["args"]
        for m in result.manifests()
        if m["kind"] == "Deployment"
        for c in m["spec"]["template"]["spec"]["containers"]
        if c.get("args")
    ]
    assert any("--revision" in a and SHA["awq"] in a for a in args)


def test_the_documentation_names_every_config_key_the_planner_reads() -> None:
    from slm_deploy.resolve.config import FIELDS, READ_KEYS

    page = (ROOT / "docs" / "resolve.md").read_text()
    keys = {k for _, names, _ in FIELDS for k in names} | set(READ_KEYS)
    missing = sorted(k for k in keys if f"`{k}`" not in page)
    assert missing == []


def test_the_plan_table_shows_the_resolved_revision(hub: FakeHub) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "plan", "--model", "Qwen/Qwen2-7B-Instruct-AWQ", "--gpu", "l4"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"revision {SHA['awq']}" in " ".join(result.stdout.replace("│", " ").split())


def test_an_ollama_tag_on_vllm_says_which_runtime_it_needs(hub: FakeHub) -> None:
    with pytest.raises(
        InputError,
        match=r"^spec: model: 'qwen2:7b' is not a Hugging Face repo id \(owner/name\[@revision\]\); an Ollama tag needs runtime ollama$",
    ):
        plan(Serving(model="qwen2:7b"), l4())
    assert hub.requests == []


def test_an_ollama_bundle_pulls_the_tag_and_records_its_manifest_digest(hub: FakeHub) -> None:
    from slm_deploy.bundle import build_box

    fleet = _fleet("qwen2:7b", runtime="ollama")
    built = build_box(fleet.boxes[0], fleet)
    manifest = json.loads(built.files["MANIFEST.json"])
    digest = manifest["resolved_models"]["qwen2-7b"]["revision"]
    assert digest.startswith("sha256:") and manifest["resolved_models"]["qwen2-7b"]["source"] == "ollama://qwen2:7b"
    text = b"".join(built.files.values()).decode(errors="replace")
    assert "qwen2:7b" in text


def test_a_fleet_resolves_each_reference_once(hub: FakeHub) -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import parse_fleet

    box = {"hardware": {"cpus": 8, "memory_gib": 64, "gpu": {"model": "l4"}}, "serving": {"model": "Qwen/Qwen2-7B-Instruct-AWQ"}}
    fleet = parse_fleet({"fleet": "edge", "boxes": [{"id": f"box-{i}", **box} for i in range(3)]}, "fleet.yaml")
    build_fleet(fleet, fleet.boxes)
    assert sum(1 for _m, path, _r in hub.requests if path.startswith("/api/models/")) == 1


def test_two_files_of_one_gguf_repo_are_two_models(hub: FakeHub) -> None:
    q4 = plan(Serving(model="hf.co/bartowski/Qwen2-7B-Instruct-GGUF:Q4_K_M", runtime="ollama"), l4())
    q8 = plan(Serving(model="hf.co/bartowski/Qwen2-7B-Instruct-GGUF:Q8_0", runtime="ollama"), l4())
    assert (q4.model, q8.model) == ("qwen2-7b-instruct-gguf-q4-k-m", "qwen2-7b-instruct-gguf-q8-0")
