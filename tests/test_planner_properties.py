"""Properties that must hold for any model, GPU and workload (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from slm_deploy.catalog import load_catalog
from slm_deploy.errors import InputError
from slm_deploy.planner import GIB, plan, weights_bytes
from slm_deploy.spec import GpuAttachment, Hardware, Quantization, Runtime, Serving

CATALOG = load_catalog()
MODELS = sorted(CATALOG.models)
GPUS = sorted(g for g in CATALOG.gpus if not CATALOG.gpus[g].unified_memory)
VLLM_QUANTS = ["bf16", "fp16", "fp8"]
GGUF_QUANTS = ["fp16", "q8_0", "q5_k_m", "q4_k_m"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def gpu_workloads(draw: st.DrawFn) -> tuple[Serving, Hardware]:
    model = draw(st.sampled_from(MODELS))
    runtime = draw(st.sampled_from(["vllm", "ollama", "llamacpp"]))
    quant = draw(st.sampled_from(VLLM_QUANTS if runtime == "vllm" else GGUF_QUANTS))
    max_ctx = CATALOG.models[model].max_context
    serving = Serving(
        model=model,
        runtime=runtime,
        quantization=quant,
        context=draw(st.integers(min_value=256, max_value=max_ctx)),
        concurrency=draw(st.integers(min_value=1, max_value=64)),
    )
    gpu = draw(st.sampled_from(GPUS))
    count = draw(st.sampled_from([1, 2, 4])) if runtime == "vllm" else 1
    return serving, Hardware(cpus=16, memory_gib=128, gpu=GpuAttachment(model=gpu, count=count))


@FAST
@given(gpu_workloads(), st.integers(min_value=1, max_value=8))
def test_longer_context_never_allows_more_sequences(case: tuple[Serving, Hardware], factor: int) -> None:
    serving, hardware = case
    assert serving.context is not None
    longer_ctx = min(serving.context * (factor + 1), CATALOG.models[serving.model].max_context)
    shorter = plan(serving, hardware)
    longer = plan(serving.model_copy(update={"context": longer_ctx}), hardware)
    assert longer.max_concurrent_sequences <= shorter.max_concurrent_sequences


@FAST
@given(gpu_workloads())
def test_a_plan_that_fits_never_exceeds_the_device(case: tuple[Serving, Hardware]) -> None:
    serving, hardware = case
    result = plan(serving, hardware)
    if result.fits:
        assert result.memory_used_gib <= result.device_memory_gib
        assert result.max_concurrent_sequences >= serving.concurrency
        assert result.kv_tokens >= (serving.context or 0)


@FAST
@given(st.sampled_from(MODELS), st.sampled_from([r for r in Runtime if r is not Runtime.ONNX]))  # onnx: int4 only
def test_a_smaller_quantization_never_needs_more_memory(model: str, runtime: Runtime) -> None:
    arch = CATALOG.models[model]
    order = {
        Runtime.VLLM: [Quantization.BF16, Quantization.FP8, Quantization.AWQ],
        Runtime.OLLAMA: [Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M],
        Runtime.LLAMACPP: [Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M],
    }[runtime]
    sizes = [weights_bytes(arch, q, runtime) for q in order]
    assert sizes == sorted(sizes, reverse=True)
    hardware = Hardware(cpus=8, memory_gib=256)
    if runtime is not Runtime.VLLM:
        used = [plan(Serving(model=model, runtime=runtime, quantization=q), hardware).memory_used_gib for q in order]
        assert used == sorted(used, reverse=True)


junk = st.one_of(
    st.none(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model",
                "runtime",
                "quantization",
                "context",
                "concurrency",
                "kv_cache_dtype",
                "gpu_memory_utilization",
                "tensor_parallel",
                "typo",
            ]
        ),
        junk,
        max_size=5,
    ),
    st.dictionaries(st.sampled_from(["cpus", "memory_gib", "cpu_arch", "gpu", "disk_gib"]), junk, max_size=4),
)
def test_bad_inputs_only_raise_the_clear_errors(serving: dict[str, Any], hardware: dict[str, Any]) -> None:
    serving.setdefault("model", "qwen3-0.6b")
    try:
        result = plan(Serving.model_validate(serving), Hardware.model_validate(hardware))
    except (InputError, ValidationError):
        return
    assert result.memory_used_gib >= 0
    assert result.weights_gib * GIB > 0
