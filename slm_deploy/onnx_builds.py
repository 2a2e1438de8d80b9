"""The ONNX Runtime GenAI builds runtime `onnx` serves (catalog/onnx_models.yaml), and the
arithmetic that follows from a variant's layout: weight bytes and KV bytes per token.

Kept apart from the main catalog loader: only the `onnx` runtime reads it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from slm_deploy.catalog import CATALOG_DIR, _index, _load
from slm_deploy.spec import Frozen, ModelArchitecture

IO_BYTES = {"fp32": 4, "fp16": 2}


class OnnxVariant(Frozen):
    device: Literal["cpu", "cuda"]
    path: str = Field(pattern=r"^[\w.\-]+(/[\w.\-]+)*$")
    foundry_id: str = Field(pattern=r"^[\w.\-]+$")
    io_dtype: Literal["fp32", "fp16"]
    block_size: int = Field(gt=0)
    zero_points: bool
    files_checked: bool

    @property
    def io_bytes(self) -> int:
        return IO_BYTES[self.io_dtype]

    @property
    def linear_bits(self) -> float:
        """int4 MatMulNBits: 4 bits, one fp16 scale per block, a 4-bit zero point per block if asymmetric."""
        return 4 + 16 / self.block_size + (4 / self.block_size if self.zero_points else 0)


class OnnxBuild(Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    repo: str = Field(pattern=r"^[\w.\-]+/[\w.\-]+$")
    foundry_alias: str = Field(pattern=r"^[\w.\-]+$")
    license: str = Field(min_length=1)
    variants: tuple[OnnxVariant, ...] = Field(min_length=1)
    source: str = Field(min_length=1)

    def variant(self, device: Literal["cpu", "cuda"]) -> OnnxVariant | None:
        return next((v for v in self.variants if v.device == device), None)


class _OnnxFile(Frozen):
    onnx_models: tuple[OnnxBuild, ...]


@cache
def load_onnx_builds(directory: Path = CATALOG_DIR) -> dict[str, OnnxBuild]:
    path = directory / "onnx_models.yaml"
    return _index(path, "onnx_models", _load(path, _OnnxFile).onnx_models)


def onnx_weights_bytes(arch: ModelArchitecture, variant: OnnxVariant) -> int:
    """Linear layers and lm_head in int4; the embedding table in the variant's io dtype."""
    embed = arch.vocab_size * arch.hidden_size
    body = arch.params_b * 1e9 - embed * (1 if arch.tie_word_embeddings else 2)
    return int((body + embed) * variant.linear_bits / 8 + embed * variant.io_bytes)


def onnx_kv_bytes_per_token(arch: ModelArchitecture, variant: OnnxVariant) -> int:
    """K and V of every layer, in the io dtype (no sliding-window savings: full buffers are allocated)."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * variant.io_bytes


# Why the targets refuse runtime `onnx` for now (tests/test_foundry_live.py shows it for real):
# Foundry Local's web service (foundry-local-sdk 2.2.1) resolves a request's model only through its
# public catalog (api.catalog.azureml.ms) and the catalog's cache; a model folder registered in the
# local catalog loads and answers in-process, but over HTTP it is "Model not found" (404).
TARGETS_REFUSAL = (
    "runtime onnx is plan-only for now: Foundry Local 2.2.1's web service serves only models its online "
    "catalog knows, and a fetched ONNX GenAI folder answers 404 over HTTP; plan it with "
    "`slm-deploy plan --runtime onnx`, deploy it with ollama or llamacpp meanwhile"
)
