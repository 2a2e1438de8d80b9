"""A model resolved outside the catalog, as the planner reads it (the spec layer's type).

`slm_deploy.resolve` fills it from the Hub or an Ollama registry; the planner only reads it, so
the type lives beside the spec, below both (docs/architecture.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from slm_deploy.spec import ModelArchitecture, Quantization


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
