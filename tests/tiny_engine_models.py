"""Tiny models with random weights and a real architecture (Llama: GQA attention, SwiGLU MLP, RMS
norm, RoPE), for the real engines in tests/test_engines_live.py:

- `write_gguf`: a GGUF that llama.cpp's `llama-server` loads, written with the `gguf` package
  (Q8_0 matrices, f32 norms, an SPM vocabulary with byte fallback, a chat template).
- `HF_SCRIPT`: run with the vLLM image's own Python (transformers, tokenizers, safetensors), it writes
  a Hugging Face checkpoint (config.json, model.safetensors in bfloat16, tokenizer.json with a chat
  template) laid out as huggingface_hub's cache keeps a downloaded snapshot, so that `vllm serve
  <repo>` with HF_HUB_OFFLINE=1 finds it exactly where model-fetch would have put it.

`ARCH` is the one description of the shape; `architecture()` states it as the planner's
ModelArchitecture, so the plan-versus-actual check predicts from the same numbers the engines load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slm_deploy.spec import ModelArchitecture

ARCH = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
# A chat template that needs no special tokens beyond BOS/EOS (both engines render it with Jinja).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def parameter_count() -> int:
    a = ARCH
    hidden, heads, kv, hd = a["hidden_size"], a["num_attention_heads"], a["num_key_value_heads"], a["head_dim"]
    attention = hidden * heads * hd * 2 + hidden * kv * hd * 2  # q, o; k, v
    mlp = 3 * hidden * a["intermediate_size"]
    per_layer = attention + mlp + 2 * hidden  # two RMS norms
    return 2 * a["vocab_size"] * hidden + a["num_hidden_layers"] * per_layer + hidden  # embed, lm_head, final norm


def architecture() -> ModelArchitecture:
    a = ARCH
    return ModelArchitecture(
        params_b=parameter_count() / 1e9,
        hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"],
        layers=a["num_hidden_layers"],
        attention_heads=a["num_attention_heads"],
        kv_heads=a["num_key_value_heads"],
        head_dim=a["head_dim"],
        vocab_size=a["vocab_size"],
        max_context=a["max_position_embeddings"],
        tie_word_embeddings=False,
    )


def _spm_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """<unk> <s> </s>, the 256 byte tokens, then word pieces up to the vocabulary size."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    words = ["▁hello", "▁there", "▁pong", "▁user", "▁assistant", ":", "▁the", "▁a"]
    words += [f"▁w{i}" for i in range(ARCH["vocab_size"] - len(tokens) - len(words))]
    tokens += words
    types += [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, [int(t) for t in types]


def write_gguf(path: Path, seed: int = 0) -> Path:
    """A Q8_0 GGUF of ARCH (architecture `llama`) at `path`."""
    import gguf

    a = ARCH
    rng = np.random.default_rng(seed)
    hidden, heads, kv, hd, ff = (
        a["hidden_size"],
        a["num_attention_heads"],
        a["num_key_value_heads"],
        a["head_dim"],
        a["intermediate_size"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("slm-deploy tiny llama (random weights)")
    writer.add_context_length(a["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(a["num_hidden_layers"])
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_rope_dimension_count(hd)
    writer.add_rope_freq_base(a["rope_theta"])
    writer.add_layer_norm_rms_eps(a["rms_norm_eps"])
    writer.add_vocab_size(a["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens, scores, types = _spm_vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(hidden, dtype=np.float32))

    matrix("token_embd.weight", a["vocab_size"], hidden)
    for i in range(a["num_hidden_layers"]):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", heads * hd, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv * hd, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv * hd, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, heads * hd)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ff)
    norm("output_norm.weight")
    matrix("output.weight", a["vocab_size"], hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Run as `python3 - OUT REPO < script` in the vLLM image: writes OUT/hub/models--<org>--<name>/ with
# refs/main and snapshots/<revision>/ as huggingface_hub's snapshot_download leaves them.
HF_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

arch = json.loads(ARCH_JSON)
out, repo = Path(sys.argv[1]), sys.argv[2]
revision = "0123456789abcdef0123456789abcdef01234567"
folder = out / "hub" / ("models--" + repo.replace("/", "--"))
snapshot = folder / "snapshots" / revision
snapshot.mkdir(parents=True, exist_ok=True)
(folder / "refs").mkdir(exist_ok=True)
(folder / "refs" / "main").write_text(revision)
alphabet = pre_tokenizers.ByteLevel.alphabet()
vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
for word in ["<|bos|>", "<|eos|>"]:
    vocab[word] = len(vocab)
i = 0
while len(vocab) < arch["vocab_size"]:
    vocab["\\u0120w%d" % i] = len(vocab)
    i += 1
tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>")
fast.chat_template = CHAT_TEMPLATE
fast.save_pretrained(snapshot)
config = LlamaConfig(
    bos_token_id=vocab["<|bos|>"], eos_token_id=vocab["<|eos|>"], tie_word_embeddings=False,
    torch_dtype="bfloat16", **arch,
)
torch.manual_seed(0)
model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(snapshot, safe_serialization=True)
print(snapshot)
"""


def hf_script() -> str:
    return HF_SCRIPT.replace("ARCH_JSON", repr(json.dumps(ARCH))).replace("CHAT_TEMPLATE", repr(CHAT_TEMPLATE))
