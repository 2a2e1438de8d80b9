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
from slm_deploy.spec import CpuArch, Frozen, Hardware, ModelArchitecture

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
    revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # the repo's commit to fetch; None: main
    license: str = Field(min_length=1)
    variants: tuple[OnnxVariant, ...] = Field(min_length=1)
    source: str = Field(min_length=1)

    def variant(self, device: Literal["cpu", "cuda"]) -> OnnxVariant | None:
        return next((v for v in self.variants if v.device == device), None)


class DebianPackage(Frozen):
    """A .deb the server image installs: a permanent URL and the sha256 the download must have."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.+\-]+$")
    version: str = Field(pattern=r"^[\w.+:~\-]+$")
    url: str = Field(pattern=r"^https://snapshot\.debian\.org/archive/debian/\d{8}T\d{6}Z/pool/\S+\.deb$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = Field(min_length=1)


class OnnxServer(Frozen):
    """The model server image: Foundry Local's Python package on the catalog's python base."""

    sdk: str = Field(pattern=r"^[\w.\-]+==[\w.\-]+$")
    base_image: str
    requirements: str = Field(pattern=r"^[\w.\-]+\.txt$")
    platforms: tuple[CpuArch, ...] = Field(min_length=1)
    port: int = Field(gt=0, lt=65536)
    debian_packages: tuple[DebianPackage, ...] = ()
    default_output_tokens: int = Field(gt=0)  # reserved for a request without max_tokens
    upstream_keepalive: bool = True  # may the gateway reuse its connections to the server?
    source: str = Field(min_length=1)

    def requirements_text(self, directory: Path = CATALOG_DIR) -> str:
        """The pinned, hashed requirements file (pip install --require-hashes), as shipped."""
        return (directory / self.requirements).read_text(encoding="utf-8")


class _OnnxFile(Frozen):
    server: OnnxServer
    onnx_models: tuple[OnnxBuild, ...]


@cache
def _onnx_file(directory: Path = CATALOG_DIR) -> _OnnxFile:
    return _load(directory / "onnx_models.yaml", _OnnxFile)


@cache
def load_onnx_builds(directory: Path = CATALOG_DIR) -> dict[str, OnnxBuild]:
    return _index(directory / "onnx_models.yaml", "onnx_models", _onnx_file(directory).onnx_models)


def load_onnx_server(directory: Path = CATALOG_DIR) -> OnnxServer:
    return _onnx_file(directory).server


def onnx_weights_bytes(arch: ModelArchitecture, variant: OnnxVariant) -> int:
    """Linear layers and lm_head in int4; the embedding table in the variant's io dtype."""
    embed = arch.vocab_size * arch.hidden_size
    body = arch.params_b * 1e9 - embed * (1 if arch.tie_word_embeddings else 2)
    return int((body + embed) * variant.linear_bits / 8 + embed * variant.io_bytes)


def onnx_kv_bytes_per_token(arch: ModelArchitecture, variant: OnnxVariant) -> int:
    """K and V of every layer, in the io dtype (no sliding-window savings: full buffers are allocated)."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * variant.io_bytes


def onnx_box_problem(hardware: Hardware) -> tuple[str, str] | None:
    """(hardware field, why) when an edge box cannot run the onnx server image, or None."""
    server = load_onnx_server()
    if hardware.cpu_arch not in server.platforms:
        return "cpu_arch", (
            f"runtime onnx needs a linux/{'|'.join(p.value for p in server.platforms)} box: {server.sdk} ships "
            f"Foundry Local's native library for those only (use runtime ollama or llamacpp on {hardware.cpu_arch.value})"
        )
    if hardware.gpu is not None:
        return "gpu", (
            f"runtime onnx serves CPU boxes only: {server.sdk}'s Linux packages carry ONNX Runtime's CPU execution "
            "provider, and Foundry Local would download a CUDA provider at run time (download_and_register_eps), "
            "which the box's internal network forbids and slm-deploy has not verified; use vllm, ollama or llamacpp on GPU boxes"
        )
    return None
