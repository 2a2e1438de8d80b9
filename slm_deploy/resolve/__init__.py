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

import re
from dataclasses import asdict, dataclass
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.spec import ModelArchitecture, Quantization, Runtime

HF_PREFIXES = ("hf.co/", "huggingface.co/")
_HF_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(@(?P<rev>[\w.\-/]+))?$", re.ASCII)
_OLLAMA_REF = re.compile(r"^(?:(?P<ns>[a-z0-9][\w.\-]*)/)?(?P<name>[a-z0-9][\w.\-]*)(?::(?P<tag>[\w.\-]+))?$", re.ASCII)
_GGUF_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?::(?P<quant>[\w.\-]+))?$", re.ASCII)


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # as written
    kind: str  # "hf" | "ollama" | "gguf"
    repo: str  # Hugging Face repo or Ollama name
    revision: str  # commit sha (Hub) or manifest digest (Ollama)
    arch: ModelArchitecture
    quantization: Quantization | None  # how the weights are stored; None: 16-bit
    quant_method: str | None  # quant_method of config.json, or the GGUF file type
    weights_bytes: int | None
    weights_source: str  # hf://repo, hf://repo/file.gguf, ollama://name:tag
    notes: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        base = self.repo.rsplit("/", 1)[-1] if self.kind != "ollama" else self.ref.replace(":", "-").rsplit("/", 1)[-1]
        if self.kind == "gguf":  # two files of one GGUF repo on one box are two models
            base = f"{base}-{self.quant_method}"
        return re.sub(r"[^a-z0-9.\-]", "-", base.lower()).strip("-.") or "model"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch"] = self.arch.model_dump(mode="json")
        data["quantization"] = self.quantization.value if self.quantization else None
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedModel:
        return cls(
            ref=data["ref"],
            kind=data["kind"],
            repo=data["repo"],
            revision=data["revision"],
            arch=ModelArchitecture.model_validate(data["arch"]),
            quantization=Quantization(data["quantization"]) if data.get("quantization") else None,
            quant_method=data.get("quant_method"),
            weights_bytes=data.get("weights_bytes"),
            weights_source=data["weights_source"],
            notes=tuple(data.get("notes") or ()),
        )


def unreachable(service: str, url: str, why: str, ref: str, source: str, field: str) -> InputError:
    """No answer from SERVICE and nothing cached: the error names the service and its host, not
    the arguments (which are fine)."""
    from slm_deploy.netclient import NetError, host_of
    from slm_deploy.resolve import cache

    cached = f"{ref} is not in the resolve cache ({cache.cache_root()})"
    if source == "arguments":
        return NetError(service, host_of(url), f"cannot be reached ({why}); {cached}")
    return InputError(source, field, f"{service} {host_of(url)} cannot be reached ({why}); {cached}")


def is_reference(model: str) -> bool:
    """True for anything the resolvers handle (the catalog is looked up first)."""
    return "/" in model or ":" in model or "@" in model


_RESOLVED: dict[tuple[str, ...], ResolvedModel] = {}


def resolve(model: str, runtime: Runtime, quant: Quantization | None, source: str, field: str) -> ResolvedModel:
    """Resolve `model` for `runtime`, once per process: a fleet of 500 boxes asks the Hub once.

    Every failure is an InputError naming `source` and `field` (failures are not remembered)."""
    import os

    from slm_deploy.resolve import cache

    settings = ("HF_ENDPOINT", "OLLAMA_REGISTRY", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME")
    key: tuple[str, ...] = (model, runtime.value, quant.value if quant else "", str(cache.cache_root()), str(cache.offline()))
    key += tuple(os.environ.get(v, "") for v in settings)
    if key not in _RESOLVED:
        from slm_deploy.netclient import NetError

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
        from slm_deploy.resolve import gguf

        bare = model.split("/", 1)[1]
        match = _GGUF_REF.fullmatch(bare)
        if match is None:
            raise InputError(source, field, f"{model!r} is not hf.co/<owner>/<repo>[:<quant>]")
        return gguf.resolve_gguf_repo(model, match["repo"], match["quant"], runtime, quant, source, field)
    if runtime is Runtime.OLLAMA:
        from slm_deploy.resolve import ollama

        match = _OLLAMA_REF.fullmatch(model)
        if match is None:
            raise InputError(source, field, f"{model!r} is not an Ollama reference (name:tag, namespace/name:tag)")
        return ollama.resolve_ollama(match["ns"] or "library", match["name"], match["tag"] or "latest", source, field)
    match = _HF_REF.fullmatch(model)
    if match is None:
        hint = "; an Ollama tag needs runtime ollama" if ":" in model else ""
        raise InputError(source, field, f"{model!r} is not a Hugging Face repo id (owner/name[@revision]){hint}")
    if runtime is Runtime.LLAMACPP:
        from slm_deploy.resolve import gguf

        return gguf.resolve_gguf_repo(model, match["repo"], None, runtime, quant, source, field, revision=match["rev"])
    from slm_deploy.resolve import hub

    return hub.resolve_hf(model, match["repo"], match["rev"], source, field)
