"""Properties of planning models resolved from config.json files (hypothesis).

The configs are the real ones the fake Hub serves (tests/data/hub) with fields replaced, dropped
or corrupted at random: whatever the Hub serves, reading it gives numbers or one ConfigProblem
naming a key, and planning those numbers gives a Plan or an InputError, never a crash.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_deploy.errors import InputError
from slm_deploy.planner import plan
from slm_deploy.resolve.config import ConfigProblem, Tensor, read_checkpoint
from slm_deploy.spec import GpuAttachment, Hardware, Serving
from tests.fakehub import decoder_tensors

DATA = Path(__file__).parent / "data" / "hub"
CONFIGS = [json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))]
KEYS = sorted({k for c in CONFIGS for k in c} | {k for c in CONFIGS for k in (c.get("text_config") or {})} | {
    "num_key_value_heads", "head_dim", "layer_types", "sliding_window_pattern", "kv_lora_rank", "qk_rope_head_dim",
    "moe_intermediate_size", "num_experts_per_tok", "quantization_config", "use_sliding_window", "multi_query",
})  # fmt: skip
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=300_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.sampled_from(["full_attention", "sliding_attention", "linear_attention", "mamba", 3, None]), max_size=80),
    st.dictionaries(
        st.sampled_from(["quant_method", "bits", "config_groups", "load_in_8bit"]),
        st.one_of(st.text(max_size=20), st.integers(-2, 16), st.none()),
        max_size=3,
    ),
    st.sampled_from(
        [{"quant_method": m, "bits": 4} for m in ("awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors", "hqq")]
    ),
)


@st.composite
def fuzzed_configs(draw: st.DrawFn) -> Any:
    config = json.loads(json.dumps(draw(st.sampled_from(CONFIGS))))
    target = config["text_config"] if "text_config" in config and draw(st.booleans()) else config
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=6)):
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(ANY_VALUE)
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([[], "config", 3, None]))
    return config


HARDWARE = Hardware(cpus=16, memory_gib=128, gpu=GpuAttachment(model="a100-80gb"))


@FAST
@given(fuzzed_configs(), st.sampled_from(["vllm", "ollama"]), st.integers(min_value=1, max_value=200_000))
def test_the_planner_never_crashes_on_a_config_the_hub_could_serve(config: Any, runtime: str, context: int) -> None:
    try:
        checkpoint = read_checkpoint(config, None)
    except ConfigProblem as problem:
        assert problem.field and str(problem)
        return
    serving = Serving(model="someone/model", architecture=checkpoint.arch, context=min(context, checkpoint.arch.max_context))
    try:
        result = plan(serving, HARDWARE)
    except InputError as exc:
        assert str(exc).startswith("spec: ")
        return
    assert result.memory_budget_gib > 0


@FAST
@given(fuzzed_configs(), st.integers(min_value=256, max_value=65_536), st.integers(min_value=2, max_value=8))
def test_more_context_never_allows_more_sequences_for_a_resolved_model(config: Any, context: int, factor: int) -> None:
    try:
        arch = read_checkpoint(config, None).arch
    except ConfigProblem:
        return
    short = min(context, arch.max_context)
    long = min(context * factor, arch.max_context)
    base = Serving(model="someone/model", architecture=arch, context=short)
    a = plan(base, HARDWARE)
    b = plan(base.model_copy(update={"context": long}), HARDWARE)
    assert b.max_concurrent_sequences <= a.max_concurrent_sequences


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=1, max_value=8).map(lambda n: n * 128),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=8),
    st.sampled_from([1, 2, 4]),
)
def test_a_smaller_quantization_never_needs_more_memory(hidden_blocks: int, layers: int, heads: int, kv_div: int) -> None:
    kv_heads = max(1, heads // kv_div) if heads % max(1, heads // kv_div) == 0 else heads
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden_blocks * heads,
        "intermediate_size": hidden_blocks * heads * 3, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": hidden_blocks, "vocab_size": 32000, "max_position_embeddings": 4096,
    }  # fmt: skip
    methods = {
        None: None,
        "fp8": {"quant_method": "fp8"},
        "gptq": {"quant_method": "gptq", "bits": 4},
        "awq": {"quant_method": "awq", "bits": 4},
    }
    sizes: dict[str | None, int] = {}
    for quant, qc in methods.items():
        tensors = {n: Tensor(d, s) for n, (d, s) in decoder_tensors(cfg, quant).items()}
        checkpoint = read_checkpoint({**cfg, **({"quantization_config": qc} if qc else {})}, tensors)
        assert checkpoint.weights_bytes is not None
        sizes[quant] = checkpoint.weights_bytes
        assert checkpoint.params == read_checkpoint(cfg, {n: Tensor(d, s) for n, (d, s) in decoder_tensors(cfg).items()}).params
    assert sizes["awq"] <= sizes["fp8"] <= sizes[None]
    assert sizes["gptq"] <= sizes["fp8"]


GGUF_BASE: dict[str, Any] = {
    "general.architecture": "qwen2",
    "qwen2.block_count": 28,
    "qwen2.context_length": 32768,
    "qwen2.embedding_length": 3584,
    "qwen2.feed_forward_length": 18944,
    "qwen2.attention.head_count": 28,
    "qwen2.attention.head_count_kv": 4,
    "general.file_type": 15,
    "tokenizer.ggml.tokens": 152064,
}  # the metadata of tests/data/hub/qwen2-7b-instruct.json's GGUF fixture (tests/fakehub.gguf_file)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [*GGUF_BASE, "qwen2.attention.sliding_window", "qwen2.attention.key_length", "qwen2.attention.sliding_window_pattern"]
        ),
        ANY_VALUE,
        max_size=4,
    ),
    st.sets(st.sampled_from(sorted(GGUF_BASE)), max_size=2),
    st.integers(min_value=1, max_value=10**13),
)
def test_the_planner_never_crashes_on_gguf_metadata(changes: dict[str, Any], dropped: set[str], params: int) -> None:
    from slm_deploy.resolve.gguf import GgufHeader, GgufProblem, architecture

    metadata = {k: v for k, v in {**GGUF_BASE, **changes}.items() if k not in dropped}
    header = GgufHeader(metadata, {"token_embd.weight": ((params,), 12)})
    try:
        arch, _quant, _name, _notes = architecture(header)
    except GgufProblem as problem:
        assert str(problem)
        return
    with contextlib.suppress(InputError):
        plan(Serving(model="someone/model", architecture=arch, context=min(4096, arch.max_context), runtime="ollama"), HARDWARE)
