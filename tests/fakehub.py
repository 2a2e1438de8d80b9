"""A fake Hugging Face Hub and Ollama registry on 127.0.0.1 for the resolver tests.

It speaks the endpoints huggingface_hub and the resolver use: model info
(/api/models/{repo}/revision/{rev}), file HEAD/GET with ranges (/{repo}/resolve/{rev}/{file}),
gated repos (401 without a token, 403 with a token that was not granted), unknown repos (401
RepoNotFound, as the Hub answers) and revisions (404 RevisionNotFound); and the Ollama registry's
/v2/{namespace}/{name}/manifests/{tag} and /blobs/{digest}. Files are "virtual": a real header
(safetensors, GGUF) followed by zeros up to the file's size, so a 15 GB checkpoint costs nothing
unless someone downloads it, which `served_bytes` would show.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DATA_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1}


@dataclass
class VirtualFile:
    prefix: bytes
    size: int

    def read(self, start: int, end: int) -> bytes:  # end inclusive
        end = min(end, self.size - 1)
        head = self.prefix[start : end + 1] if start < len(self.prefix) else b""
        return head + b"\0" * (end + 1 - start - len(head))


@dataclass
class FakeRepo:
    files: dict[str, VirtualFile]
    sha: str = "0" * 40
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    granted_tokens: tuple[str, ...] = ()


def json_file(data: Any) -> VirtualFile:
    raw = json.dumps(data, indent=2).encode()
    return VirtualFile(raw, len(raw))


def safetensors_file(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> VirtualFile:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = DATA_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    prefix = struct.pack("<Q", len(raw)) + raw
    return VirtualFile(prefix, len(prefix) + offset)


def decoder_tensors(
    cfg: Mapping[str, Any], quant: str | None = None, prefix: str = "model."
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors a Llama-family checkpoint with this config stores (transformers' names and shapes)."""
    text = {**cfg, **(cfg.get("text_config") or {})}
    hidden, inter, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads, kv = text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    vocab = text["vocab_size"]
    bias = text.get("model_type") == "qwen2"
    out: dict[str, tuple[str, tuple[int, ...]]] = {f"{prefix}embed_tokens.weight": ("BF16", (vocab, hidden))}

    def linear(name: str, n_out: int, n_in: int) -> None:
        if quant == "awq":
            out[f"{name}.qweight"] = ("I32", (n_in, n_out // 8))
            out[f"{name}.qzeros"] = ("I32", (n_in // 128, n_out // 8))
            out[f"{name}.scales"] = ("F16", (n_in // 128, n_out))
        elif quant == "gptq":
            out[f"{name}.qweight"] = ("I32", (n_in // 8, n_out))
            out[f"{name}.qzeros"] = ("I32", (n_in // 128, n_out // 8))
            out[f"{name}.scales"] = ("F16", (n_in // 128, n_out))
            out[f"{name}.g_idx"] = ("I32", (n_in,))
        elif quant == "fp8":
            out[f"{name}.weight"] = ("F8_E4M3", (n_out, n_in))
            out[f"{name}.weight_scale"] = ("BF16", (n_out, 1))
        else:
            out[f"{name}.weight"] = ("BF16", (n_out, n_in))

    for i in range(layers):
        base = f"{prefix}layers.{i}"
        for proj, n_out, n_in in (
            ("q_proj", heads * head_dim, hidden),
            ("k_proj", kv * head_dim, hidden),
            ("v_proj", kv * head_dim, hidden),
            ("o_proj", hidden, heads * head_dim),
        ):
            linear(f"{base}.self_attn.{proj}", n_out, n_in)
            if bias and proj != "o_proj":
                out[f"{base}.self_attn.{proj}.bias"] = ("BF16", (n_out,))
        for proj, n_out, n_in in (("gate_proj", inter, hidden), ("up_proj", inter, hidden), ("down_proj", hidden, inter)):
            linear(f"{base}.mlp.{proj}", n_out, n_in)
        out[f"{base}.input_layernorm.weight"] = ("BF16", (hidden,))
        out[f"{base}.post_attention_layernorm.weight"] = ("BF16", (hidden,))
    out[f"{prefix}norm.weight"] = ("BF16", (hidden,))
    if not text.get("tie_word_embeddings", False):
        out["lm_head.weight"] = ("BF16", (vocab, hidden))
    return out


def model_repo(config: Mapping[str, Any], tensors: Mapping[str, tuple[str, tuple[int, ...]]], sha: str, **kw: Any) -> FakeRepo:
    files = {"config.json": json_file(config), "model.safetensors": safetensors_file(tensors)}
    return FakeRepo(files=files, sha=sha, branches={"main": sha}, **kw)


def sharded_repo(
    config: Mapping[str, Any], tensors: Mapping[str, tuple[str, tuple[int, ...]]], sha: str, shards: int
) -> FakeRepo:
    names = list(tensors)
    per = -(-len(names) // shards)
    files = {"config.json": json_file(config)}
    weight_map: dict[str, str] = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k * per : (k + 1) * per]}
        files[shard] = safetensors_file(part)
        weight_map |= {n: shard for n in part}
    files["model.safetensors.index.json"] = json_file({"metadata": {}, "weight_map": weight_map})
    return FakeRepo(files=files, sha=sha, branches={"main": sha})


@dataclass
class OllamaModel:
    tags: dict[str, tuple[dict[str, Any], dict[str, VirtualFile]]]  # tag -> (manifest, blobs by digest)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.ollama: dict[str, OllamaModel] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path, range
        self.served_bytes = 0
        self.url = ""

    def add_ollama(self, name: str, tag: str, gguf: VirtualFile, config: dict[str, Any] | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(gguf.prefix + str(gguf.size).encode()).hexdigest()
        cfg = json_file(config or {"model_format": "gguf"})
        cfg_digest = "sha256:" + hashlib.sha256(cfg.prefix).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg_digest, "size": cfg.size},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": gguf.size}],
        }
        model = self.ollama.setdefault(name, OllamaModel({}))
        model.tags[tag] = (manifest, {digest: gguf, cfg_digest: cfg})
        return digest


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self.hub.served_bytes += len(body)

    def _error(self, status: int, code: str, head: bool) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(status, body, {"X-Error-Code": code, "Content-Type": "application/json"}, head)

    def _file(self, vf: VirtualFile, etag: str, extra: Mapping[str, str], head: bool) -> None:
        rng = self.headers.get("Range") or self.headers.get("range")
        headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes", **extra}
        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(vf.size))
            self.end_headers()
            return
        if rng:
            m = re.match(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m[1])
            end = int(m[2]) if m[2] else vf.size - 1
            if start >= vf.size:
                self._send(416, b"", headers)
                return
            body = vf.read(start, end)
            self._send(206, body, {**headers, "Content-Range": f"bytes {start}-{start + len(body) - 1}/{vf.size}"})
            return
        if vf.size > 64 * 1024 * 1024:
            raise AssertionError(f"a whole {vf.size}-byte file was requested: weights must never be downloaded")
        self._send(200, vf.read(0, vf.size - 1), headers)

    def _repo(self, repo_id: str, rev: str | None, head: bool) -> tuple[FakeRepo, str] | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", head)
            return None
        rev = rev or "main"
        sha = repo.branches.get(rev) or (rev if rev in set(repo.branches.values()) else None)
        if sha is None:
            self._error(404, "RevisionNotFound", head)
            return None
        return repo, sha

    def _handle(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.hub.requests.append((self.command, path, self.headers.get("Range") or ""))
        m = re.match(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?$", path)
        if m:
            found = self._repo(m[1], m[2], head)
            if found:
                repo, sha = found
                info = {
                    "_id": sha[:24], "id": m[1], "modelId": m[1], "sha": sha, "private": False,
                    "gated": "manual" if repo.gated else False, "disabled": False, "tags": [], "downloads": 0, "likes": 0,
                    "siblings": [{"rfilename": f} for f in sorted(repo.files)],
                }  # fmt: skip
                self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
            return
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            found = self._repo(m[1], m[2], head)
            if not found:
                return
            repo, sha = found
            if repo.gated:
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    self._error(401, "GatedRepo", head)
                    return
                if auth.removeprefix("Bearer ") not in repo.granted_tokens:
                    self._error(403, "GatedRepo", head)
                    return
            vf = repo.files.get(m[3])
            if vf is None:
                self._error(404, "EntryNotFound", head)
                return
            etag = hashlib.sha256(f"{sha}/{m[3]}".encode()).hexdigest()
            self._file(vf, etag, {"X-Repo-Commit": sha}, head)
            return
        m = re.match(r"^/v2/([^/]+)/([^/]+)/(manifests|blobs)/(.+)$", path)
        if m:
            model = self.hub.ollama.get(f"{m[1]}/{m[2]}")
            if model is None:
                body = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}).encode()
                self._send(404, body, {"Content-Type": "application/json"}, head)
                return
            if m[3] == "manifests":
                entry = model.tags.get(m[4])
                if entry is None:
                    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
                    self._send(404, body, {"Content-Type": "application/json"}, head)
                    return
                raw = json.dumps(entry[0]).encode()
                digest = "sha256:" + hashlib.sha256(raw).hexdigest()
                headers = {"Content-Type": entry[0]["mediaType"], "Docker-Content-Digest": digest}
                self._send(200, raw, headers, head)
                return
            blob = next((b[m[4]] for _, b in model.tags.values() if m[4] in b), None)
            if blob is None:
                self._send(404, b"{}", {}, head)
                return
            self._file(blob, m[4], {}, head)
            return
        self._send(404, b"not found", {}, head)

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def gguf_file(cfg: Mapping[str, Any], file_type: str = "Q4_K_M", tmp_dir: Any = None) -> VirtualFile:
    """A GGUF file as llama.cpp's convert + quantize would write it for this config: the real
    header (metadata keys, tokenizer vocabulary, tensor infos) written with the `gguf` package,
    followed by zeros for the tensor data."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType

    text = {**cfg, **(cfg.get("text_config") or {})}
    arch = str(text["model_type"])
    hidden, inter, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads, kv = text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    vocab = text["vocab_size"]
    big, small = {
        "Q4_K_M": (GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K),
        "Q8_0": (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q8_0),
        "Q6_K": (GGMLQuantizationType.Q6_K, GGMLQuantizationType.Q6_K),
    }[file_type]
    path = Path(tempfile.mkdtemp(dir=tmp_dir)) / "model.gguf"
    writer = GGUFWriter(path, arch)
    writer.add_block_count(layers)
    writer.add_context_length(text["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_file_type(int(getattr(LlamaFileType, f"MOSTLY_{file_type}")))
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    total = 0

    def tensor(name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
        nonlocal total
        block, size = GGML_QUANT_SIZES[qtype]
        n = 1
        for d in shape:
            n *= d
        nbytes = n * size // block
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        total += nbytes + (-nbytes % 32)

    tensor("token_embd.weight", (vocab, hidden), small)
    for i in range(layers):
        tensor(f"blk.{i}.attn_q.weight", (heads * head_dim, hidden), big)
        tensor(f"blk.{i}.attn_k.weight", (kv * head_dim, hidden), big)
        tensor(f"blk.{i}.attn_v.weight", (kv * head_dim, hidden), small)
        tensor(f"blk.{i}.attn_output.weight", (hidden, heads * head_dim), big)
        tensor(f"blk.{i}.ffn_gate.weight", (inter, hidden), big)
        tensor(f"blk.{i}.ffn_up.weight", (inter, hidden), big)
        tensor(f"blk.{i}.ffn_down.weight", (hidden, inter), small)
        tensor(f"blk.{i}.attn_norm.weight", (hidden,), GGMLQuantizationType.F32)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,), GGMLQuantizationType.F32)
    tensor("output_norm.weight", (hidden,), GGMLQuantizationType.F32)
    if not text.get("tie_word_embeddings", False):
        tensor("output.weight", (vocab, hidden), small)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    prefix = path.read_bytes()
    prefix += b"\0" * (-len(prefix) % 32)
    path.unlink()
    return VirtualFile(prefix, len(prefix) + total)
