"""Capacity planner: memory arithmetic that turns a Serving and a Hardware into a Plan.

The Plan says whether the model fits, and carries every size the targets need (runtime flags,
container limits, probe budgets) so neither the bundle generator nor the Pulumi program
recomputes anything. All arithmetic is in bytes; GiB = 2**30 bytes.

Weights
    bf16/fp16: 2 bytes per parameter.
    fp8/int8 (vLLM): linear layers 1 byte per weight; embeddings and lm_head stay 16-bit.
    awq/gptq (4-bit, group size 128): linear layers 4 + 16/128 (fp16 scale) + 4/128 (packed
        zero point) = 4.156 bits per weight; embeddings and lm_head stay 16-bit. This gives
        5.68 GiB for Qwen3-8B-AWQ, the figure KAITO lists.
    GGUF: the average bits per weight llama.cpp's quantize tool reports for the whole file
        (Q8_0 8.50, Q5_K_M 5.70, Q4_K_M 4.89, F16 16.0), applied to every parameter.

KV cache
    bytes per token and layer = 2 (K and V) x kv_heads x head_dim x dtype bytes. A local
    (sliding-window) layer holds at most `sliding_window` tokens of a sequence, so a sequence of
    length L costs  sum over layers of min(L, window or L) x per-layer bytes. kv_bytes_per_token
    is that cost divided by L (less than the full-attention figure for Gemma 3). With tensor
    parallelism each GPU holds ceil(kv_heads / tp) heads.
    dtype bytes: 16-bit 2, fp8 1, GGUF q8_0 34/32, q4_0 18/32 (block size 32 plus an fp16 scale).

vLLM (V1 engine; vllm/v1/worker/gpu_worker.py determine_available_memory). The constants below are a
    VllmProfile per vLLM release (VLLM_PROFILES), chosen by the vllm image tag the catalog pins.
    requested = total_memory x gpu_memory_utilization, per GPU.
    KV memory = requested - weights/tp - non-torch increase - torch activation peak.
    non-torch increase: cuBLAS workspaces and allocator slack, 0.2 GiB; with tp > 1 NCCL and
        custom all-reduce buffers add 0.6 GiB (the "non_torch_memory" figure vLLM logs on
        A100/H100 runs). The CUDA context (~0.5 GiB) and CUDA graphs (~0.5 GiB) live outside
        `requested`, so 1 - gpu_memory_utilization must leave at least 1 GiB.
    activation peak: the profiling run pushes max_num_batched_tokens (T) tokens through the
        model and then samples max_num_seqs (S) rows of logits:
        T x (3 x intermediate + 4 x hidden) x 2 bytes   (gate/up output, activation, residuals)
        + S x vocab x 4 bytes x 3                         (fp32 logits, probs, log-probs)
        T is passed explicitly as --max-num-batched-tokens: vLLM's own default for the API
        server (8192 on GPUs with >= 70 GiB, else 2048).
    GPU KV cache size (tokens) = floor(KV memory / (16 x bytes per token)) x 16 (16-token
        blocks), the number vLLM logs; max concurrency = KV tokens / max_model_len.

Ollama / llama.cpp (GGUF)
    Each of `concurrency` slots gets the full context: KV = concurrency x one sequence.
    compute buffer = n_ubatch (512) x 4 bytes x (2 x intermediate + heads x total context): fp32
        intermediates of one micro-batch, the MLP's and the attention scores over the whole
        KV cache (total context = context x slots, the n_ctx Ollama and llama.cpp allocate).
        Calibrated on an Ollama 0.20 log of a 7B Q4_K_M model (28 heads): 0.30 GiB at 4k and
        1.8 GiB at 32k context (this formula: 0.29 and 1.82). Flash attention can avoid the
        score matrix, but Ollama turns it off where the model or GPU lacks support, so the
        planner keeps it.
    GPU: CUDA context 0.5 GiB; everything must fit in device memory with 5% headroom, fully
        offloaded (-ngl = layers + 1); partial offload is a performance cliff we refuse.
    CPU: the host keeps max(1.5 GiB, 10% of RAM) for the OS and the other services; the
        runtime itself takes 0.25 GiB.

Startup budget (KAITO): max(30 min, 15 min + 18 s per GiB downloaded), capped at 180 min.
Decode estimate: tokens/s <= bandwidth / bytes read per token (weights + one sequence's KV at
    half the context); an upper bound for a single stream, labelled as an estimate.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from slm_deploy.catalog import Catalog, CatalogModel, Gpu, VmSize, load_catalog, nearest
from slm_deploy.errors import InputError
from slm_deploy.onnx_builds import (
    OnnxBuild,
    OnnxVariant,
    load_onnx_builds,
    load_onnx_server,
    onnx_kv_bytes_per_token,
    onnx_weights_bytes,
)
from slm_deploy.spec import (
    DEFAULT_CONTEXT_CAP,
    DEFAULT_CPU_BANDWIDTH_GBPS,
    CpuArch,
    GpuAttachment,
    Hardware,
    KvCacheDtype,
    ModelArchitecture,
    Quantization,
    Runtime,
    Serving,
)

if TYPE_CHECKING:
    from slm_deploy.resolve import ResolvedModel

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
GGUF_KV_NAME = {KvCacheDtype.FP16: "f16", KvCacheDtype.Q8_0: "q8_0", KvCacheDtype.Q4_0: "q4_0"}

VLLM_BLOCK_TOKENS = 16


@dataclass(frozen=True)
class VllmProfile:
    """What one vLLM release reserves besides weights and KV cache, read from its source and logs.

    The planner takes the profile of the vLLM image the catalog pins (images.yaml); bumping that
    image without adding a reviewed profile here is an error, not a silent reuse of old numbers.
    """

    version: str  # major.minor of the vllm/vllm-openai tag
    source: str
    non_torch_gib: float  # cuBLAS workspaces and allocator slack
    non_torch_tp_gib: float  # NCCL and custom all-reduce buffers, tp > 1
    outside_budget_gib: float  # CUDA context + CUDA graphs, outside gpu_memory_utilization
    batched_tokens_large_gpu: int  # API server default max_num_batched_tokens on >= large_gpu_gib
    batched_tokens: int
    large_gpu_gib: float
    logits_copies: int  # fp32 logits, probs, log-probs of max_num_seqs rows in the sampler warm-up


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
            "add one to slm_deploy/planner.py VLLM_PROFILES",
        )
    return VLLM_PROFILES[version]


CUDA_CONTEXT_GIB = 0.5
GGUF_UBATCH = 512
GGUF_RUNTIME_GIB = 0.25
GGUF_GPU_HEADROOM = 0.95
HOST_RESERVE_MIN_GIB = 1.5
HOST_RESERVE_FRACTION = 0.10
STARTUP_MIN_S, STARTUP_BASE_S, STARTUP_PER_GIB_S, STARTUP_MAX_S = 1800, 900, 18, 10800
PROBE_PERIOD_S = 10
MIN_SUGGESTED_CONTEXT = 1024


@dataclass(frozen=True)
class ModelInfo:
    """A catalog model, one described inline in the spec, or one resolved from the Hub or Ollama."""

    id: str
    hf_repo: str
    arch: ModelArchitecture
    entry: CatalogModel | None
    resolved: ResolvedModel | None = None


@dataclass(frozen=True)
class Target:
    """Resolved hardware: per-GPU memory, or the host RAM for CPU-only boxes."""

    kind: str  # "gpu" | "cpu"
    gpu: Gpu | None
    gpu_count: int
    host: Hardware
    vm_size: str | None = None

    @property
    def unified(self) -> bool:
        return self.gpu is not None and self.gpu.unified_memory

    def describe(self) -> str:
        if self.gpu is None:
            return f"CPU {self.host.cpu_arch.value}, {self.host.cpus} cores, {self.host.memory_gib:g} GiB"
        base = f"{self.gpu_count} x {self.gpu.id} ({self.gpu.memory_gib:g} GiB each)"
        return f"{self.vm_size}: {base}" if self.vm_size else base


@dataclass(frozen=True)
class Suggestion:
    change: str
    detail: str


@dataclass(frozen=True)
class Resources:
    memory_request_gib: int
    memory_limit_gib: int
    cpu_request: float
    gpu_count: int
    shm_gib: float
    cache_disk_gib: int
    startup_budget_seconds: int
    startup_failure_threshold: int
    probe_period_seconds: int = PROBE_PERIOD_S


@dataclass(frozen=True)
class Plan:
    fits: bool
    reason: str | None
    suggestions: tuple[Suggestion, ...]
    model: str
    hf_repo: str
    weights_source: str
    runtime: str
    quantization: str
    kv_cache_dtype: str
    context: int
    concurrency: int
    tensor_parallel: int
    hardware: str
    device: str
    device_memory_gib: float
    memory_budget_gib: float
    weights_gib: float
    download_gib: float
    overhead_gib: float
    activation_gib: float
    kv_bytes_per_token: int
    kv_cache_gib: float
    kv_tokens: int
    max_concurrent_sequences: int
    memory_used_gib: float
    runtime_args: tuple[str, ...]
    runtime_env: dict[str, str]
    resources: Resources
    decode_tokens_per_second_estimate: float
    notes: tuple[str, ...] = field(default=())
    model_revision: str = ""  # commit sha (Hub) or manifest digest (Ollama) of a resolved model

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runtime_args"] = list(self.runtime_args)
        data["suggestions"] = [asdict(s) for s in self.suggestions]
        data["notes"] = list(self.notes)
        if not self.model_revision:
            del data["model_revision"]  # catalog models: the output stays what it was
        return data


# ---------------------------------------------------------------------------------------------
# Lookups


def resolve_model(serving: Serving, catalog: Catalog, source: str = "spec", field_name: str = "model") -> ModelInfo:
    entry = catalog.models.get(serving.model) or catalog.model_by_repo(serving.model)
    if entry is not None:
        if serving.architecture is not None:
            raise InputError(source, "architecture", f"{entry.id!r} is a catalog model; drop the inline architecture")
        if serving.runtime is Runtime.ONNX and entry.id not in load_onnx_builds():
            raise InputError(
                source,
                field_name,
                f"{entry.id} has no ONNX Runtime GenAI build in the catalog; "
                f"onnx builds: {', '.join(sorted(load_onnx_builds()))}",
            )
        return ModelInfo(entry.id, entry.hf_repo, entry, entry)
    if serving.runtime is Runtime.ONNX:
        raise InputError(source, "runtime", "onnx needs a catalog model with an ONNX Runtime GenAI build (onnx_models.yaml)")
    if serving.architecture is None:
        from slm_deploy.resolve import is_reference, resolve

        if is_reference(serving.model):
            found = resolve(serving.model, serving.runtime, serving.quantization, source, field_name)
            return ModelInfo(found.model_id, found.repo, found.arch, None, found)
        raise InputError(
            source,
            field_name,
            f"unknown model {serving.model!r}; nearest catalog ids: {nearest(serving.model, list(catalog.models))} "
            "(or a Hugging Face repo owner/name, an Ollama tag name:tag)",
        )
    if not _INLINE_REPO.match(serving.model):
        raise InputError(source, field_name, "a model with an inline architecture must be a Hugging Face repo id (owner/name)")
    if serving.runtime is not Runtime.VLLM:
        raise InputError(source, "runtime", f"{serving.runtime.value} needs a catalog model (it loads GGUF files)")
    model_id = serving.model.split("/", 1)[1].lower()
    return ModelInfo(model_id, serving.model, serving.architecture, None)


_INLINE_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_gpu(name: str, catalog: Catalog, source: str = "--gpu", field_name: str = "gpu") -> tuple[Gpu, int, str | None]:
    """A catalog GPU id (count 1) or an Azure VM size (its GPU model and count)."""
    if name in catalog.gpus:
        return catalog.gpus[name], 1, None
    for vm in catalog.vm_sizes.values():
        if vm.id.lower() == name.lower():
            return catalog.gpus[vm.gpu], vm.gpu_count, vm.id
    known = list(catalog.gpus) + list(catalog.vm_sizes)
    raise InputError(source, field_name, f"unknown GPU or VM size {name!r}; nearest: {nearest(name, known)}")


def hardware_for_vm(vm: VmSize) -> Hardware:
    return Hardware(cpus=vm.vcpus, memory_gib=vm.memory_gib, gpu=GpuAttachment(model=vm.gpu, count=vm.gpu_count))


def resolve_target(hardware: Hardware, catalog: Catalog, source: str = "spec", prefix: str = "hardware") -> Target:
    if hardware.gpu is None:
        return Target("cpu", None, 0, hardware)
    gpu, count, vm = resolve_gpu(hardware.gpu.model, catalog, source, f"{prefix}.gpu.model")
    if gpu.host_arch is not hardware.cpu_arch:
        raise InputError(
            source,
            f"{prefix}.cpu_arch",
            f"{gpu.id} is an {gpu.host_arch.value} device; set cpu_arch: {gpu.host_arch.value}",
        )
    return Target("gpu", gpu, count * hardware.gpu.count, hardware, vm)


# ---------------------------------------------------------------------------------------------
# Arithmetic


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
        raise ValueError("onnx download size depends on the variant: use _onnx_variant")
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


def kv_sequence_bytes(arch: ModelArchitecture, kv: KvCacheDtype, context: int, tp: int = 1) -> float:
    """KV bytes one sequence of `context` tokens holds on one GPU."""
    per_layer = kv_layer_token_bytes(arch, kv, tp)
    full = global_layers(arch)
    local = arch.layers - full
    window = min(context, arch.sliding_window or context)
    return per_layer * (full * context + local * window)


def startup_budget_seconds(download_gib: float) -> int:
    return int(min(STARTUP_MAX_S, max(STARTUP_MIN_S, STARTUP_BASE_S + STARTUP_PER_GIB_S * download_gib)))


def host_reserve_gib(memory_gib: float) -> float:
    return max(HOST_RESERVE_MIN_GIB, HOST_RESERVE_FRACTION * memory_gib)


def _gib(value: float) -> float:
    return round(value / GIB, 2)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class _Request:
    """A Serving with every default resolved, ready for arithmetic."""

    model: ModelInfo
    runtime: Runtime
    quant: Quantization
    kv: KvCacheDtype
    context: int
    concurrency: int
    util: float
    tp: int
    weights_repo: str | None
    vllm: VllmProfile
    batched_tokens: int | None = None
    share: float = 1.0  # fraction of the device budget this instance may use (co-located models)


def _resolve_request(serving: Serving, model: ModelInfo, target: Target, vllm: VllmProfile) -> _Request:
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
    return _Request(
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


def _weights_source(req: _Request) -> tuple[str | None, str | None]:
    """(source, problem): where the runtime loads weights from, or why it cannot."""
    entry = req.model.entry
    if req.runtime is Runtime.ONNX:
        return _onnx_source(req)
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


@dataclass(frozen=True)
class _Fit:
    fits: bool
    reason: str | None
    budget: float
    weights: float
    overhead: float
    activation: float
    kv_per_token: float  # bytes, per GPU, at the requested context
    kv_cache: float
    kv_tokens: int
    max_seqs: int
    used: float
    batched_tokens: int
    notes: tuple[str, ...]


def _check_static(req: _Request, target: Target) -> str | None:
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


def _evaluate(req: _Request, target: Target) -> _Fit:
    problem = _check_static(req, target)
    if problem is None:
        problem = _weights_source(req)[1]
    vllm = req.runtime is Runtime.VLLM and target.gpu is not None
    if req.runtime is Runtime.ONNX:
        fit = _evaluate_onnx(req, target)
    else:
        fit = _evaluate_vllm(req, target) if vllm else _evaluate_gguf(req, target)
    if problem is not None:
        return replace(fit, fits=False, reason=problem)
    return fit


def _evaluate_vllm(req: _Request, target: Target) -> _Fit:
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
            f"gpu_memory_utilization {req.util:g} leaves {_gib(headroom)} GiB outside vLLM's budget; the CUDA "
            f"context and CUDA graphs need {profile.outside_budget_gib:g} GiB "
            f"(use at most {math.floor(limit * 100) / 100:g})"
        )
    elif kv_memory <= 0:
        reason = (
            f"weights ({_gib(weights)} GiB per GPU) plus overhead and activations ({_gib(overhead + activation)} GiB) "
            f"exceed vLLM's budget of {_gib(budget)} GiB ({req.util:g} x {target.gpu.memory_gib:g} GiB)"
        )
    elif kv_tokens < req.context:
        reason = f"the KV cache holds {kv_tokens} tokens, less than one request of {req.context} tokens (vLLM refuses to start)"
    elif max_seqs < req.concurrency:
        reason = (
            f"the KV cache holds {kv_tokens} tokens: {max_seqs} concurrent sequences of {req.context} tokens, "
            f"fewer than the {req.concurrency} requested"
        )
    kv_cache = max(kv_memory, 0.0)
    return _Fit(
        fits=reason is None,
        reason=reason,
        budget=budget,
        weights=weights,
        overhead=overhead,
        activation=activation,
        kv_per_token=per_token,
        kv_cache=kv_cache,
        kv_tokens=kv_tokens,
        max_seqs=max_seqs,
        used=budget + CUDA_CONTEXT_GIB * GIB,
        batched_tokens=batched,
        notes=tuple(notes),
    )


def _evaluate_gguf(req: _Request, target: Target) -> _Fit:
    arch = req.model.arch
    weights = float(model_weights_bytes(req.model, req.quant, req.runtime))
    total_context = req.context * req.concurrency
    compute = GGUF_UBATCH * 4.0 * (2 * arch.intermediate_size + arch.attention_heads * total_context)
    seq_bytes = kv_sequence_bytes(arch, req.kv, req.context)
    if target.gpu is not None and not target.unified:
        budget = target.gpu.memory_gib * GIB * GGUF_GPU_HEADROOM
        overhead = CUDA_CONTEXT_GIB * GIB
        where = f"{target.gpu.id} ({target.gpu.memory_gib:g} GiB, {GGUF_GPU_HEADROOM:.0%} usable)"
    else:
        memory = target.host.memory_gib
        if target.unified and target.gpu is not None:
            memory = min(memory, target.gpu.memory_gib)
        budget = (memory - host_reserve_gib(memory)) * GIB
        overhead = (GGUF_RUNTIME_GIB + (CUDA_CONTEXT_GIB if target.unified else 0.0)) * GIB
        where = f"{_gib(budget)} GiB of RAM left after the host's reserve"
    if req.share < 1.0:
        budget *= req.share
        where = f"its {req.share:.0%} share of {where}"
    free = budget - weights - compute - overhead
    max_seqs = max(int(free // seq_bytes), 0) if free > 0 else 0
    kv_cache = seq_bytes * req.concurrency
    reason = None
    if free <= 0:
        reason = f"weights ({_gib(weights)} GiB) and buffers ({_gib(compute + overhead)} GiB) exceed {where}"
    elif max_seqs < req.concurrency:
        reason = (
            f"{req.concurrency} slots of {req.context} tokens need {_gib(kv_cache)} GiB of KV cache; "
            f"{_gib(free)} GiB is left on {where} ({max_seqs} slots)"
        )
    return _Fit(
        fits=reason is None,
        reason=reason,
        budget=budget,
        weights=weights,
        overhead=overhead,
        activation=compute,
        kv_per_token=seq_bytes / req.context,
        kv_cache=kv_cache,
        kv_tokens=req.context * req.concurrency,
        max_seqs=max_seqs,
        used=weights + compute + overhead + kv_cache,
        batched_tokens=GGUF_UBATCH,
        notes=(),
    )


# ---------------------------------------------------------------------------------------------
# Runtime flags and container resources


def _vllm_args(req: _Request, target: Target, fit: _Fit, source: str) -> tuple[str, ...]:
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


def _gguf_kv_name(kv: KvCacheDtype) -> str:
    return GGUF_KV_NAME.get(kv, "f16")


def _ollama_env(req: _Request, loaded: int) -> dict[str, str]:
    return {
        "OLLAMA_CONTEXT_LENGTH": str(req.context),
        "OLLAMA_NUM_PARALLEL": str(req.concurrency),
        "OLLAMA_KV_CACHE_TYPE": _gguf_kv_name(req.kv),
        # Flash attention is required for a quantized KV cache and shrinks the compute buffer.
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_MAX_LOADED_MODELS": str(loaded),
        "OLLAMA_KEEP_ALIVE": "-1",
    }


def _llamacpp_args(req: _Request, target: Target, threads: int) -> tuple[str, ...]:
    ngl = req.model.arch.layers + 1 if target.gpu is not None else 0
    kv = _gguf_kv_name(req.kv)
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


def _resources(req: _Request, target: Target, fit: _Fit, download: float) -> Resources:
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


def _decode_estimate(req: _Request, target: Target, fit: _Fit) -> float:
    if target.gpu is not None:
        bandwidth = target.gpu.bandwidth_gbps * (req.tp if req.runtime is Runtime.VLLM else 1)
    else:
        bandwidth = target.host.memory_bandwidth_gbps or DEFAULT_CPU_BANDWIDTH_GBPS[target.host.cpu_arch]
    per_token = fit.weights * req.tp + kv_sequence_bytes(req.model.arch, req.kv, max(req.context // 2, 1))
    return round(bandwidth * 1e9 / per_token, 1)


# ---------------------------------------------------------------------------------------------
# Public API


def _build_plan(req: _Request, target: Target, fit: _Fit, suggestions: tuple[Suggestion, ...], loaded: int = 1) -> Plan:
    source, _ = _weights_source(req)
    if req.runtime is Runtime.ONNX:
        download = float(fit.weights)  # the variant folder is the weights; nothing is converted on load
    else:
        download = float(model_download_bytes(req.model, req.quant, req.runtime))
    resources = _resources(req, target, fit, download)
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if req.runtime is Runtime.VLLM and target.gpu is not None:
        args = _vllm_args(req, target, fit, source or req.model.hf_repo)
    elif req.runtime is Runtime.OLLAMA:
        env = _ollama_env(req, loaded)
    elif req.runtime is Runtime.LLAMACPP:
        args = _llamacpp_args(req, target, max(1, int(resources.cpu_request)))
    elif req.runtime is Runtime.ONNX:
        args = _onnx_args(req, target)
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
        memory_budget_gib=_gib(fit.budget),
        weights_gib=_gib(fit.weights),
        download_gib=_gib(download),
        overhead_gib=_gib(fit.overhead),
        activation_gib=_gib(fit.activation),
        kv_bytes_per_token=round(fit.kv_per_token),
        kv_cache_gib=_gib(fit.kv_cache),
        kv_tokens=fit.kv_tokens,
        max_concurrent_sequences=fit.max_seqs,
        memory_used_gib=_gib(fit.used),
        runtime_args=args,
        runtime_env=env,
        resources=resources,
        decode_tokens_per_second_estimate=_decode_estimate(req, target, fit),
        notes=tuple(notes),
        model_revision=req.model.resolved.revision if req.model.resolved else "",
    )


def _largest_fitting_context(req: _Request, target: Target) -> int | None:
    """Binary search in steps of 1024 tokens; fewer tokens never need more memory."""
    first = 1
    if req.runtime is Runtime.ONNX:  # shorter contexts are refused whatever the memory (_evaluate_onnx)
        first = -(-(load_onnx_server().default_output_tokens + ONNX_PROMPT_TOKENS) // MIN_SUGGESTED_CONTEXT)
    lo, hi = first, req.context // MIN_SUGGESTED_CONTEXT
    if hi < first or not _evaluate(replace(req, context=first * MIN_SUGGESTED_CONTEXT), target).fits:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _evaluate(replace(req, context=mid * MIN_SUGGESTED_CONTEXT), target).fits:
            lo = mid
        else:
            hi = mid - 1
    best = lo * MIN_SUGGESTED_CONTEXT
    return best if best < req.context else None


def _suggest(req: _Request, target: Target, fit: _Fit, catalog: Catalog) -> tuple[Suggestion, ...]:
    out: list[Suggestion] = []
    order = QUANT_ORDER[req.runtime]
    if req.runtime is not Runtime.ONNX and req.quant in order:
        current = model_weights_bytes(req.model, req.quant, req.runtime)
        for quant in order:
            if model_weights_bytes(req.model, quant, req.runtime) >= current:
                continue
            trial = _evaluate(replace(req, quant=quant), target)
            if trial.fits:
                out.append(Suggestion(f"quantization={quant.value}", f"weights {_gib(trial.weights * req.tp)} GiB"))
                break
    smaller_kv = KvCacheDtype.FP8 if req.runtime is Runtime.VLLM else KvCacheDtype.Q8_0
    kv_choice = req.runtime is not Runtime.ONNX  # an ONNX build fixes its KV dtype
    if kv_choice and kv_dtype_bytes(req.kv) > kv_dtype_bytes(smaller_kv) and _evaluate(replace(req, kv=smaller_kv), target).fits:
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
            if _evaluate(replace(req, tp=tp), wider).fits:
                out.append(Suggestion(f"tensor_parallel={tp}", f"{tp} x {target.gpu.id}"))
                break
    if target.gpu is None and req.runtime is Runtime.VLLM:
        for runtime in (Runtime.OLLAMA, Runtime.LLAMACPP):
            if req.model.entry is not None:
                gguf = replace(req, runtime=runtime, quant=Quantization.Q4_K_M, kv=KvCacheDtype.AUTO, tp=1)
                if _evaluate(gguf, target).fits:
                    out.append(Suggestion(f"runtime={runtime.value}", "GGUF q4_k_m on the CPU"))
                    break
    bigger = _recommend(req, target.host, catalog)
    if bigger is not None and target.gpu is not None and bigger[1].id != target.vm_size:
        out.append(Suggestion(f"gpu={bigger[1].id}", bigger[0].describe()))
    return tuple(out)


def _recommend(req: _Request, host: Hardware, catalog: Catalog) -> tuple[Target, VmSize] | None:
    """The cheapest catalog VM size that fits: fewest GPUs, then least GPU memory."""

    def cost(vm: VmSize) -> tuple[int, float, int, float]:
        return vm.gpu_count, catalog.gpus[vm.gpu].memory_gib, vm.vcpus, vm.memory_gib

    for vm in sorted(catalog.vm_sizes.values(), key=cost):
        if req.runtime is not Runtime.VLLM and vm.gpu_count > 1:
            continue
        target = Target("gpu", catalog.gpus[vm.gpu], vm.gpu_count, hardware_for_vm(vm), vm.id)
        trial = replace(req, tp=vm.gpu_count if req.runtime is Runtime.VLLM else 1)
        if _evaluate(trial, target).fits:
            return target, vm
    return None


def plan(
    serving: Serving,
    hardware: Hardware | None,
    *,
    catalog: Catalog | None = None,
    source: str = "spec",
    serving_path: str = "",
    hardware_path: str = "hardware",
) -> Plan:
    """Plan `serving` on `hardware`, or on the cheapest catalog VM size when hardware is None.

    Raises InputError for references that do not resolve (unknown model or GPU). A plan that
    does not fit is returned with fits=False, a reason and suggestions; callers decide.
    """
    catalog = catalog or load_catalog()
    vllm = vllm_profile(catalog)
    model = resolve_model(serving, catalog, source, f"{serving_path}.model".lstrip("."))
    if hardware is None:
        probe = _resolve_request(serving, model, Target("gpu", None, 1, Hardware(cpus=1, memory_gib=1)), vllm)
        found = _recommend(probe, Hardware(cpus=1, memory_gib=1), catalog)
        if found is None:
            target = Target("gpu", catalog.gpus["h100-80gb"], 8, Hardware(cpus=96, memory_gib=1900))
            req = _resolve_request(serving, model, target, vllm)
            fit = replace(_evaluate(req, target), fits=False, reason="no catalog GPU size fits this model and workload")
            return _build_plan(req, target, fit, _suggest(req, target, fit, catalog))
        target = found[0]
        req = replace(
            _resolve_request(serving, model, target, vllm), tp=target.gpu_count if serving.runtime is Runtime.VLLM else 1
        )
    else:
        target = resolve_target(hardware, catalog, source, hardware_path)
        req = _resolve_request(serving, model, target, vllm)
    fit = _evaluate(req, target)
    suggestions = () if fit.fits else _suggest(req, target, fit, catalog)
    return _build_plan(req, target, fit, suggestions)


def plan_colocated(
    servings: tuple[Serving, ...],
    hardware: Hardware,
    *,
    catalog: Catalog | None = None,
    source: str = "spec",
    serving_paths: tuple[str, ...] = (),
    hardware_path: str = "hardware",
) -> tuple[Plan, ...]:
    """Plan several models that share one machine.

    Each model alone must fit; then the device budget is split in proportion to what each needs
    for its own context x concurrency (weights, overheads, KV cache). vLLM instances get that
    share of gpu_memory_utilization (each process also keeps its own CUDA context and graphs
    outside the budget); the GGUF runtimes get that share of the device or RAM budget.
    """
    catalog = catalog or load_catalog()
    vllm = vllm_profile(catalog)
    paths = serving_paths or tuple(f"models[{i}]" for i in range(len(servings)))
    if len(servings) == 1:
        return (
            plan(
                servings[0],
                hardware,
                catalog=catalog,
                source=source,
                serving_path=paths[0],
                hardware_path=hardware_path,
            ),
        )
    target = resolve_target(hardware, catalog, source, hardware_path)
    reqs = [
        _resolve_request(s, resolve_model(s, catalog, source, f"{p}.model"), target, vllm)
        for s, p in zip(servings, paths, strict=True)
    ]
    fits = [_evaluate(r, target) for r in reqs]
    if not all(f.fits for f in fits):
        return tuple(
            _build_plan(r, target, f, () if f.fits else _suggest(r, target, f, catalog), len(reqs))
            for r, f in zip(reqs, fits, strict=True)
        )
    needs = [f.budget - f.kv_cache + _needed_kv(r, f) if _is_vllm(r, target) else f.used for r, f in zip(reqs, fits, strict=True)]
    budget = min(f.budget for f in fits)
    total_need = sum(needs)
    problem = None
    if total_need > budget:
        problem = f"together the {len(reqs)} models need {_gib(total_need)} GiB; the budget is {_gib(budget)} GiB"
    elif target.gpu is not None and any(_is_vllm(r, target) for r in reqs):
        outside = len(reqs) * vllm.outside_budget_gib * GIB
        if target.gpu.memory_gib * GIB - budget < outside:
            problem = f"{len(reqs)} vLLM processes need {_gib(outside)} GiB outside their budgets for CUDA contexts"
    plans = []
    for req, need in zip(reqs, needs, strict=True):
        share = need / total_need
        if _is_vllm(req, target):
            shared = replace(req, util=math.floor(req.util * share * 1000) / 1000)
        else:
            shared = replace(req, share=share)
        fit = _evaluate(shared, target)
        if problem is not None:
            fit = replace(fit, fits=False, reason=problem)
        plans.append(_build_plan(shared, target, fit, (), len(reqs)))
    return tuple(plans)


def _is_vllm(req: _Request, target: Target) -> bool:
    return req.runtime is Runtime.VLLM and target.gpu is not None


def _needed_kv(req: _Request, fit: _Fit) -> float:
    return fit.kv_per_token * req.context * req.concurrency


# ---------------------------------------------------------------------------------------------
# ONNX Runtime GenAI through Foundry Local (runtime `onnx`)
#
# The variant follows the hardware as Foundry Local chooses it: the CUDA build on an NVIDIA GPU,
# the CPU build otherwise. Weights: the variant's int4 layout (slm_deploy/onnx_builds.py). KV: the
# builder's graphs share past and present buffers, so each sequence holds search.max_length
# (= context, set by the launcher) tokens of K and V in the io dtype (fp32 on CPU, fp16 on CUDA)
# from its first token. Activations: one prompt of `context` tokens in one pass, logits for every
# prompt position (vocab) plus the MLP and residual intermediates, in the io dtype. Runtime:
# Python, onnxruntime, onnxruntime-genai and Foundry Local's native library, 0.5 GiB.

ONNX_RUNTIME_GIB = 0.5
# Foundry Local reserves `default_output_tokens` (catalog: 2048) for a chat request without
# max_tokens and answers 400 when prompt + that exceeds the context; the plan keeps room for a
# prompt of this many tokens beside it, so such a request is answered.
ONNX_PROMPT_TOKENS = 512


def _onnx_device(target: Target) -> str:
    return "cuda" if target.gpu is not None else "cpu"


def _onnx_variant(req: _Request, target: Target) -> tuple[OnnxBuild | None, OnnxVariant | None]:
    build = load_onnx_builds().get(req.model.id)
    return build, (build.variant(_onnx_device(target)) if build else None)  # type: ignore[arg-type]


def _onnx_source(req: _Request) -> tuple[str | None, str | None]:
    build = load_onnx_builds()[req.model.id]  # resolve_model refuses models without an ONNX build
    return f"hf://{build.repo}", None


def _onnx_args(req: _Request, target: Target) -> tuple[str, ...]:
    build, variant = _onnx_variant(req, target)
    if build is None or variant is None:
        return ()
    return (
        "--variant",
        variant.path,
        "--device",
        variant.device,
        "--model-id",
        f"{variant.foundry_id}:1",
        "--max-length",
        str(req.context),
    )


def _evaluate_onnx(req: _Request, target: Target) -> _Fit:
    arch = req.model.arch
    build, found = _onnx_variant(req, target)
    assert build is not None  # resolve_model refuses models without an ONNX build
    missing = found is None
    variant = found or build.variants[0]  # sizes of another variant, only to report alongside the refusal
    weights = float(onnx_weights_bytes(arch, variant))
    per_token = float(onnx_kv_bytes_per_token(arch, variant))
    activation = req.context * (arch.vocab_size + 3 * arch.intermediate_size + 4 * arch.hidden_size) * float(variant.io_bytes)
    if target.gpu is not None:
        budget = target.gpu.memory_gib * GIB * GGUF_GPU_HEADROOM
        overhead = CUDA_CONTEXT_GIB * GIB
        where = f"{target.gpu.id} ({target.gpu.memory_gib:g} GiB, {GGUF_GPU_HEADROOM:.0%} usable)"
    else:
        memory = target.host.memory_gib
        budget = (memory - host_reserve_gib(memory)) * GIB
        overhead = ONNX_RUNTIME_GIB * GIB
        where = f"{_gib(budget)} GiB of RAM left after the host's reserve"
    seq_bytes = per_token * req.context
    free = budget - weights - activation - overhead
    max_seqs = max(int(free // seq_bytes), 0) if free > 0 else 0
    kv_cache = seq_bytes * req.concurrency
    reason = None
    if missing:
        reason = f"{req.model.id} has no {_onnx_device(target)} variant in its ONNX build"
    elif target.gpu is not None and (target.unified or target.host.cpu_arch is not CpuArch.AMD64):
        reason = f"runtime onnx plans CUDA on amd64 hosts only; {target.gpu.id} is not one (use the CPU, or ollama)"
    elif req.context < (shortest := load_onnx_server().default_output_tokens + ONNX_PROMPT_TOKENS):
        reserved = load_onnx_server().default_output_tokens
        reason = (
            f"Foundry Local reserves {reserved} output tokens for a request that does not send max_tokens and refuses it "
            f"(400) when prompt + {reserved} exceed the context; plan context >= {shortest} ({reserved} + a "
            f"{ONNX_PROMPT_TOKENS}-token prompt), not {req.context}"
        )
    elif free <= 0:
        reason = f"weights ({_gib(weights)} GiB) and buffers ({_gib(activation + overhead)} GiB) exceed {where}"
    elif max_seqs < req.concurrency:
        reason = (
            f"{req.concurrency} sequences of {req.context} tokens need {_gib(kv_cache)} GiB of KV cache "
            f"({variant.io_dtype}, allocated for the whole context up front); {_gib(free)} GiB is left on {where} "
            f"({max_seqs} sequences)"
        )
    notes = [
        f"variant {variant.path} ({'CUDA GPU' if variant.device == 'cuda' else 'CPU'}), served as {variant.foundry_id}:1; "
        f"KV cache {variant.io_dtype}"
    ]
    if not variant.files_checked:
        notes.append("ONNX weight size computed from the variant's int4 layout, not read from the repo's file list")
    if variant.device == "cuda":
        notes.append(
            "Foundry Local downloads its CUDA execution provider (download_and_register_eps) at first start; "
            "not verified by slm-deploy"
        )
    return _Fit(
        fits=reason is None,
        reason=reason,
        budget=budget,
        weights=weights,
        overhead=overhead,
        activation=activation,
        kv_per_token=per_token,
        kv_cache=kv_cache,
        kv_tokens=req.context * req.concurrency,
        max_seqs=max_seqs,
        used=weights + activation + overhead + kv_cache,
        batched_tokens=req.context,
        notes=tuple(notes),
    )
