"""What to change when a plan does not fit: quantization, KV dtype, context, concurrency, GPUs, runtime."""

from __future__ import annotations

from dataclasses import replace

from slm_deploy.catalog import Catalog
from slm_deploy.onnx_builds import load_onnx_server
from slm_deploy.planner.evaluate import evaluate
from slm_deploy.planner.memory import QUANT_ORDER, gib, kv_dtype_bytes, model_weights_bytes
from slm_deploy.planner.onnx import ONNX_PROMPT_TOKENS
from slm_deploy.planner.recommend import recommend
from slm_deploy.planner.types import Fit, Request, Suggestion, Target
from slm_deploy.spec import KvCacheDtype, Quantization, Runtime

MIN_SUGGESTED_CONTEXT = 1024


def _largest_fitting_context(req: Request, target: Target) -> int | None:
    """Binary search in steps of 1024 tokens; fewer tokens never need more memory."""
    first = 1
    if req.runtime is Runtime.ONNX:  # shorter contexts are refused whatever the memory (evaluate_onnx)
        first = -(-(load_onnx_server().default_output_tokens + ONNX_PROMPT_TOKENS) // MIN_SUGGESTED_CONTEXT)
    lo, hi = first, req.context // MIN_SUGGESTED_CONTEXT
    if hi < first or not evaluate(replace(req, context=first * MIN_SUGGESTED_CONTEXT), target).fits:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if evaluate(replace(req, context=mid * MIN_SUGGESTED_CONTEXT), target).fits:
            lo = mid
        else:
            hi = mid - 1
    best = lo * MIN_SUGGESTED_CONTEXT
    return best if best < req.context else None


def suggest(req: Request, target: Target, fit: Fit, catalog: Catalog) -> tuple[Suggestion, ...]:
    out: list[Suggestion] = []
    order = QUANT_ORDER[req.runtime]
    if req.runtime is not Runtime.ONNX and req.quant in order:
        current = model_weights_bytes(req.model, req.quant, req.runtime)
        for quant in order:
            if model_weights_bytes(req.model, quant, req.runtime) >= current:
                continue
            trial = evaluate(replace(req, quant=quant), target)
            if trial.fits:
                out.append(Suggestion(f"quantization={quant.value}", f"weights {gib(trial.weights * req.tp)} GiB"))
                break
    smaller_kv = KvCacheDtype.FP8 if req.runtime is Runtime.VLLM else KvCacheDtype.Q8_0
    kv_choice = req.runtime is not Runtime.ONNX  # an ONNX build fixes its KV dtype
    if kv_choice and kv_dtype_bytes(req.kv) > kv_dtype_bytes(smaller_kv) and evaluate(replace(req, kv=smaller_kv), target).fits:
        out.append(Suggestion(f"kv_cache_dtype={smaller_kv.value}", "halves the KV cache"))
    context = _largest_fitting_context(req, target)
    if context is not None:
        out.append(Suggestion(f"context={context}", f"the longest context that fits {req.concurrency} sequences"))
    if 0 < fit.max_seqs < req.concurrency and fit.kv_tokens >= req.context:
        out.append(Suggestion(f"concurrency={fit.max_seqs}", "the most concurrent sequences at this context"))
    if target.gpu is not None and req.runtime is Runtime.VLLM:
        # Tensor parallelism on the GPUs the target has first, then on more of the same GPU.
        candidates = sorted(
            (tp for tp in (1, 2, 4, 8) if tp != req.tp and req.model.arch.attention_heads % tp == 0),
            key=lambda tp: (tp > target.gpu_count, tp),
        )
        for tp in candidates:
            wider = replace(
                target, gpu_count=max(tp, target.gpu_count), vm_size=target.vm_size if tp <= target.gpu_count else None
            )
            if evaluate(replace(req, tp=tp), wider).fits:
                out.append(Suggestion(f"tensor_parallel={tp}", f"{tp} x {target.gpu.id}"))
                break
    if target.gpu is None and req.runtime is Runtime.VLLM:
        for runtime in (Runtime.OLLAMA, Runtime.LLAMACPP):
            if req.model.entry is not None:
                gguf = replace(req, runtime=runtime, quant=Quantization.Q4_K_M, kv=KvCacheDtype.AUTO, tp=1)
                if evaluate(gguf, target).fits:
                    out.append(Suggestion(f"runtime={runtime.value}", "GGUF q4_k_m on the CPU"))
                    break
    bigger = recommend(req, target.host, catalog)
    if bigger is not None and target.gpu is not None and bigger[1].id != target.vm_size:
        out.append(Suggestion(f"gpu={bigger[1].id}", bigger[0].describe()))
    return tuple(out)
