"""Planner arithmetic against hand-computed values and published figures (REFERENCE.md)."""

from __future__ import annotations

import pytest

from slm_deploy.catalog import load_catalog
from slm_deploy.errors import InputError
from slm_deploy.planner import GIB, plan, startup_budget_seconds
from slm_deploy.spec import GpuAttachment, Hardware, ModelArchitecture, Serving

CATALOG = load_catalog()


def gpu_box(gpu: str, count: int = 1, cpus: int = 16, memory_gib: float = 64, arch: str = "amd64") -> Hardware:
    return Hardware(cpu_arch=arch, cpus=cpus, memory_gib=memory_gib, gpu=GpuAttachment(model=gpu, count=count))


def test_phi4_mini_bf16_matches_published_weights_and_kv_per_token() -> None:
    result = plan(Serving(model="phi-4-mini-instruct"), gpu_box("l4"))
    assert result.weights_gib == pytest.approx(7.15, abs=0.02)  # KAITO model catalog
    assert result.kv_bytes_per_token == 128 * 1024  # 2 x 32 layers x 8 heads x 128 x 2 bytes


@pytest.mark.parametrize(
    ("model", "quant", "published_gib"),
    [
        ("gemma-3-4b-it", "bf16", 8.01),  # KAITO
        ("gemma-3-27b-it", "bf16", 51.1),  # KAITO
        ("qwen3-8b", "awq", 5.68),  # KAITO Qwen3-8B-AWQ
    ],
)
def test_weights_match_published_figures(model: str, quant: str, published_gib: float) -> None:
    result = plan(Serving(model=model, quantization=quant, context=4096), gpu_box("a100-80gb"))
    assert result.weights_gib == pytest.approx(published_gib, rel=0.02)


