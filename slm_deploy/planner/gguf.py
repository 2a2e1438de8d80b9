"""Ollama and llama.cpp (GGUF): full offload or host RAM, a slot per sequence, their flags and environment."""

from __future__ import annotations

from slm_deploy.planner.memory import (
    GGUF_RUNTIME_GIB,
    GGUF_UBATCH,
    Resident,
    device_budget,
    gib,
    kv_sequence_bytes,
    llamacpp_swa_cells,
    model_weights_bytes,
)
from slm_deploy.planner.types import Fit, Request, Target
from slm_deploy.spec import KvCacheDtype, Runtime

GGUF_KV_NAME = {KvCacheDtype.FP16: "f16", KvCacheDtype.Q8_0: "q8_0", KvCacheDtype.Q4_0: "q4_0"}


def evaluate_gguf(req: Request, target: Target) -> Fit:
    arch = req.model.arch
    weights = float(model_weights_bytes(req.model, req.quant, req.runtime))
    total_context = req.context * req.concurrency
    compute = GGUF_UBATCH * 4.0 * (2 * arch.intermediate_size + arch.attention_heads * total_context)
    swa = llamacpp_swa_cells(arch, req.context) if req.runtime is Runtime.LLAMACPP else None
    seq_bytes = kv_sequence_bytes(arch, req.kv, req.context, swa_cells=swa)
    budget, overhead, where = device_budget(target, GGUF_RUNTIME_GIB)
    if req.share < 1.0:
        budget *= req.share
        where = f"its {req.share:.0%} share of {where}"
    room = Resident(budget, weights, compute, overhead, seq_bytes, seq_bytes / req.context)
    free, max_seqs, kv_cache = room.free, room.max_seqs, room.kv_cache(req)
    reason = room.overflow(where)
    if reason is None and max_seqs < req.concurrency:
        reason = (
            f"{req.concurrency} slots of {req.context} tokens need {gib(kv_cache)} GiB of KV cache; "
            f"{gib(free)} GiB is left on {where} ({max_seqs} slots)"
        )
    return room.fit(req, reason, GGUF_UBATCH)


def gguf_kv_name(kv: KvCacheDtype) -> str:
    return GGUF_KV_NAME.get(kv, "f16")


def ollama_env(req: Request, loaded: int) -> dict[str, str]:
    return {
        "OLLAMA_CONTEXT_LENGTH": str(req.context),
        "OLLAMA_NUM_PARALLEL": str(req.concurrency),
        "OLLAMA_KV_CACHE_TYPE": gguf_kv_name(req.kv),
        # Flash attention is required for a quantized KV cache and shrinks the compute buffer.
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_MAX_LOADED_MODELS": str(loaded),
        "OLLAMA_KEEP_ALIVE": "-1",
    }


def llamacpp_args(req: Request, target: Target, threads: int) -> tuple[str, ...]:
    ngl = req.model.arch.layers + 1 if target.gpu is not None else 0
    kv = gguf_kv_name(req.kv)
    return (
        "-c",
        str(req.context * req.concurrency),  # llama.cpp splits -c evenly across -np slots
        "-np",
        str(req.concurrency),
        "-ngl",
        str(ngl),
        "-t",
        str(threads),
        "-fa",
        "on",
        "--cache-type-k",
        kv,
        "--cache-type-v",
        kv,
    )
