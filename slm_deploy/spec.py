"""Typed input models: what to serve, with which runtime, on which hardware.

Every model is frozen and rejects unknown keys, so a misspelled field in a fleet file or a stack
file is an error instead of a silent default. Each default is stated here once; the planner,
the bundle generator and the Pulumi program read it from these models and never restate it.
Units are in the field names or descriptions: GiB for memory and disk, tokens for context.
"""

from __future__ import annotations

import math
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class Frozen(BaseModel):
    """Base for every input model: immutable, unknown keys rejected, numbers strict."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)
    # Pulumi hands scalar config to the program as text ("3"); YAML inputs carry real numbers.
    numbers_from_text: ClassVar[bool] = False

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`count: true` is not 1 and `"1e308"` is not a number: pydantic's lax mode would take both."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or not _numeric(field.annotation):
            return value
        if isinstance(value, str) and cls.numbers_from_text:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ValueError(f"expected a finite number, got {value[:40]!r}")
            return value
        if isinstance(value, (bool, str, bytes)):
            raise ValueError(f"expected a number, got {type(value).__name__} {str(value)[:40]!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value


def _numeric(annotation: Any) -> bool:
    """int or float (optionally Optional/Annotated), and nothing a bool or a string could be."""
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return bool(members) and all(_numeric(m) for m in members)
    return False


class Runtime(StrEnum):
    VLLM = "vllm"
    OLLAMA = "ollama"
    LLAMACPP = "llamacpp"
    ONNX = "onnx"  # ONNX Runtime GenAI models served by Foundry Local


class Quantization(StrEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    AWQ = "awq"
    GPTQ = "gptq"
    Q8_0 = "q8_0"
    Q5_K_M = "q5_k_m"
    Q4_K_M = "q4_k_m"
    INT4 = "int4"  # ONNX Runtime GenAI int4 (MatMulNBits) builds


class KvCacheDtype(StrEnum):
    """KV-cache element type. `auto` follows the model dtype (vLLM) or f16 (GGUF runtimes)."""

    AUTO = "auto"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"


class CpuArch(StrEnum):
    AMD64 = "amd64"
    ARM64 = "arm64"


# Which quantizations each runtime can load. vLLM reads safetensors checkpoints (online fp8, or
# pre-quantized AWQ/GPTQ/int8); Ollama and llama.cpp read GGUF files.
RUNTIME_QUANTIZATIONS: dict[Runtime, tuple[Quantization, ...]] = {
    Runtime.VLLM: (
        Quantization.BF16,
        Quantization.FP16,
        Quantization.FP8,
        Quantization.INT8,
        Quantization.AWQ,
        Quantization.GPTQ,
    ),
    Runtime.OLLAMA: (Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M),
    Runtime.LLAMACPP: (Quantization.FP16, Quantization.Q8_0, Quantization.Q5_K_M, Quantization.Q4_K_M),
    Runtime.ONNX: (Quantization.INT4,),
}

# The quantization used when a spec names none: full precision for vLLM, the usual GGUF choice
# for the GGUF runtimes.
RUNTIME_DEFAULT_QUANTIZATION: dict[Runtime, Quantization] = {
    Runtime.VLLM: Quantization.BF16,
    Runtime.OLLAMA: Quantization.Q4_K_M,
    Runtime.LLAMACPP: Quantization.Q4_K_M,
    Runtime.ONNX: Quantization.INT4,
}

RUNTIME_KV_DTYPES: dict[Runtime, tuple[KvCacheDtype, ...]] = {
    Runtime.VLLM: (KvCacheDtype.AUTO, KvCacheDtype.FP16, KvCacheDtype.BF16, KvCacheDtype.FP8),
    Runtime.OLLAMA: (KvCacheDtype.AUTO, KvCacheDtype.FP16, KvCacheDtype.Q8_0, KvCacheDtype.Q4_0),
    Runtime.LLAMACPP: (KvCacheDtype.AUTO, KvCacheDtype.FP16, KvCacheDtype.Q8_0, KvCacheDtype.Q4_0),
    Runtime.ONNX: (KvCacheDtype.AUTO,),  # the variant fixes it: fp32 on CPU, fp16 on CUDA
}

DEFAULT_CONTEXT_CAP = 8192
"""Tokens. With no `context` given, a model serves min(its maximum context, this cap)."""

DEFAULT_CPU_BANDWIDTH_GBPS: dict[CpuArch, float] = {
    # Dual-channel DDR4-3200 (2 x 25.6 GB/s) on a typical amd64 edge box; LPDDR5 on an arm64
    # board such as a Raspberry Pi 5 class device is slower. Used only for the decode estimate.
    CpuArch.AMD64: 51.2,
    CpuArch.ARM64: 17.0,
}

# Names that end up in commands and file names: no spaces, quotes or shell metacharacters.
HF_REPO = r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$"
HF_REPO_OR_ID = r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$"
# A catalog id, a Hub repo with an optional @revision, an Ollama name:tag, or hf.co/owner/repo:quant
# (slm_deploy.resolve parses each form).
MODEL_REF = r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+){0,2}(@[\w.\-]+)?(:[\w.\-]+)?$"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ModelArchitecture(Frozen):
    """Architecture numbers from a model's `config.json` (the authority for every value)."""

    params_b: PositiveFloat = Field(description="Parameters, in billions, as stored in the checkpoint.")
    hidden_size: PositiveInt = Field(description="hidden_size.")
    intermediate_size: PositiveInt = Field(description="intermediate_size (MLP width).")
    layers: PositiveInt = Field(description="num_hidden_layers.")
    attention_heads: PositiveInt = Field(description="num_attention_heads.")
    kv_heads: PositiveInt = Field(description="num_key_value_heads.")
    head_dim: PositiveInt = Field(description="head_dim, or hidden_size / num_attention_heads.")
    vocab_size: PositiveInt = Field(description="vocab_size.")
    max_context: PositiveInt = Field(description="max_position_embeddings, in tokens.")
    tie_word_embeddings: bool = Field(default=False, description="Input and output embeddings shared.")
    sliding_window: PositiveInt | None = Field(
        default=None, description="Tokens a local (sliding-window) layer attends to; None: all layers global."
    )
    sliding_window_pattern: PositiveInt | None = Field(
        default=None,
        description="Every Nth layer is global, the others local (Gemma 3: 6). Needs sliding_window.",
    )

    @model_validator(mode="after")
    def _check_shape(self) -> ModelArchitecture:
        if self.kv_heads > self.attention_heads:
            raise ValueError("kv_heads cannot exceed attention_heads")
        if self.attention_heads % self.kv_heads:
            raise ValueError("attention_heads must be a multiple of kv_heads")
        if (self.sliding_window_pattern is None) != (self.sliding_window is None):
            raise ValueError("sliding_window and sliding_window_pattern go together")
        return self