def test_vllm_kv_tokens_follow_what_vllm_reserves() -> None:
    """Phi-4-mini on one L4 at utilization 0.9, by hand:
    budget      = 22.03 GiB x 0.9
    weights     = 3.836e9 params x 2 bytes
    non-torch   = 0.2 GiB
    activations = 2048 tokens x (3 x 8192 + 4 x 3072) x 2 B + 4 seqs x 200064 vocab x 4 B x 3
    KV tokens   = floor(rest / (16 x 131072)) x 16
    """
    budget = 22.03 * 0.9 * GIB
    rest = budget - 3.836e9 * 2 - 0.2 * GIB - (2048 * (3 * 8192 + 4 * 3072) * 2 + 4 * 200064 * 4 * 3)
    expected = int(rest // (16 * 131072)) * 16
    result = plan(Serving(model="phi-4-mini-instruct", context=8192, concurrency=4), gpu_box("l4"))
    assert result.kv_tokens == expected
    assert result.max_concurrent_sequences == expected // 8192
    assert result.runtime_args[0] == "microsoft/Phi-4-mini-instruct"
    args = dict(zip(result.runtime_args[1::2], result.runtime_args[2::2], strict=True))
    assert args["--max-model-len"] == "8192"
    assert args["--max-num-seqs"] == "4"
    assert args["--gpu-memory-utilization"] == "0.9"
    assert args["--tensor-parallel-size"] == "1"


def test_sliding_window_layers_shrink_the_gemma3_kv_cache() -> None:
    """Gemma 3 1B: 26 layers, 4 global (every 6th), 22 local with a 512-token window."""
    result = plan(Serving(model="gemma-3-1b-it", context=8192), gpu_box("l4"))
    per_layer = 2 * 1 * 256 * 2
    expected = per_layer * (4 * 8192 + 22 * 512) / 8192
    assert result.kv_bytes_per_token == round(expected)
    assert result.kv_bytes_per_token < per_layer * 26


def test_quantized_kv_and_fp8_flags() -> None:
    result = plan(Serving(model="qwen3-8b", quantization="fp8", kv_cache_dtype="fp8"), gpu_box("l4"))
    assert result.fits
    assert result.runtime_args[result.runtime_args.index("--quantization") :][:2] == ("--quantization", "fp8")
    assert "--kv-cache-dtype" in result.runtime_args
    assert result.download_gib > result.weights_gib  # fp8 is quantized online from the bf16 download


def test_t4_lacks_bf16_and_fp8() -> None:
    bf16 = plan(Serving(model="qwen3-1.7b"), gpu_box("t4"))
    assert bf16.fits and "--dtype" in bf16.runtime_args and "half" in bf16.runtime_args
    fp8 = plan(Serving(model="qwen3-1.7b", quantization="fp8"), gpu_box("t4"))
    assert not fp8.fits and "compute capability" in (fp8.reason or "")


def test_ollama_env_and_llamacpp_flags_come_from_the_plan() -> None:
    ollama = plan(
        Serving(model="phi-4-mini-instruct", runtime="ollama", context=4096, concurrency=3, kv_cache_dtype="q8_0"),
        gpu_box("rtx-4000-ada"),
    )
    assert ollama.runtime_env["OLLAMA_CONTEXT_LENGTH"] == "4096"
    assert ollama.runtime_env["OLLAMA_NUM_PARALLEL"] == "3"
    assert ollama.runtime_env["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert ollama.runtime_env["OLLAMA_FLASH_ATTENTION"] == "1"
    llama = plan(
        Serving(model="llama-3.2-3b-instruct", runtime="llamacpp", context=4096, concurrency=2),
        Hardware(cpu_arch="arm64", cpus=8, memory_gib=16),
    )
    args = dict(zip(llama.runtime_args[::2], llama.runtime_args[1::2], strict=True))
    assert args["-c"] == "8192" and args["-np"] == "2" and args["-ngl"] == "0"
    gpu = plan(Serving(model="llama-3.2-3b-instruct", runtime="llamacpp"), gpu_box("rtx-3090"))
    assert dict(zip(gpu.runtime_args[::2], gpu.runtime_args[1::2], strict=True))["-ngl"] == "29"


def test_cpu_plan_reports_ram_and_a_labelled_decode_estimate() -> None:
    result = plan(Serving(model="qwen3-4b", runtime="ollama"), Hardware(cpus=8, memory_gib=16))
    assert result.fits
    assert result.device == "cpu-amd64"
    # weights 4.02e9 x 4.89 bits; 51.2 GB/s dual-channel DDR4 by default.
    assert result.weights_gib == pytest.approx(4.022e9 * 4.89 / 8 / GIB, abs=0.01)
    assert 0 < result.decode_tokens_per_second_estimate < 51.2e9 / (4.022e9 * 4.89 / 8)
    assert any("estimate" in note for note in result.notes)
    assert result.resources.gpu_count == 0
    assert result.resources.memory_limit_gib <= 16


def test_startup_budget_grows_with_weights() -> None:
    assert startup_budget_seconds(1) == 1800
    assert startup_budget_seconds(60) == 900 + 18 * 60
    assert startup_budget_seconds(1000) == 10800
    small = plan(Serving(model="qwen3-0.6b"), gpu_box("a100-80gb"))
    large = plan(Serving(model="qwen3-32b", context=4096), gpu_box("a100-80gb"))
    assert large.resources.startup_budget_seconds > small.resources.startup_budget_seconds
    assert large.resources.cache_disk_gib > large.download_gib


def test_recommends_the_cheapest_size_that_fits() -> None:
    assert plan(Serving(model="qwen3-0.6b"), None).hardware.startswith("Standard_NC4as_T4_v3")
    assert plan(Serving(model="qwen3-14b"), None).hardware.startswith("Standard_NC24ads_A100_v4")
    big = plan(Serving(model="qwen3-32b", context=32768, concurrency=16), None)
    assert big.fits and big.tensor_parallel > 1


def test_a_plan_that_cannot_fit_says_why_and_every_suggestion_fits() -> None:
    serving = Serving(model="qwen3-8b", context=32768, concurrency=8)
    hardware = gpu_box("l4")
    result = plan(serving, hardware)
    assert not result.fits
    assert result.reason
    assert result.suggestions
    for suggestion in result.suggestions:
        key, value = suggestion.change.split("=")
        if key == "gpu":
            trial = plan(serving, gpu_box(value))
        elif key == "tensor_parallel":
            trial = plan(serving.model_copy(update={key: int(value)}), gpu_box("l4", count=int(value)))
        else:
            update = {key: int(value) if value.isdigit() else value}
            trial = plan(Serving.model_validate(serving.model_dump() | update), hardware)
        assert trial.fits, suggestion


def test_context_beyond_the_model_maximum_does_not_fit() -> None:
    result = plan(Serving(model="phi-4", context=32768), gpu_box("h100-80gb"))
    assert not result.fits and "16384" in (result.reason or "")


def test_prequantized_checkpoint_is_required() -> None:
    result = plan(Serving(model="phi-4-mini-instruct", quantization="awq"), gpu_box("l4"))
    assert not result.fits and "weights_repo" in (result.reason or "")
    given = plan(Serving(model="phi-4-mini-instruct", quantization="awq", weights_repo="me/phi-awq"), gpu_box("l4"))
    assert given.fits and "me/phi-awq" in given.runtime_args


def test_inline_architecture_for_a_model_outside_the_catalog() -> None:
    arch = ModelArchitecture(
        params_b=1.5,
        hidden_size=2048,
        intermediate_size=5632,
        layers=22,
        attention_heads=32,
        kv_heads=4,
        head_dim=64,
        vocab_size=32000,
        max_context=2048,
    )
    result = plan(Serving(model="TinyLlama/TinyLlama-1.1B-Chat-v1.0", architecture=arch, context=2048), gpu_box("t4"))
    assert result.fits and result.kv_bytes_per_token == 2 * 22 * 4 * 64 * 2


@pytest.mark.parametrize(
    ("serving", "hardware", "fragment"),
    [
        (Serving(model="phi-5"), gpu_box("l4"), "model: unknown model 'phi-5'"),
        (Serving(model="qwen3-8b"), gpu_box("h300"), "hardware.gpu.model: unknown GPU or VM size 'h300'"),
        (Serving(model="qwen3-8b", runtime="ollama"), gpu_box("jetson-orin-64gb"), "hardware.cpu_arch"),
    ],
)
def test_unknown_references_are_clear_errors(serving: Serving, hardware: Hardware, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        plan(serving, hardware, source="fleet.yaml")
    assert fragment in str(info.value)
    assert str(info.value).startswith("fleet.yaml: ")


def test_jetson_unified_memory_plans_in_ram() -> None:
    result = plan(Serving(model="qwen3-8b", runtime="ollama"), gpu_box("jetson-orin-64gb", arch="arm64", memory_gib=64))
    assert result.fits
    assert any("estimate" in note for note in result.notes)


@pytest.mark.parametrize(
    ("context", "measured_kv_tokens"),
    [
        # vLLM memory-profiling logs, Llama-3.1-8B-Instruct bf16 on one RTX 3090 at utilization 0.9
        # with max_num_batched_tokens = max_model_len (vllm-project/vllm#10517): "GPU blocks: 1952"
        # at 20,000 tokens; "maximum number of tokens that can be stored in KV cache (23648)" at 29,000.
        (20000, 1952 * 16),
        (29000, 23648),
    ],
)
def test_kv_tokens_agree_with_real_vllm_measurements(context: int, measured_kv_tokens: int) -> None:
    serving = Serving(model="llama-3.1-8b-instruct", context=context, concurrency=1, max_num_batched_tokens=context)
    result = plan(serving, gpu_box("rtx-3090", memory_gib=64))
    assert result.weights_gib == pytest.approx(14.99, abs=0.05)  # "Loading model weights took 14.9888 GB"
    assert result.kv_tokens == pytest.approx(measured_kv_tokens, rel=0.05)
    assert result.fits is (context <= measured_kv_tokens)  # vLLM refused to start at 29,000


def test_gemma3_on_llamacpp_plans_the_sliding_window_cache_llama_cpp_allocates() -> None:
    """llama.cpp b11434 gives each slot's sliding-window cache the window plus one micro-batch
    (n_ubatch 512, common/common.h 457), padded to 256 cells (src/llama-kv-cache-iswa.cpp 71-73),
    not the window alone: the plan (and the rollout's plan gate, which compares llama-server's
    `llama_kv_cache: size` lines with it) was 27% short for Gemma 3, so healthy boxes would roll back."""
    context, slots = 8192, 4
    result = plan(Serving(model="gemma-3-4b-it", runtime="llamacpp", context=context, concurrency=slots), gpu_box("l4"))
    assert result.fits
    layers, pattern, kv_heads, head_dim, window = 34, 6, 4, 256, 1024  # google/gemma-3-4b-it config.json
    swa_cells = -(-min(context, window + 512) // 256) * 256
    full = layers // pattern
    per_layer_token = 2 * kv_heads * head_dim * 2  # K and V, f16
    expected = slots * per_layer_token * (full * context + (layers - full) * swa_cells)
    assert result.kv_bytes_per_token * result.kv_tokens == pytest.approx(expected, rel=0.001)
