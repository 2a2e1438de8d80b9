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

from slm_deploy.planner.lookup import hardware_for_vm, resolve_gpu, resolve_model, resolve_target
from slm_deploy.planner.memory import (
    GGUF_BITS,
    GIB,
    KV_BYTES,
    LINEAR_BITS,
    QUANT_ORDER,
    download_bytes,
    host_reserve_gib,
    kv_layer_token_bytes,
    kv_sequence_bytes,
    startup_budget_seconds,
    weights_bytes,
)
from slm_deploy.planner.planning import plan, plan_colocated
from slm_deploy.planner.types import ModelInfo, Plan, Resources, Suggestion, Target, VllmProfile
from slm_deploy.planner.vllm import VLLM_PROFILES, vllm_profile

__all__ = [
    "GGUF_BITS",
    "GIB",
    "KV_BYTES",
    "LINEAR_BITS",
    "QUANT_ORDER",
    "VLLM_PROFILES",
    "ModelInfo",
    "Plan",
    "Resources",
    "Suggestion",
    "Target",
    "VllmProfile",
    "download_bytes",
    "hardware_for_vm",
    "host_reserve_gib",
    "kv_layer_token_bytes",
    "kv_sequence_bytes",
    "plan",
    "plan_colocated",
    "resolve_gpu",
    "resolve_model",
    "resolve_target",
    "startup_budget_seconds",
    "vllm_profile",
    "weights_bytes",
]
