"""GGUF models: the header of a .gguf file read with the `gguf` package from a ranged download.

Only the header is fetched (metadata and tensor infos, a few MiB for a 150k-token vocabulary);
the first range is 4 MiB and grows until the header parses. The numbers come from llama.cpp's
own keys ({arch}.block_count, {arch}.attention.head_count_kv, ...), and the weight bytes are the
file's size, so what the planner sizes is exactly what llama.cpp or Ollama loads.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from slm_deploy.errors import InputError
from slm_deploy.resolve import cache
from slm_deploy.resolve.cache import unreachable
from slm_deploy.resolve.config import MAX_DIMENSION, MAX_PARAMS
from slm_deploy.resolved import ResolvedModel
from slm_deploy.spec import ModelArchitecture, Quantization, Runtime

FIRST_RANGE = 4 * 1024 * 1024
# Real headers are a few MiB (a 262k-token vocabulary with scores and types is ~8 MiB); the range
# grows 4, 16, 64 MiB and stops there, so a hostile file costs at most ~84 MiB of reads.
MAX_HEADER = 64 * 1024 * 1024
KIND = "gguf"
# llama.cpp's general.file_type (gguf.LlamaFileType) -> the planner's GGUF quantizations.
FILE_TYPES = {1: Quantization.FP16, 32: Quantization.FP16, 7: Quantization.Q8_0, 15: Quantization.Q4_K_M, 17: Quantization.Q5_K_M}
# Average bits per weight of each planner quantization (planner.GGUF_BITS), for file types it has no name for.
_BITS = {Quantization.FP16: 16.0, Quantization.Q8_0: 8.5, Quantization.Q5_K_M: 5.7, Quantization.Q4_K_M: 4.89}
QUANT_FILE_NAME = {
    Quantization.FP16: "F16",
    Quantization.Q8_0: "Q8_0",
    Quantization.Q5_K_M: "Q5_K_M",
    Quantization.Q4_K_M: "Q4_K_M",
}


class GgufProblem(ValueError):
    pass


@dataclass(frozen=True)
class GgufHeader:
    metadata: dict[str, Any]
    tensors: dict[str, tuple[tuple[int, ...], int]]  # name -> (shape, ggml type)

    def get(self, key: str) -> Any:
        return self.metadata.get(key)


def parse_header(fetch: Callable[[int, int], bytes], size: int) -> GgufHeader:
    """Parse the header of a GGUF file of `size` bytes; `fetch(start, end)` returns bytes start..end inclusive."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    class HeaderReader(GGUFReader):
        """GGUFReader without tensor data: the file on disk is only the header.

        Arrays of strings (the tokenizer's 150k tokens and merges) are stepped over, not split
        into one numpy view per string, which takes GGUFReader many seconds; only their length
        is kept."""

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
            if GGUFValueType(raw_type) is GGUFValueType.ARRAY:
                item_type = self._get(orig_offs, np.uint32)
                count = self._get(orig_offs + 4, np.uint64)
                if GGUFValueType(int(item_type[0])) is GGUFValueType.STRING:
                    raw = self.data.tobytes()  # the header only: a few MiB
                    pos = orig_offs + 12
                    for _ in range(int(count[0])):
                        pos += 8 + int.from_bytes(raw[pos : pos + 8], "little")
                    if pos > len(raw):
                        raise IndexError("string array runs past the header read so far")
                    return pos - orig_offs, [item_type, count], [], [GGUFValueType.ARRAY, GGUFValueType.STRING]
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            self.tensor_infos = {}
            for field in fields:
                _n, name, _d, dims, raw_type, _off = field.parts
                self.tensor_infos[bytes(name).decode("utf-8")] = (tuple(int(d) for d in dims), int(raw_type[0]))
            self.tensors = []

    want = min(FIRST_RANGE, size)
    while True:
        data = fetch(0, want - 1)
        with tempfile.NamedTemporaryFile(prefix="slm-gguf-", suffix=".gguf") as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                reader = HeaderReader(tmp.name)
            except (ValueError, IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError) as exc:
                if data[:4] != b"GGUF":
                    raise GgufProblem("not a GGUF file") from None
                if want >= size or want >= MAX_HEADER:
                    raise GgufProblem(f"unreadable GGUF header ({exc.__class__.__name__})") from None
                want = min(want * 4, size, MAX_HEADER)
                continue
        metadata = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in ("tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
                continue
            if key == "tokenizer.ggml.tokens":
                metadata[key] = int(field.parts[4][0])  # the array's length: the vocabulary size
                continue
            if not field.data:
                continue  # another array of strings, stepped over
            try:
                metadata[key] = field.contents()
            except (ValueError, IndexError, TypeError):
                continue
        return GgufHeader(metadata, dict(reader.tensor_infos))


def _positive(header: GgufHeader, key: str, required: bool = True) -> int | None:
    value = header.get(key)
    if isinstance(value, list):
        value = max((v for v in value if isinstance(v, int | float)), default=None)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= MAX_DIMENSION:
        if required:
            raise GgufProblem(f"{key} is missing from the GGUF metadata or out of range")
        return None
    return int(value)


def architecture(header: GgufHeader) -> tuple[ModelArchitecture, Quantization, str, tuple[str, ...]]:
    """(architecture, planner quantization, file type name, notes) from llama.cpp's metadata keys."""
    arch = header.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GgufProblem("general.architecture is missing from the GGUF metadata")
    notes: list[str] = []
    layers = _positive(header, f"{arch}.block_count")
    hidden = _positive(header, f"{arch}.embedding_length")
    heads = _positive(header, f"{arch}.attention.head_count")
    assert layers and hidden and heads
    key = f"{arch}.attention.head_count_kv"
    kv_raw = header.get(key)
    values = kv_raw if isinstance(kv_raw, list) else [heads if kv_raw is None else kv_raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIMENSION for v in values):
        raise GgufProblem(f"{key}: expected a KV head count, or one per layer")
    with_kv = [v for v in values if v > 0]  # per layer, 0 marks a layer without attention (hybrid models)
    if not with_kv:
        raise GgufProblem(f"{key}: no layer holds a KV cache")
    kv_heads = max(with_kv)
    attention_layers = min(len(with_kv), layers) if isinstance(kv_raw, list) else layers
    if attention_layers < layers:
        notes.append(f"{attention_layers} of {layers} layers hold a KV cache")
    head_dim = _positive(header, f"{arch}.attention.key_length", required=False) or hidden // heads
    inter = _positive(header, f"{arch}.feed_forward_length", required=False) or 4 * hidden
    context = _positive(header, f"{arch}.context_length")
    assert context
    vocab = _positive(header, "tokenizer.ggml.tokens", required=False) or _positive(header, f"{arch}.vocab_size")
    assert vocab
    window = _positive(header, f"{arch}.attention.sliding_window", required=False)
    pattern = None
    if window:
        swa = header.get(f"{arch}.attention.sliding_window_pattern")
        if isinstance(swa, list) and swa:
            local = sum(1 for v in swa if v)
            global_layers = max(len(swa) - local, 0)
            pattern = (layers // global_layers) if global_layers else layers + 1
        elif arch in ("gemma3", "gemma3n"):
            pattern = 6  # llama.cpp hard-codes Gemma 3's five local layers per global one
        elif arch in ("mistral", "llama") and window < context:
            pattern = layers + 1
    params = sum(_numel(shape) for shape, _t in header.tensors.values())
    if params <= 0:
        raise GgufProblem("no tensor infos in the GGUF header")
    tied = "output.weight" not in header.tensors
    file_type = header.get("general.file_type")
    quant = FILE_TYPES.get(int(file_type)) if isinstance(file_type, int) else None
    type_name = _file_type_name(file_type)
    if params > MAX_PARAMS:
        raise GgufProblem(f"{params} parameters is beyond any model the planner can size")
    try:
        model = _model_architecture(
            params, hidden, inter, attention_layers, heads, kv_heads, head_dim, vocab, context, tied, window, pattern
        )
    except ValidationError as exc:
        raise GgufProblem(f"inconsistent metadata: {exc.errors(include_url=False)[0]['msg']}") from None
    return model, quant or Quantization.Q4_K_M, type_name, tuple(notes)


def _model_architecture(
    params: int, hidden: int, inter: int, attention_layers: int, heads: int, kv_heads: int, head_dim: int,
    vocab: int, context: int, tied: bool, window: int | None, pattern: int | None,
) -> ModelArchitecture:  # fmt: skip
    return ModelArchitecture(
        params_b=params / 1e9,
        hidden_size=hidden,
        intermediate_size=inter,
        layers=attention_layers,
        attention_heads=heads,
        kv_heads=kv_heads if kv_heads <= heads and heads % kv_heads == 0 else heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_context=context,
        tie_word_embeddings=tied,
        sliding_window=window if pattern else None,
        sliding_window_pattern=pattern if window else None,
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _file_type_name(file_type: Any) -> str:
    try:
        from gguf import LlamaFileType

        return str(LlamaFileType(int(file_type)).name).removeprefix("MOSTLY_").lower()
    except (ValueError, TypeError, OverflowError):
        return "unknown"


def nearest_quantization(weights_bytes: int, params: float) -> Quantization:
    """For a file type the planner has no name for (Q6_K, IQ4_XS, ...): the closest by bits per weight."""
    bits = weights_bytes * 8 / max(params, 1.0)
    return min(_BITS, key=lambda q: abs(_BITS[q] - bits))


def resolved_from_header(
    ref: str, kind: str, repo: str, revision: str, header: GgufHeader, weights_bytes: int, source: str
) -> ResolvedModel:
    arch, quant, type_name, notes = architecture(header)
    if type_name not in ("f16", "bf16", "q8_0", "q4_k_m", "q5_k_m"):
        quant = nearest_quantization(weights_bytes, arch.params_b * 1e9)
        notes += (f"file type {type_name} is sized as {quant.value} for suggestions; its weights are its exact size",)
    return ResolvedModel(
        ref=ref,
        kind=kind,
        repo=repo,
        revision=revision,
        arch=arch,
        quantization=quant,
        quant_method=type_name,
        weights_bytes=weights_bytes,
        weights_source=source,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# GGUF repos on the Hub (hf.co/<owner>/<repo>:<quant>, or a repo for llama.cpp)


def pick_file(files: list[str], quant: str) -> str | None:
    """The single-file GGUF whose name carries `quant` (Q4_K_M, q8_0, ...), vision projectors excluded."""
    wanted = quant.lower().replace("-", "_")
    candidates = sorted(
        f
        for f in files
        if f.lower().endswith(".gguf") and "mmproj" not in f.lower() and not re.search(r"-\d{5}-of-\d{5}\.gguf$", f)
        and re.search(rf"(^|[._\-/]){re.escape(wanted)}([._\-]|$)", f.lower().replace("-", "_").replace(".gguf", "."))
    )  # fmt: skip
    return candidates[0] if candidates else None


def resolve_gguf_repo(
    ref: str,
    repo: str,
    quant_tag: str | None,
    runtime: Runtime,
    quant: Quantization | None,
    source: str,
    field: str,
    revision: str | None = None,
) -> ResolvedModel:
    from slm_deploy.resolve import hub

    wanted = quant_tag or QUANT_FILE_NAME.get(quant or Quantization.Q4_K_M, "Q4_K_M")
    name = f"{repo}:{wanted}"
    if cache.offline():
        sha = revision if revision and len(revision) == 40 else cache.revision_for(KIND, name, revision or "main")
        data = cache.load(KIND, name, sha) if sha else None
        if data is None:
            raise InputError(source, field, f"{ref} is not in the resolve cache ({cache.cache_root()}) and HF_HUB_OFFLINE is set")
        return ResolvedModel.from_json(data)
    hub.check_repo_id(repo, source, field)
    if revision is not None:
        hub.check_revision(revision, source, field)
    try:
        sha, files = hub.model_info(repo, revision, source, field)
        hit = cache.load(KIND, name, sha)
        if hit is not None:
            return ResolvedModel.from_json(hit)
        filename = pick_file([f for f in files if hub.FILE_NAME.fullmatch(f) and ".." not in f], wanted)
        if filename is None:
            have = sorted({m.group(1) for f in files if (m := re.search(r"[._-](I?Q\d\w*|F16|BF16|F32)\.gguf$", f, re.I))})
            listed = ", ".join(have) or "no GGUF files"
            raise InputError(source, field, f"{repo} has no single-file {wanted} GGUF; it has: {listed}")
        header, size = _read_remote_header(repo, filename, sha, source, field)
    except hub._Unreachable as exc:
        raise unreachable("Hub", hub.endpoint(), str(exc), ref, source, field) from None
    try:
        weights_source = f"hf://{repo}/{filename}" if runtime is not Runtime.OLLAMA else f"ollama://hf.co/{repo}:{wanted}"
        found = resolved_from_header(ref, KIND, repo, sha, header, size, weights_source)
    except GgufProblem as exc:
        raise InputError(source, field, f"{repo}/{filename}: {exc}") from None
    cache.save(KIND, name, revision or "main", sha, found.to_json())
    return found


def _read_remote_header(repo: str, filename: str, sha: str, source: str, field: str) -> tuple[GgufHeader, int]:
    from slm_deploy.resolve import hub

    size = hub.file_size(repo, sha, filename, source, field)

    def fetch(start: int, end: int) -> bytes:
        return hub.read_range(repo, sha, filename, start, end, source, field)

    try:
        return parse_header(fetch, size), size
    except GgufProblem as exc:
        raise InputError(source, field, f"{repo}/{filename}: {exc}") from None
