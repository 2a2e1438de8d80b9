"""A model's `config.json` (and its safetensors headers) -> the numbers the planner reads.

Pure: no network. Every field read here is listed, with what happens when it is missing, in
docs/resolve.md; tests/test_resolve.py checks that the page names every key FIELDS and READ_KEYS hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from pydantic import ValidationError

from slm_deploy.catalog import CATALOG_DIR
from slm_deploy.spec import ModelArchitecture, Quantization

# Architectures whose class name does not end in ForCausalLM / LMHeadModel but generate text.
# Multimodal wrappers (…ForConditionalGeneration) qualify when they carry a text model.
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_NOT_CAUSAL = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMaskedLM", "Model")

# Each planner input, the config keys tried in order, and the fallback when all are missing.
FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("hidden_size", ("hidden_size", "n_embd", "d_model"), "refused: the model cannot be sized"),
    ("layers", ("num_hidden_layers", "n_layer", "num_layers"), "refused"),
    ("attention_heads", ("num_attention_heads", "n_head"), "refused"),
    ("kv_heads", ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"), "attention_heads (1 with multi_query)"),
    ("head_dim", ("head_dim", "kv_channels"), "hidden_size / attention_heads"),
    ("intermediate_size", ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"), "4 x hidden_size"),
    ("vocab_size", ("vocab_size", "padded_vocab_size"), "the embedding tensor's rows; else refused"),
    ("max_context", ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"), "refused"),
    ("tie_word_embeddings", ("tie_word_embeddings",), "whether the checkpoint stores lm_head.weight; else false"),
    ("sliding_window", ("sliding_window",), "every layer global"),
)

# Keys read outside FIELDS (layouts, MoE, MLA, quantization), for the documentation check.
READ_KEYS = (
    "architectures", "text_config", "language_config", "llm_config", "model_type", "multi_query", "moe_intermediate_size",
    "num_experts_per_tok", "moe_topk", "use_sliding_window", "sliding_window_pattern", "layer_types", "attention_chunk_size",
    "kv_lora_rank", "qk_rope_head_dim", "quantization_config", "compression_config", "quant_method", "bits", "w_bit",
    "weight_bits", "load_in_8bit", "config_groups", "num_bits",
)  # fmt: skip

# Safetensors dtypes -> bytes per element (safetensors format spec).
DTYPE_BYTES = {
    "F64": 8.0, "I64": 8.0, "U64": 8.0, "F32": 4.0, "I32": 4.0, "U32": 4.0, "F16": 2.0, "BF16": 2.0, "I16": 2.0,
    "U16": 2.0, "I8": 1.0, "U8": 1.0, "BOOL": 1.0, "F8_E4M3": 1.0, "F8_E5M2": 1.0, "F8_E8M0": 1.0, "F4": 0.5,
}  # fmt: skip
# Tensors that hold quantization state, not weights: counted in bytes, never as parameters.
_AUX_SUFFIXES = (
    ".scales", ".qzeros", ".g_idx", ".weight_scale", ".input_scale", ".weight_zero_point", ".weight_g_idx",
    ".weight_shape", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".SCB", ".weight_format",
    ".weight_scale_inv", ".k_scale", ".v_scale",
)  # fmt: skip
_PACKED_SUFFIXES = (".qweight", ".weight_packed")
MAX_DIMENSION = 100_000_000  # larger than any real size, context or vocabulary; guards the arithmetic
MAX_PARAMS = 100_000_000_000_000
_ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention", "attention", "chunked_attention"}
_LOCAL_LAYER_TYPES = {"sliding_attention", "chunked_attention"}


class ConfigProblem(ValueError):
    """A config.json the planner cannot use; `field` names the key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return int(self.numel * DTYPE_BYTES.get(self.dtype, 2.0))


@dataclass(frozen=True)
class Checkpoint:
    """What a repo's files say about the model, ready for the planner."""

    arch: ModelArchitecture
    quantization: Quantization | None  # None: stored in 16 bits
    quant_method: str | None  # quantization_config.quant_method as written
    weights_bytes: int | None  # exact bytes of every tensor; None when no safetensors headers
    params: int
    params_exact: bool
    notes: tuple[str, ...]


def _first(config: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's config: `text_config` of a multimodal wrapper merged over the top level."""
    nested = config.get("text_config") or config.get("language_config") or config.get("llm_config")
    if isinstance(nested, Mapping):
        return {**{k: v for k, v in config.items() if k != "quantization_config"}, **nested}
    return dict(config)


@cache
def config_defaults() -> dict[str, dict[str, Any]]:
    """transformers' defaults per model_type (catalog/config_defaults.yaml)."""
    data = yaml.safe_load((CATALOG_DIR / "config_defaults.yaml").read_text(encoding="utf-8"))
    return {name: dict(entry["defaults"]) for name, entry in (data.get("model_types") or {}).items()}


def with_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    defaults = config_defaults().get(str(cfg.get("model_type") or ""), {})
    return {**defaults, **{k: v for k, v in cfg.items() if v is not None or k not in defaults}}


def check_causal(config: Mapping[str, Any]) -> None:
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not archs:
        return  # older configs name none; the shape fields decide
    names = [str(a) for a in archs]
    if any(n.endswith(_CAUSAL_SUFFIXES) for n in names):
        return
    if any(n.endswith(_NOT_CAUSAL) for n in names):
        raise ConfigProblem("architectures", f"{', '.join(names)} is not a causal language model")


def _int(config: Mapping[str, Any], name: str, keys: tuple[str, ...], required: bool) -> int | None:
    value = _first(config, keys)
    if value is None:
        if required:
            raise ConfigProblem(keys[0], "missing; the planner cannot size the model without it")
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
        or int(value) != value
    ):
        raise ConfigProblem(keys[0], f"expected a positive integer, got {value!r}")
    if value > MAX_DIMENSION:
        raise ConfigProblem(keys[0], f"{int(value)} is beyond any model the planner can size")
    return int(value)


