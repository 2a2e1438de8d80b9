"""One Serving on one Target: resolve the request's defaults, check what no memory can fix, size it."""

from __future__ import annotations

from dataclasses import replace

from slm_deploy.planner.gguf import evaluate_gguf
from slm_deploy.planner.memory import PREQUANTIZED
from slm_deploy.planner.onnx import evaluate_onnx, onnx_source
from slm_deploy.planner.types import Fit, ModelInfo, Request, Target, VllmProfile
from slm_deploy.planner.vllm import evaluate_vllm
from slm_deploy.spec import DEFAULT_CONTEXT_CAP, KvCacheDtype, Quantization, Runtime, Serving


def resolve_request(serving: Serving, model: ModelInfo, target: Target, vllm: VllmProfile) -> Request:
    context = serving.context or min(model.arch.max_context, DEFAULT_CONTEXT_CAP)
    tp = serving.tensor_parallel or (target.gpu_count if serving.runtime is Runtime.VLLM and target.gpu_count else 1)
    quant = serving.resolved_quantization
    weights_repo = serving.weights_repo
    if serving.quantization is None and model.resolved is not None and model.resolved.quantization is not None:
        quant = model.resolved.quantization  # a pre-quantized checkpoint is served as it is stored
    if serving.quantization is None and model.entry is not None and serving.runtime is Runtime.VLLM:
        # `model` named one of the catalog entry's pre-quantized repos: serve that checkpoint.
        for key, repo in model.entry.quantized.items():
            if repo.lower() == serving.model.lower():
                quant, weights_repo = Quantization(key), weights_repo or repo
    return Request(
        model,
        serving.runtime,
        quant,
        serving.kv_cache_dtype,
        context,
        serving.concurrency,
        serving.gpu_memory_utilization,
        tp,
        weights_repo,
        vllm,
        serving.max_num_batched_tokens,
    )


def weights_source(req: Request) -> tuple[str | None, str | None]:
    """(source, problem): where the runtime loads weights from, or why it cannot."""
    entry = req.model.entry
    if req.runtime is Runtime.ONNX:
        return onnx_source(req)
    resolved = req.model.resolved
    if resolved is not None:
        if resolved.kind in ("ollama", "gguf") or req.quant is resolved.quantization:
            return resolved.weights_source, None
        if resolved.quantization is not None:
            return None, (
                f"{resolved.repo} stores {resolved.quant_method}-quantized weights; serve it as {resolved.quantization.value} "
                "(drop `quantization`) or pick its unquantized repo"
            )
    if req.runtime is Runtime.OLLAMA:
        assert entry is not None
        if entry.ollama_quants is not None and req.quant not in entry.ollama_quants:
            published = ", ".join(entry.ollama_tag(q) for q in entry.ollama_quants)
            return None, f"ollama.com publishes no {entry.ollama_tag(req.quant)} tag; published: {published}"
        return f"ollama://{entry.ollama_tag(req.quant)}", None
    if req.runtime is Runtime.LLAMACPP:
        assert entry is not None
        return f"hf://{entry.gguf.repo}/{entry.gguf_file(req.quant)}", None
    if req.quant in PREQUANTIZED:
        repo = req.weights_repo or (entry.quantized.get(req.quant.value) if entry else None)  # type: ignore[call-overload]
        if repo is None:
            return None, (
                f"no {req.quant.value} checkpoint of {req.model.id} is in the catalog; "
                "set weights_repo to a pre-quantized Hugging Face repo"
            )
        return f"hf://{repo}", None
    return f"hf://{req.weights_repo or req.model.hf_repo}", None


def _check_static(req: Request, target: Target) -> str | None:
    arch = req.model.arch
    found = req.model.resolved
    if found is not None and found.kind != "hf" and found.quantization is not None and req.quant is not found.quantization:
        return f"{found.ref} holds {found.quantization.value} weights; drop `quantization` or pick the tag or file you want"
    if found is not None and found.kind != "hf" and req.runtime is Runtime.VLLM:
        return f"{found.ref} is a GGUF model; serve it with ollama or llamacpp"
    if req.context > arch.max_context:
        return f"context {req.context} exceeds the model's maximum of {arch.max_context} tokens"
    if target.gpu is not None:
        cc = target.gpu.compute_capability
        if req.runtime is Runtime.VLLM:
            if req.tp > target.gpu_count:
                return f"tensor_parallel {req.tp} needs {req.tp} GPUs; the target has {target.gpu_count}"
            if arch.attention_heads % req.tp:
                return f"tensor_parallel {req.tp} does not divide the model's {arch.attention_heads} attention heads"
            if req.quant is Quantization.FP8 and cc < 8.0:
                return f"fp8 weights need compute capability 8.0 or newer; {target.gpu.id} has {cc:g}"
            if req.kv is KvCacheDtype.FP8 and cc < 8.0:
                return f"an fp8 KV cache needs compute capability 8.0 or newer; {target.gpu.id} has {cc:g}"
            if req.quant in (Quantization.AWQ, Quantization.GPTQ) and cc < 7.5:
                return f"4-bit AWQ/GPTQ kernels need compute capability 7.5 or newer; {target.gpu.id} has {cc:g}"
    elif req.runtime is Runtime.VLLM:
        return "vLLM needs a GPU here; use ollama or llamacpp for CPU-only targets"
    return None


def evaluate(req: Request, target: Target) -> Fit:
    problem = _check_static(req, target)
    if problem is None:
        problem = weights_source(req)[1]
    vllm = req.runtime is Runtime.VLLM and target.gpu is not None
    if req.runtime is Runtime.ONNX:
        fit = evaluate_onnx(req, target)
    else:
        fit = evaluate_vllm(req, target) if vllm else evaluate_gguf(req, target)
    if problem is not None:
        return replace(fit, fits=False, reason=problem)
    return fit
