"""A tiny ONNX Runtime GenAI model, built with the `onnx` package alone (no torch), for live tests.

One decoder "layer" whose KV cache is zeros and whose logits depend only on the current token:
after any token it predicts "p", then "o", "n", "g" and end-of-text, so a greedy chat reply is
"pong". The tokenizer is a byte-level BPE with no merges (one token per byte), in the
tokenizer.json / tokenizer_config.json layout ONNX Runtime GenAI's tokenizer reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Where `onnx` (and foundry_local_sdk) are installed when not in this venv: .ci/foundry-requirements.txt.
EXTRA_PATH = os.environ.get("SLM_FOUNDRY_PYTHONPATH", "")

REPLY = "pong"
HEAD_SIZE = 4
CONTEXT = 8192  # longer than any planned onnx context (>= 2560), so the launcher's cap applies


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest above 255."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    table = dict(zip(keep, chars, strict=True))
    return [chr(table[b]) for b in range(256)]


def write_model(folder: Path) -> dict[str, int]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    eos = 256
    size = 257
    table = np.zeros((size, size), dtype=np.float32)
    reply_ids = [vocab[symbols[ord(c)]] for c in REPLY]
    for token in range(size):
        table[token, reply_ids[0]] = 10.0  # any token: start the reply
    for current, following in zip(reply_ids, [*reply_ids[1:], eos], strict=True):
        table[current] = 0.0
        table[current, following] = 10.0
    nodes = [
        helper.make_node("Gather", ["logit_table", "input_ids"], ["logits"], axis=0),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Slice", ["ids_shape", "zero", "one"], ["batch"]),
        helper.make_node("Slice", ["ids_shape", "one", "two"], ["seq"]),
        helper.make_node("Concat", ["batch", "one", "seq", "head"], ["kv_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["kv_shape"], ["new_kv"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("Concat", ["past_key_values.0.key", "new_kv"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "new_kv"], ["present.0.value"], axis=2),
    ]
    kv = ["batch_size", 1, "past_sequence_length", HEAD_SIZE]
    present = ["batch_size", 1, "total_sequence_length", HEAD_SIZE]
    graph = helper.make_graph(
        nodes,
        "tiny-genai",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, kv),
            helper.make_tensor_value_info("past_key_values.0.value", TensorProto.FLOAT, kv),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", size]),
            helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, present),
            helper.make_tensor_value_info("present.0.value", TensorProto.FLOAT, present),
        ],
        initializer=[
            numpy_helper.from_array(table, "logit_table"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
            numpy_helper.from_array(np.array([HEAD_SIZE], dtype=np.int64), "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="slm-deploy-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    config = {
        "model": {
            "bos_token_id": eos,
            "eos_token_id": eos,
            "pad_token_id": eos,
            "context_length": CONTEXT,
            "vocab_size": size,
            "type": "llama",
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": HEAD_SIZE,
                "hidden_size": HEAD_SIZE,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": 1,
                "num_hidden_layers": 1,
                "num_key_value_heads": 1,
            },
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": CONTEXT,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
    (folder / "genai_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer: dict[str, Any] = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": eos,
                "content": "<|endoftext|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            },
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "model_max_length": CONTEXT,
        "add_bos_token": False,
        "chat_template": "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return {"eos": eos, "vocab": size}


def foundry_env(home: Path) -> dict[str, str]:
    """An environment whose Python sees this checkout and the Foundry Local folder (EXTRA_PATH)."""
    path = os.pathsep.join(p for p in (EXTRA_PATH, str(ROOT)) if p)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": path}


def generate(folder: Path) -> subprocess.CompletedProcess[str]:
    """write_model(folder) in a child Python that sees `onnx` (foundry_env); its stderr says why not."""
    return subprocess.run(
        [sys.executable, "-m", "tests.tiny_onnx_genai", str(folder)],
        env=foundry_env(folder.parent),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


if __name__ == "__main__":
    write_model(Path(sys.argv[1]))