def _bits(value: Any, key: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ConfigProblem(key, f"expected a bit width from 1 to 32, got {value!r}")
    return value


def quantization_of(config: Mapping[str, Any]) -> tuple[Quantization | None, str | None, int]:
    """(planner quantization, quant_method, weight bits) from quantization_config."""
    qc = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(qc, Mapping):
        return None, None, 16
    method = str(qc.get("quant_method") or "").lower()
    bits = _bits(_first(qc, ("bits", "w_bit", "weight_bits")), "quantization_config.bits", 4)
    if method == "awq":
        return Quantization.AWQ, method, bits
    if method in ("gptq", "gptq_marlin", "auto-round", "autoround"):
        return Quantization.GPTQ, method, bits
    if method in ("fp8", "fbgemm_fp8", "modelopt"):
        return Quantization.FP8, method, 8
    if method == "bitsandbytes":
        if qc.get("load_in_8bit"):
            return Quantization.INT8, method, 8
        return Quantization.GPTQ, method, 4
    if method == "compressed-tensors":
        groups = qc.get("config_groups") or {}
        if not isinstance(groups, Mapping):
            raise ConfigProblem("quantization_config.config_groups", "expected a mapping of quantization groups")
        weights = next((g.get("weights") for g in groups.values() if isinstance(g, Mapping) and g.get("weights")), None)
        if not isinstance(weights, Mapping):
            raise ConfigProblem("quantization_config.config_groups", "compressed-tensors config with no weight scheme")
        nbits = _bits(weights.get("num_bits"), "quantization_config.config_groups.weights.num_bits", 8)
        kind = str(weights.get("type") or "int")
        if nbits == 8:
            return (Quantization.FP8 if kind == "float" else Quantization.INT8), method, 8
        return Quantization.GPTQ, method, nbits
    raise ConfigProblem("quantization_config.quant_method", f"{method or 'none'!r} is not a quantization the planner can size")


def _layer_layout(cfg: Mapping[str, Any], layers: int) -> tuple[int, int, int | None, list[str]]:
    """(attention layers, local layers among them, window, notes) from layer_types / sliding_window."""
    notes: list[str] = []
    window = cfg.get("sliding_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or not 0 < window <= MAX_DIMENSION):
        window = None
    if cfg.get("use_sliding_window") is False:
        window = None
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        kinds = [str(t) for t in layer_types[:layers]]
        attention = [k for k in kinds if k in _ATTENTION_LAYER_TYPES]
        local = sum(1 for k in attention if k in _LOCAL_LAYER_TYPES)
        if len(attention) < layers:
            notes.append(
                f"{len(attention)} of {layers} layers hold a KV cache; the others "
                f"({', '.join(sorted(set(kinds) - _ATTENTION_LAYER_TYPES))}) keep a fixed-size state, not counted"
            )
        if window is None:
            window = _int(cfg, "attention_chunk_size", ("attention_chunk_size",), False)
        return len(attention), (local if window else 0), window, notes
    if window is None:
        return layers, 0, None, notes
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and not isinstance(pattern, bool) and 0 < pattern <= MAX_DIMENSION:
        return layers, layers - layers // pattern, window, notes
    if cfg.get("model_type") in ("mistral", "mixtral", "qwen2", "qwen2_moe") or cfg.get("use_sliding_window"):
        if window >= int(_first(cfg, ("max_position_embeddings",)) or 0):
            return layers, 0, None, notes
        return layers, layers, window, notes
    return layers, 0, None, notes


def _pattern_for(attention_layers: int, local: int) -> int | None:
    """The planner's `sliding_window_pattern` (every Nth layer global) closest to `local` local layers,
    rounding towards more global layers (a larger KV cache, never a smaller one)."""
    if local == 0:
        return None
    global_layers = attention_layers - local
    if global_layers == 0:
        return attention_layers + 1  # no global layer at all
    best = 1
    for pattern in range(1, attention_layers + 1):
        if attention_layers // pattern >= global_layers:
            best = pattern
    return best


def _mla_head_dim(cfg: Mapping[str, Any]) -> int | None:
    """Multi-head latent attention caches one latent of kv_lora_rank + rope dims per token and layer."""
    rank = _int(cfg, "kv_lora_rank", ("kv_lora_rank",), False)
    if rank is None:
        return None
    rope = _int(cfg, "qk_rope_head_dim", ("qk_rope_head_dim",), False) or 0
    return math.ceil((rank + rope) / 2)  # the planner stores K and V: 2 x head_dim = latent width


def count_params(tensors: Mapping[str, Tensor], bits: int, quant_method: str | None) -> int:
    params = 0
    for name, tensor in tensors.items():
        if name.endswith(_AUX_SUFFIXES) or ".quant_state" in name:
            continue
        if name.endswith(_PACKED_SUFFIXES) and tensor.dtype in ("I32", "U32"):
            params += tensor.numel * (32 // max(bits, 1))
        elif quant_method == "bitsandbytes" and bits == 4 and tensor.dtype == "U8" and name.endswith(".weight"):
            params += tensor.numel * 2
        else:
            params += tensor.numel
    return params


def estimate_params(
    hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, inter: int, vocab: int, tied: bool
) -> int:
    attention = hidden * head_dim * (heads * 2 + kv_heads * 2)
    mlp = 3 * hidden * inter
    return layers * (attention + mlp + 2 * hidden) + vocab * hidden * (1 if tied else 2) + hidden


def read_checkpoint(config: Mapping[str, Any], tensors: Mapping[str, Tensor] | None) -> Checkpoint:
    """Numbers for the planner from config.json and, when given, the safetensors tensor headers."""
    if not isinstance(config, Mapping):
        raise ConfigProblem("config.json", "not a JSON object")
    check_causal(config)
    cfg = with_defaults(text_config(config))
    quant, method, bits = quantization_of(config)
    notes: list[str] = []
    hidden = _int(cfg, "hidden_size", FIELDS[0][1], True)
    layers = _int(cfg, "layers", FIELDS[1][1], True)
    heads = _int(cfg, "attention_heads", FIELDS[2][1], True)
    assert hidden and layers and heads
    kv_heads = _int(cfg, "kv_heads", FIELDS[3][1], False) or (1 if cfg.get("multi_query") else heads)
    head_dim = _int(cfg, "head_dim", FIELDS[4][1], False) or hidden // heads
    inter = _int(cfg, "intermediate_size", FIELDS[5][1], False)
    moe_inter = _int(cfg, "moe_intermediate_size", ("moe_intermediate_size",), False)
    top_k = _int(cfg, "num_experts_per_tok", ("num_experts_per_tok", "moe_topk"), False)
    if moe_inter and top_k:
        inter = max(inter or 0, moe_inter * top_k)  # activations of the experts one token visits
    if inter is None:
        inter = 4 * hidden
        notes.append("intermediate_size missing; assumed 4 x hidden_size")
    vocab = _int(cfg, "vocab_size", FIELDS[6][1], False)
    if vocab is None and tensors:
        embed = next((t for n, t in tensors.items() if n.endswith("embed_tokens.weight") or n.endswith("wte.weight")), None)
        vocab = embed.shape[0] if embed and embed.shape else None
    if vocab is None:
        raise ConfigProblem("vocab_size", "missing; the planner cannot size the logits without it")
    context = _int(cfg, "max_context", FIELDS[7][1], True)
    assert context
    tied = cfg.get("tie_word_embeddings")
    if tensors:
        tied = not any(n == "lm_head.weight" or n.endswith(".lm_head.weight") for n in tensors)
    tied = bool(tied) if tied is not None else False
    mla = _mla_head_dim(cfg)
    if mla is not None:
        kv_heads, head_dim = 1, mla
        notes.append("multi-head latent attention: one latent per token and layer in the KV cache")
    if heads % kv_heads:
        raise ConfigProblem("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads}")
    attention_layers, local, window, layout_notes = _layer_layout(cfg, layers)
    notes += layout_notes
    if attention_layers == 0:
        raise ConfigProblem("layer_types", "no attention layer: a state-space model the planner cannot size")
    pattern = _pattern_for(attention_layers, local)
    if window is not None and window > MAX_DIMENSION:
        window, pattern = None, None
    if tensors:
        weights_bytes: int | None = sum(t.nbytes for t in tensors.values())
        params = count_params(tensors, bits, method)
        exact = True
    else:
        weights_bytes = None
        params = estimate_params(hidden, layers, heads, kv_heads, head_dim, inter, vocab, tied)
        exact = False
        notes.append("no safetensors headers: parameter count estimated from config.json")
    if params > MAX_PARAMS:
        raise ConfigProblem("config.json", f"{params} parameters is beyond any model the planner can size")
    try:
        arch = ModelArchitecture(
            params_b=max(params, 1) / 1e9,
            hidden_size=hidden,
            intermediate_size=inter,
            layers=attention_layers,
            attention_heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            max_context=context,
            tie_word_embeddings=tied,
            sliding_window=window if pattern else None,
            sliding_window_pattern=pattern,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigProblem(".".join(str(p) for p in first["loc"]) or "config.json", first["msg"]) from None
    return Checkpoint(arch, quant, method, weights_bytes, params, exact, tuple(notes))
