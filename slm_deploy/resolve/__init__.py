"""Models outside the catalog: Hugging Face repos, Ollama library tags and GGUF repos.

A reference is resolved once (network), cached on disk per revision (`cache.py`) and handed to
the planner as a ResolvedModel: the same architecture numbers a catalog entry carries, plus the
exact weight bytes and the revision or digest that makes a rebuild reproducible.

References
    owner/name[@revision]             Hugging Face repo (vLLM; llama.cpp picks a GGUF file in it)
    name[:tag], namespace/name:tag    Ollama library (runtime ollama)
    hf.co/owner/name[:quant]          a GGUF repo on the Hub (ollama or llamacpp)
"""

from __future__ import annotations

import os
import re

from slm_deploy.errors import InputError
from slm_deploy.netclient import NetError
from slm_deploy.resolve import cache, gguf, hub, ollama
from slm_deploy.resolved import ResolvedModel
from slm_deploy.spec import Quantization, Runtime

__all__ = ["ResolvedModel", "is_reference", "resolve"]

HF_PREFIXES = ("hf.co/", "huggingface.co/")
_HF_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(@(?P<rev>[\w.\-/]+))?$", re.ASCII)
_OLLAMA_REF = re.compile(r"^(?:(?P<ns>[a-z0-9][\w.\-]*)/)?(?P<name>[a-z0-9][\w.\-]*)(?::(?P<tag>[\w.\-]+))?$", re.ASCII)
_GGUF_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?::(?P<quant>[\w.\-]+))?$", re.ASCII)


def is_reference(model: str) -> bool:
    """True for anything the resolvers handle (the catalog is looked up first)."""
    return "/" in model or ":" in model or "@" in model


_RESOLVED: dict[tuple[str, ...], ResolvedModel] = {}


def resolve(model: str, runtime: Runtime, quant: Quantization | None, source: str, field: str) -> ResolvedModel:
    """Resolve `model` for `runtime`, once per process: a fleet of 500 boxes asks the Hub once.

    Every failure is an InputError naming `source` and `field` (failures are not remembered)."""
    settings = ("HF_ENDPOINT", "OLLAMA_REGISTRY", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME")
    key: tuple[str, ...] = (model, runtime.value, quant.value if quant else "", str(cache.cache_root()), str(cache.offline()))
    key += tuple(os.environ.get(v, "") for v in settings)
    if key not in _RESOLVED:
        try:
            _RESOLVED[key] = _resolve(model, runtime, quant, source, field)
        except NetError as exc:
            if source == "arguments":
                raise
            # A fleet or stack file: where the model was named, then what failed.
            raise InputError(source, field, str(exc)) from None
    return _RESOLVED[key]


def _resolve(model: str, runtime: Runtime, quant: Quantization | None, source: str, field: str) -> ResolvedModel:
    lowered = model.lower()
    if lowered.startswith(HF_PREFIXES):
        bare = model.split("/", 1)[1]
        match = _GGUF_REF.fullmatch(bare)
        if match is None:
            raise InputError(source, field, f"{model!r} is not hf.co/<owner>/<repo>[:<quant>]")
        return gguf.resolve_gguf_repo(model, match["repo"], match["quant"], runtime, quant, source, field)
    if runtime is Runtime.OLLAMA:
        match = _OLLAMA_REF.fullmatch(model)
        if match is None:
            raise InputError(source, field, f"{model!r} is not an Ollama reference (name:tag, namespace/name:tag)")
        return ollama.resolve_ollama(match["ns"] or "library", match["name"], match["tag"] or "latest", source, field)
    match = _HF_REF.fullmatch(model)
    if match is None:
        hint = "; an Ollama tag needs runtime ollama" if ":" in model else ""
        raise InputError(source, field, f"{model!r} is not a Hugging Face repo id (owner/name[@revision]){hint}")
    if runtime is Runtime.LLAMACPP:
        return gguf.resolve_gguf_repo(model, match["repo"], None, runtime, quant, source, field, revision=match["rev"])
    return hub.resolve_hf(model, match["repo"], match["rev"], source, field)
