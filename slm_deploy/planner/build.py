"""A sized request -> the Plan the targets read: weights source, runtime flags, container resources."""

from __future__ import annotations

import math

from slm_deploy.planner.evaluate import weights_source
from slm_deploy.planner.gguf import llamacpp_args, ollama_env
from slm_deploy.planner.memory import (
    GIB,
    gib,
    host_reserve_gib,
    kv_sequence_bytes,
    model_download_bytes,
    startup_budget_seconds,
)
from slm_deploy.planner.onnx import onnx_args
from slm_deploy.planner.types import PROBE_PERIOD_S, Fit, Plan, Request, Resources, Suggestion, Target
from slm_deploy.planner.vllm import vllm_args
from slm_deploy.spec import DEFAULT_CPU_BANDWIDTH_GBPS, Runtime


def _resources(req: Request, target: Target, fit: Fit, download: float) -> Resources:
    weights_gib = fit.weights * req.tp / GIB
    host = target.host
    host_cap = max(1, math.floor(host.memory_gib - host_reserve_gib(host.memory_gib)))
    if req.runtime is Runtime.VLLM:
        # Python, torch and the tokenizer need ~6 GiB; loading reads the checkpoint through the
        # page cache, which counts against the container's limit while weights are copied.
        request = math.ceil(6 + 0.25 * weights_gib)
        limit = math.ceil(request + weights_gib)
        cpu = float(min(max(2, host.cpus // 2), 4 + req.tp))
        shm = 2.0 if req.tp == 1 else 8.0
    elif target.gpu is not None and not target.unified:
        request = math.ceil(1 + 0.1 * weights_gib)
        limit = math.ceil(2 + weights_gib)  # the GGUF file is memory-mapped while it loads
        cpu = float(min(max(1, host.cpus // 2), 4))
        shm = 0.5
    else:
        request = limit = math.ceil(fit.used / GIB)
        cpu = float(max(1, host.cpus - 1))
        shm = 0.5
    limit = max(min(limit, host_cap), request)
    budget = startup_budget_seconds(download / GIB)
    return Resources(
        memory_request_gib=request,
        memory_limit_gib=limit,
        cpu_request=cpu,
        gpu_count=req.tp if req.runtime is Runtime.VLLM else (1 if target.gpu is not None else 0),
        shm_gib=shm,
        cache_disk_gib=math.ceil(download * 1.15 / GIB + 1),
        startup_budget_seconds=budget,
        startup_failure_threshold=math.ceil(budget / PROBE_PERIOD_S),
    )


def _decode_estimate(req: Request, target: Target, fit: Fit) -> float:
    if target.gpu is not None:
        bandwidth = target.gpu.bandwidth_gbps * (req.tp if req.runtime is Runtime.VLLM else 1)
    else:
        bandwidth = target.host.memory_bandwidth_gbps or DEFAULT_CPU_BANDWIDTH_GBPS[target.host.cpu_arch]
    per_token = fit.weights * req.tp + kv_sequence_bytes(req.model.arch, req.kv, max(req.context // 2, 1))
    return round(bandwidth * 1e9 / per_token, 1)


def build_plan(req: Request, target: Target, fit: Fit, suggestions: tuple[Suggestion, ...], loaded: int = 1) -> Plan:
    source, _ = weights_source(req)
    if req.runtime is Runtime.ONNX:
        download = float(fit.weights)  # the variant folder is the weights; nothing is converted on load
    else:
        download = float(model_download_bytes(req.model, req.quant, req.runtime))
    resources = _resources(req, target, fit, download)
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if req.runtime is Runtime.VLLM and target.gpu is not None:
        args = vllm_args(req, target, fit, source or req.model.hf_repo)
    elif req.runtime is Runtime.OLLAMA:
        env = ollama_env(req, loaded)
    elif req.runtime is Runtime.LLAMACPP:
        args = llamacpp_args(req, target, max(1, int(resources.cpu_request)))
    elif req.runtime is Runtime.ONNX:
        args = onnx_args(req, target)
    notes = list(fit.notes) + (list(req.model.resolved.notes) if req.model.resolved else [])
    if target.kind == "cpu" or target.unified:
        notes.append("decode speed is an upper-bound estimate from memory bandwidth, not a measurement")
    device_memory = target.gpu.memory_gib if target.gpu else target.host.memory_gib
    return Plan(
        fits=fit.fits,
        reason=fit.reason,
        suggestions=suggestions,
        model=req.model.id,
        hf_repo=req.model.hf_repo,
        weights_source=source or "",
        runtime=req.runtime.value,
        quantization=req.quant.value,
        kv_cache_dtype=req.kv.value,
        context=req.context,
        concurrency=req.concurrency,
        tensor_parallel=req.tp,
        hardware=target.describe(),
        device=(target.gpu.id if target.gpu else f"cpu-{target.host.cpu_arch.value}"),
        device_memory_gib=device_memory,
        memory_budget_gib=gib(fit.budget),
        weights_gib=gib(fit.weights),
        download_gib=gib(download),
        overhead_gib=gib(fit.overhead),
        activation_gib=gib(fit.activation),
        kv_bytes_per_token=round(fit.kv_per_token),
        kv_cache_gib=gib(fit.kv_cache),
        kv_tokens=fit.kv_tokens,
        max_concurrent_sequences=fit.max_seqs,
        memory_used_gib=gib(fit.used),
        runtime_args=args,
        runtime_env=env,
        resources=resources,
        decode_tokens_per_second_estimate=_decode_estimate(req, target, fit),
        notes=tuple(notes),
        model_revision=req.model.resolved.revision if req.model.resolved else "",
    )
