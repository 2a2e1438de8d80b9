"""The memory arithmetic every runtime family shares: weights, KV cache, host reserve, startup budget.

All arithmetic is in bytes; GiB = 2**30 bytes. The formulas and their sources are in the package
docstring (slm_deploy/planner/__init__.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slm_deploy.planner.types import Fit, ModelInfo, Request, Target
from slm_deploy.spec import KvCacheDtype, ModelArchitecture, Quantization, Runtime

GIB = 1024**3

# Weights: bits per weight of the quantized linear layers.
LINEAR_BITS = {
    Quantization.BF16: 16.0,
    Quantization.FP16: 16.0,
    Quantization.FP8: 8.0,
    Quantization.INT8: 8.0,
    Quantization.AWQ: 4 + 16 / 128 + 4 / 128,
    Quantization.GPTQ: 4 + 16 / 128 + 4 / 128,
}
# GGUF: average bits per weight of the whole file (llama.cpp tools/quantize).
GGUF_BITS = {
    Quantization.FP16: 16.0,
    Quantization.Q8_0: 8.5,
    Quantization.Q5_K_M: 5.70,
    Quantization.Q4_K_M: 4.89,
}
# Smallest last: the order in which the planner suggests a smaller quantization.
QUANT_ORDER = {
    Runtime.VLLM: (Quantization.BF16, Quantization.FP8, Quantization.INT8, Quantization.AWQ, Quantization.GPTQ),
    Runtime.OLLAMA: (Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M),
    Runtime.LLAMACPP: (Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M),
    Runtime.ONNX: (Quantization.INT4,),
}
PREQUANTIZED = (Quantization.AWQ, Quantization.GPTQ, Quantization.INT8)

KV_BYTES = {
    KvCacheDtype.FP16: 2.0,
    KvCacheDtype.BF16: 2.0,
    KvCacheDtype.FP8: 1.0,
    KvCacheDtype.Q8_0: 34 / 32,
    KvCacheDtype.Q4_0: 18 / 32,
}


CUDA_CONTEXT_GIB = 0.5
GGUF_UBATCH = 512
GGUF_RUNTIME_GIB = 0.25
GGUF_GPU_HEADROOM = 0.95
HOST_RESERVE_MIN_GIB = 1.5
HOST_RESERVE_FRACTION = 0.10
STARTUP_MIN_S, STARTUP_BASE_S, STARTUP_PER_GIB_S, STARTUP_MAX_S = 1800, 900, 18, 10800


def embedding_params(arch: ModelArchitecture) -> int:
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)


def weights_bytes(arch: ModelArchitecture, quant: Quantization, runtime: Runtime) -> int:
    params = arch.params_b * 1e9
    if runtime is not Runtime.VLLM:
        return int(params * GGUF_BITS[quant] / 8)
    embed = min(embedding_params(arch), params)
    return int((params - embed) * LINEAR_BITS[quant] / 8 + embed * 2)


def download_bytes(arch: ModelArchitecture, quant: Quantization, runtime: Runtime) -> int:
    """fp8 is quantized online from the bf16 checkpoint, so it downloads the bf16 weights."""
    if runtime is Runtime.ONNX:
        raise ValueError("onnx download size depends on the variant: use onnx_variant")
    if runtime is Runtime.VLLM and quant is Quantization.FP8:
        return weights_bytes(arch, Quantization.BF16, runtime)
    return weights_bytes(arch, quant, runtime)


def stored_weights_bytes(model: ModelInfo, quant: Quantization, runtime: Runtime) -> int | None:
    """The exact bytes a resolved checkpoint holds, when it is served as stored; else None."""
    found = model.resolved
    if found is None or found.weights_bytes is None:
        return None
    if found.kind in ("ollama", "gguf"):
        return found.weights_bytes if runtime is not Runtime.VLLM and quant is found.quantization else None
    if quant is found.quantization or (found.quantization is None and quant in (Quantization.BF16, Quantization.FP16)):
        return found.weights_bytes
    return None


def model_weights_bytes(model: ModelInfo, quant: Quantization, runtime: Runtime) -> int:
    stored = stored_weights_bytes(model, quant, runtime)
    return stored if stored is not None else weights_bytes(model.arch, quant, runtime)


def model_download_bytes(model: ModelInfo, quant: Quantization, runtime: Runtime) -> int:
    if runtime is Runtime.VLLM and quant is Quantization.FP8 and (model.resolved is None or model.resolved.quantization is None):
        return model_weights_bytes(model, Quantization.BF16, runtime)  # online fp8 downloads the 16-bit checkpoint
    return model_weights_bytes(model, quant, runtime)


def kv_dtype_bytes(kv: KvCacheDtype) -> float:
    return KV_BYTES.get(kv, 2.0)  # auto: the 16-bit model dtype (vLLM) or f16 (GGUF)


def global_layers(arch: ModelArchitecture) -> int:
    if arch.sliding_window_pattern is None:
        return arch.layers
    return arch.layers // arch.sliding_window_pattern


def kv_layer_token_bytes(arch: ModelArchitecture, kv: KvCacheDtype, tp: int = 1) -> float:
    return 2 * math.ceil(arch.kv_heads / tp) * arch.head_dim * kv_dtype_bytes(kv)


# llama.cpp (b11434) sizes each sequence's sliding-window cache as the window plus one micro-batch,
# padded to 256 cells: src/llama-kv-cache-iswa.cpp 71-73, `GGML_PAD(std::min(size_base,
# hparams.n_swa*(unified ? n_seq_max : 1) + n_ubatch), 256)` (llama-server: one stream per slot).
LLAMACPP_SWA_PAD = 256


def llamacpp_swa_cells(arch: ModelArchitecture, context: int) -> int | None:
    """Cells of one slot's sliding-window cache in llama.cpp; None for a model without one."""
    if arch.sliding_window is None or global_layers(arch) == arch.layers:
        return None
    cells = min(context, arch.sliding_window + GGUF_UBATCH)
    return -(-cells // LLAMACPP_SWA_PAD) * LLAMACPP_SWA_PAD


def kv_sequence_bytes(
    arch: ModelArchitecture, kv: KvCacheDtype, context: int, tp: int = 1, swa_cells: int | None = None
) -> float:
    """KV bytes one sequence of `context` tokens holds on one GPU. A sliding-window layer holds the
    window (vLLM), or `swa_cells` where the runtime allocates more (llama.cpp: llamacpp_swa_cells)."""
    per_layer = kv_layer_token_bytes(arch, kv, tp)
    full = global_layers(arch)
    local = arch.layers - full
    window = swa_cells if swa_cells is not None else min(context, arch.sliding_window or context)
    return per_layer * (full * context + local * window)


def startup_budget_seconds(download_gib: float) -> int:
    return int(min(STARTUP_MAX_S, max(STARTUP_MIN_S, STARTUP_BASE_S + STARTUP_PER_GIB_S * download_gib)))


def host_reserve_gib(memory_gib: float) -> float:
    return max(HOST_RESERVE_MIN_GIB, HOST_RESERVE_FRACTION * memory_gib)


def gib(value: float) -> float:
    return round(value / GIB, 2)


def device_budget(target: Target, runtime_gib: float, *, unified_on_host: bool = True) -> tuple[float, float, str]:
    """(budget, overhead, where) for a runtime that loads everything onto one device or the host.

    A discrete GPU: its memory with 5% headroom, less the CUDA context. The host (or, when
    `unified_on_host`, a unified-memory GPU, capped by its memory): RAM less the host's reserve,
    less the runtime's own `runtime_gib` and, unified, the CUDA context.
    """
    if target.gpu is not None and not (unified_on_host and target.unified):
        budget = target.gpu.memory_gib * GIB * GGUF_GPU_HEADROOM
        where = f"{target.gpu.id} ({target.gpu.memory_gib:g} GiB, {GGUF_GPU_HEADROOM:.0%} usable)"
        return budget, CUDA_CONTEXT_GIB * GIB, where
    memory = target.host.memory_gib
    if target.unified and target.gpu is not None:
        memory = min(memory, target.gpu.memory_gib)
    budget = (memory - host_reserve_gib(memory)) * GIB
    overhead = (runtime_gib + (CUDA_CONTEXT_GIB if target.unified else 0.0)) * GIB
    return budget, overhead, f"{gib(budget)} GiB of RAM left after the host's reserve"


@dataclass(frozen=True)
class Resident:
    """A runtime that loads weights and buffers and allocates each sequence's whole KV cache up
    front (Ollama, llama.cpp, ONNX Runtime GenAI): what is left for sequences, and the Fit."""

    budget: float
    weights: float
    activation: float
    overhead: float
    seq_bytes: float  # one sequence's KV cache at the full context
    per_token: float

    @property
    def free(self) -> float:
        return self.budget - self.weights - self.activation - self.overhead

    @property
    def max_seqs(self) -> int:
        return max(int(self.free // self.seq_bytes), 0) if self.free > 0 else 0

    def overflow(self, where: str) -> str | None:
        """Why nothing is left for a sequence, or None."""
        if self.free > 0:
            return None
        return f"weights ({gib(self.weights)} GiB) and buffers ({gib(self.activation + self.overhead)} GiB) exceed {where}"

    def kv_cache(self, req: Request) -> float:
        return self.seq_bytes * req.concurrency

    def fit(self, req: Request, reason: str | None, batched_tokens: int, notes: tuple[str, ...] = ()) -> Fit:
        kv_cache = self.kv_cache(req)
        used = self.weights + self.activation + self.overhead + kv_cache
        return Fit(
            reason is None,
            reason,
            self.budget,
            self.weights,
            self.overhead,
            self.activation,
            self.per_token,
            kv_cache,
            req.context * req.concurrency,
            self.max_seqs,
            used,
            batched_tokens,
            notes,
        )