class GpuAttachment(Frozen):
    """GPUs of one model attached to a machine."""

    model: str = Field(description="Catalog GPU id, e.g. `l4`, `a100-80gb`.", min_length=1)
    count: PositiveInt = Field(default=1, description="Number of GPUs of this model.")


class Hardware(Frozen):
    """The machine a model runs on: a GPU box, or CPU-only."""

    cpu_arch: CpuArch = Field(default=CpuArch.AMD64)
    # Upper bounds far above any machine (Azure's largest sizes have 416 vCPUs and 11.4 TiB), so that
    # a typo or 1e308 is refused here, not turned into NaN arithmetic in the planner (issue 22).
    cpus: PositiveInt = Field(le=4096, description="CPU cores available to the workload.")
    memory_gib: PositiveFloat = Field(le=65536, description="Host RAM, GiB.")
    disk_gib: PositiveFloat | None = Field(default=None, le=1048576, description="Disk for the model cache, GiB.")
    memory_bandwidth_gbps: PositiveFloat | None = Field(
        default=None,
        description="Host memory bandwidth, GB/s, for CPU decode estimates; default by cpu_arch.",
    )
    gpu: GpuAttachment | None = Field(default=None, description="None: CPU-only.")


class Serving(Frozen):
    """Which model to serve, with which runtime, and how hard it will be used."""

    model: str = Field(
        pattern=MODEL_REF,
        description="Catalog id, Hub repo (owner/name[@revision]), Ollama tag (name:tag) or hf.co/owner/repo:quant.",
    )
    architecture: ModelArchitecture | None = Field(default=None, description="Required for a model that is not in the catalog.")
    runtime: Runtime = Field(default=Runtime.VLLM)
    quantization: Quantization | None = Field(
        default=None, description="None: bf16 on vLLM, q4_k_m on Ollama and llama.cpp, int4 on onnx."
    )
    context: PositiveInt | None = Field(
        default=None, description=f"Max context per request, tokens; None: min(model max, {DEFAULT_CONTEXT_CAP})."
    )
    concurrency: PositiveInt = Field(default=4, description="Concurrent requests the server must hold.")
    kv_cache_dtype: KvCacheDtype = Field(default=KvCacheDtype.AUTO)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.05, le=0.98, description="vLLM: fraction of each GPU it may reserve.")
    tensor_parallel: PositiveInt | None = Field(default=None, description="vLLM: GPUs per replica; None: all.")
    max_num_batched_tokens: PositiveInt | None = Field(
        default=None,
        description="vLLM: tokens per scheduler step (sizes the activation peak); None: vLLM's API-server default.",
    )
    weights_repo: str | None = Field(
        default=None,
        pattern=HF_REPO,
        description="Hugging Face repo of a pre-quantized checkpoint (AWQ/GPTQ/int8).",
    )

    @field_validator("model", "weights_repo")
    @classmethod
    def _no_dot_segments(cls, value: str | None) -> str | None:
        # The pattern allows dots in names (Qwen2.5); a `.` or `..` segment would become a path.
        if value is not None and any(part in (".", "..") or part.endswith(".") for part in value.split("/")):
            raise ValueError(f"{value!r}: a repo or model id has no '.' or '..' parts")
        return value

    @property
    def resolved_quantization(self) -> Quantization:
        return self.quantization or RUNTIME_DEFAULT_QUANTIZATION[self.runtime]

    @model_validator(mode="after")
    def _check_runtime_combination(self) -> Serving:
        quant = self.resolved_quantization
        allowed = RUNTIME_QUANTIZATIONS[self.runtime]
        if quant not in allowed:
            raise ValueError(
                f"quantization {quant.value!r} is not available on {self.runtime.value}; "
                f"choose one of {', '.join(q.value for q in allowed)}"
            )
        kv_allowed = RUNTIME_KV_DTYPES[self.runtime]
        if self.kv_cache_dtype not in kv_allowed:
            raise ValueError(
                f"kv_cache_dtype {self.kv_cache_dtype.value!r} is not available on {self.runtime.value}; "
                f"choose one of {', '.join(k.value for k in kv_allowed)}"
            )
        if self.tensor_parallel is not None and self.tensor_parallel > 1 and self.runtime is not Runtime.VLLM:
            raise ValueError("tensor_parallel applies to vllm only")
        if self.max_num_batched_tokens is not None and self.runtime is not Runtime.VLLM:
            raise ValueError("max_num_batched_tokens applies to vllm only")
        return self


class Deployment(Frozen):
    """One model on one machine; `hardware: None` asks the planner to recommend one."""

    serving: Serving
    hardware: Hardware | None = None
