"""vLLM on GPUs: the memory vLLM's V1 engine reserves (per release profile) and its `vllm serve` flags."""

from __future__ import annotations

import math

from slm_deploy.catalog import Catalog
from slm_deploy.errors import InputError
from slm_deploy.planner.memory import CUDA_CONTEXT_GIB, GIB, gib, kv_sequence_bytes, model_weights_bytes
from slm_deploy.planner.types import Fit, Request, Target, VllmProfile
from slm_deploy.spec import KvCacheDtype, Quantization

VLLM_BLOCK_TOKENS = 16


VLLM_PROFILES = {
    "0.11": VllmProfile(
        version="0.11",
        source="vllm v0.11.0 vllm/v1/worker/gpu_worker.py determine_available_memory; startup logs on A100/H100/RTX 3090",
        non_torch_gib=0.2,
        non_torch_tp_gib=0.6,
        outside_budget_gib=1.0,
        batched_tokens_large_gpu=8192,
        batched_tokens=2048,
        large_gpu_gib=70.0,
        logits_copies=3,
    ),
}


def vllm_profile(catalog: Catalog) -> VllmProfile:
    """The profile of the vLLM release the catalog's `vllm` image pins."""
    tag = catalog.images["vllm"].tag
    version = ".".join(tag.lstrip("v").split(".")[:2])
    if version not in VLLM_PROFILES:
        raise InputError(
            "images.yaml",
            "images.vllm.tag",
            f"vLLM {tag} has no reviewed planner profile (known: {', '.join(sorted(VLLM_PROFILES))}); "
            "add one to slm_deploy/planner/vllm.py VLLM_PROFILES",
        )
    return VLLM_PROFILES[version]


def evaluate_vllm(req: Request, target: Target) -> Fit:
    assert target.gpu is not None
    arch = req.model.arch
    total = target.gpu.memory_gib * GIB
    budget = total * req.util
    weights = model_weights_bytes(req.model, req.quant, req.runtime) / req.tp
    profile = req.vllm
    overhead = (profile.non_torch_gib + (profile.non_torch_tp_gib if req.tp > 1 else 0.0)) * GIB
    large = target.gpu.memory_gib >= profile.large_gpu_gib
    batched = req.batched_tokens or (profile.batched_tokens_large_gpu if large else profile.batched_tokens)
    batched = max(batched, req.concurrency)
    activation = batched * (3 * arch.intermediate_size + 4 * arch.hidden_size) * 2 / req.tp
    activation += req.concurrency * arch.vocab_size * 4 * profile.logits_copies
    kv_memory = budget - weights - overhead - activation
    seq_bytes = kv_sequence_bytes(arch, req.kv, req.context, req.tp)
    per_token = seq_bytes / req.context
    kv_tokens = int(kv_memory // (VLLM_BLOCK_TOKENS * per_token)) * VLLM_BLOCK_TOKENS if kv_memory > 0 else 0
    max_seqs = kv_tokens // req.context
    notes = []
    if req.quant is Quantization.BF16 and target.gpu.compute_capability < 8.0:
        notes.append(f"{target.gpu.id} has no bf16 support; vLLM serves the model in fp16 (--dtype half)")
    reason = None
    headroom = total - budget
    if headroom < profile.outside_budget_gib * GIB:
        limit = 1 - profile.outside_budget_gib / target.gpu.memory_gib
        reason = (
            f"gpu_memory_utilization {req.util:g} leaves {gib(headroom)} GiB outside vLLM's budget; the CUDA "
            f"context and CUDA graphs need {profile.outside_budget_gib:g} GiB "
            f"(use at most {math.floor(limit * 100) / 100:g})"
        )
    elif kv_memory <= 0:
        reason = (
            f"weights ({gib(weights)} GiB per GPU) plus overhead and activations ({gib(overhead + activation)} GiB) "
            f"exceed vLLM's budget of {gib(budget)} GiB ({req.util:g} x {target.gpu.memory_gib:g} GiB)"
        )
    elif kv_tokens < req.context:
        reason = f"the KV cache holds {kv_tokens} tokens, less than one request of {req.context} tokens (vLLM refuses to start)"
    elif max_seqs < req.concurrency:
        reason = (
            f"the KV cache holds {kv_tokens} tokens: {max_seqs} concurrent sequences of {req.context} tokens, "
            f"fewer than the {req.concurrency} requested"
        )
    kv_cache = max(kv_memory, 0.0)
    used = budget + CUDA_CONTEXT_GIB * GIB
    return Fit(
        reason is None,
        reason,
        budget,
        weights,
        overhead,
        activation,
        per_token,
        kv_cache,
        kv_tokens,
        max_seqs,
        used,
        batched,
        tuple(notes),
    )


def vllm_args(req: Request, target: Target, fit: Fit, source: str) -> tuple[str, ...]:
    assert target.gpu is not None
    # Arguments to `vllm serve`, which takes the model as its first, positional argument.
    args = [
        source.removeprefix("hf://"),
        "--served-model-name",
        req.model.id,
        "--max-model-len",
        str(req.context),
        "--max-num-seqs",
        str(req.concurrency),
        "--max-num-batched-tokens",
        str(fit.batched_tokens),
        "--gpu-memory-utilization",
        f"{req.util:g}",
        "--tensor-parallel-size",
        str(req.tp),
    ]
    found = req.model.resolved
    if found is not None and found.kind == "hf":
        args += ["--revision", found.revision]
    if found is not None and found.quantization is not None:
        # vLLM reads quantization_config and dtype from the checkpoint (and picks Marlin itself);
        # a flag that disagrees is an error.
        pass
    elif req.quant in (Quantization.FP8, Quantization.AWQ, Quantization.GPTQ):
        method = req.quant.value
        # Naming plain awq/gptq forces vLLM's slow kernels; the Marlin ones need compute capability 8.0+.
        if req.quant in (Quantization.AWQ, Quantization.GPTQ) and target.gpu.compute_capability >= 8.0:
            method += "_marlin"
        args += ["--quantization", method]
    if found is not None and found.quantization is not None:
        pass
    elif req.quant is Quantization.FP16 or (req.quant is Quantization.BF16 and target.gpu.compute_capability < 8.0):
        args += ["--dtype", "half"]
    elif req.quant is Quantization.BF16:
        args += ["--dtype", "bfloat16"]
    if req.kv is KvCacheDtype.FP8:
        args += ["--kv-cache-dtype", "fp8"]
    return tuple(args)
