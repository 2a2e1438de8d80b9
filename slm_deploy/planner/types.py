"""The planner's types: what it reads (ModelInfo, Target, a resolved Request) and what it returns (Plan)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slm_deploy.catalog import CatalogModel, Gpu
from slm_deploy.resolved import ResolvedModel
from slm_deploy.spec import Hardware, KvCacheDtype, ModelArchitecture, Quantization, Runtime

PROBE_PERIOD_S = 10


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


@dataclass(frozen=True)
class Request:
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


@dataclass(frozen=True)
class Fit:
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
