"""ONNX Runtime GenAI through Foundry Local (runtime `onnx`): the build variant, its memory and flags."""

from __future__ import annotations

from slm_deploy.onnx_builds import (
    OnnxBuild,
    OnnxVariant,
    load_onnx_builds,
    load_onnx_server,
    onnx_kv_bytes_per_token,
    onnx_weights_bytes,
)
from slm_deploy.planner.memory import Resident, device_budget, gib
from slm_deploy.planner.types import Fit, Request, Target
from slm_deploy.spec import CpuArch

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


def onnx_device(target: Target) -> str:
    return "cuda" if target.gpu is not None else "cpu"


def onnx_variant(req: Request, target: Target) -> tuple[OnnxBuild | None, OnnxVariant | None]:
    build = load_onnx_builds().get(req.model.id)
    return build, (build.variant(onnx_device(target)) if build else None)  # type: ignore[arg-type]


def onnx_source(req: Request) -> tuple[str | None, str | None]:
    build = load_onnx_builds()[req.model.id]  # resolve_model refuses models without an ONNX build
    return f"hf://{build.repo}", None


def onnx_args(req: Request, target: Target) -> tuple[str, ...]:
    build, variant = onnx_variant(req, target)
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


def evaluate_onnx(req: Request, target: Target) -> Fit:
    arch = req.model.arch
    build, found = onnx_variant(req, target)
    assert build is not None  # resolve_model refuses models without an ONNX build
    missing = found is None
    variant = found or build.variants[0]  # sizes of another variant, only to report alongside the refusal
    weights = float(onnx_weights_bytes(arch, variant))
    per_token = float(onnx_kv_bytes_per_token(arch, variant))
    activation = req.context * (arch.vocab_size + 3 * arch.intermediate_size + 4 * arch.hidden_size) * float(variant.io_bytes)
    budget, overhead, where = device_budget(target, ONNX_RUNTIME_GIB, unified_on_host=False)
    seq_bytes = per_token * req.context
    room = Resident(budget, weights, activation, overhead, seq_bytes, per_token)
    free, max_seqs, kv_cache = room.free, room.max_seqs, room.kv_cache(req)
    reason = None
    if missing:
        reason = f"{req.model.id} has no {onnx_device(target)} variant in its ONNX build"
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
        reason = room.overflow(where)
    elif max_seqs < req.concurrency:
        reason = (
            f"{req.concurrency} sequences of {req.context} tokens need {gib(kv_cache)} GiB of KV cache "
            f"({variant.io_dtype}, allocated for the whole context up front); {gib(free)} GiB is left on {where} "
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
    return room.fit(req, reason, req.context, tuple(notes))
