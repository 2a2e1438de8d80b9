"""The catalogs (models, GPUs and Azure VM sizes, images): data files validated on load.

An inconsistent entry (negative size, unknown field, duplicate id) stops loading with an
`InputError` naming the file and entry. Loaded once per process.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.safeyaml import load_data
from slm_deploy.spec import CpuArch, Frozen, ModelArchitecture, PositiveFloat, PositiveInt, Quantization
from slm_deploy.supply.model import LockEntry

CATALOG_DIR = Path(__file__).parent

T = TypeVar("T", bound=BaseModel)


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


IdT = TypeVar("IdT", bound=_HasId)

# Spelling of each GGUF quantization in Ollama tags and in GGUF file names.
OLLAMA_QUANT_TAG = {
    Quantization.FP16: "fp16",
    Quantization.Q8_0: "q8_0",
    Quantization.Q5_K_M: "q5_K_M",
    Quantization.Q4_K_M: "q4_K_M",
}
GGUF_QUANT_NAME = {
    Quantization.FP16: "F16",
    Quantization.Q8_0: "Q8_0",
    Quantization.Q5_K_M: "Q5_K_M",
    Quantization.Q4_K_M: "Q4_K_M",
}


class GgufSource(Frozen):
    repo: str = Field(min_length=1)
    file: str = Field(pattern=r"\{QUANT\}.*\.gguf$")


class CatalogModel(ModelArchitecture):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    hf_repo: str = Field(pattern=r"^[\w.\-]+/[\w.\-]+$")
    gated: bool = False
    ollama: str = Field(pattern=r"^[\w.\-/]+:[\w.\-]*\{quant\}[\w.\-]*$")
    gguf: GgufSource
    ollama_quants: tuple[Quantization, ...] | None = None
    quantized: dict[Literal["awq", "gptq", "int8"], str] = Field(default_factory=dict)
    license: str = Field(min_length=1)
    source: str = Field(min_length=1)

    def ollama_tag(self, quant: Quantization) -> str:
        return self.ollama.replace("{quant}", OLLAMA_QUANT_TAG[quant])

    def gguf_file(self, quant: Quantization) -> str:
        return self.gguf.file.replace("{QUANT}", GGUF_QUANT_NAME[quant])


class Gpu(Frozen):
    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    name: str
    memory_gib: PositiveFloat = Field(description="Memory as the device reports it, GiB.")
    marketing_gb: PositiveFloat
    bandwidth_gbps: PositiveFloat
    compute_capability: PositiveFloat
    host_arch: CpuArch = CpuArch.AMD64
    unified_memory: bool = False
    vendor: Literal["nvidia", "amd"] = "nvidia"
    source: str | None = Field(default=None, description="Where memory_gib was read (a device-reported figure).")
    jetpack: str | None = None
    device_groups: tuple[str, ...] = Field(default=(), description="Groups that own the GPU's device nodes (Jetson: video).")


class VmSize(Frozen):
    id: str = Field(pattern=r"^Standard_\w+$")
    gpu: str
    gpu_count: PositiveInt
    vcpus: PositiveInt
    memory_gib: PositiveFloat


class Image(Frozen):
    id: str = Field(pattern=r"^[a-z0-9\-]+$")
    repository: str = Field(min_length=1)
    tag: str = Field(pattern=r"^[\w][\w.\-]*$")
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    source: str | None = Field(default=None, description="Where repository and tag were read (chart images: the chart's values).")
    live_tested: str | None = Field(
        default=None,
        description="The upstream version the live tests ran for real (the package and version), or why none runs here.",
    )
    locked: LockEntry | None = Field(default=None, exclude=True, description="Set from the lock, never from images.yaml.")

    @property
    def ref(self) -> str:
        """The one place an image reference is spelled: repository:tag@sha256:... once locked."""
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


class WrittenPath(Frozen):
    path: str = Field(min_length=1)
    mode: str = Field(pattern=r"^0[0-7]{3}$")
    unless_env: str | None = None


class EntrypointScript(Frozen):
    shell: str
    runs: str


class ImageProfile(Frozen):
    """What a pinned image does when it starts (see the `profiles` comment in images.yaml)."""

    image: str
    user: str = Field(pattern=r"^\d+:\d+$")
    home: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...] = ()
    workdir: str | None = None
    entrypoint_script: EntrypointScript | None = None
    file_capabilities: dict[str, str] = Field(default_factory=dict)
    binaries: tuple[str, ...] = Field(min_length=1)
    writes_at_start: tuple[WrittenPath, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict)
    needs_environment: tuple[str, ...] = ()
    exec_caches: tuple[str, ...] = ()
    downloads_at_start: str | None = None
    # False: the server closes a connection after a response without saying so (no `Connection:
    # close`), so a proxy that reuses it races the close and a POST sent on it fails (Go's
    # "server closed idle connection": Caddy answers 502); the gateway opens one per request.
    upstream_keepalive: bool = True
    source: str = Field(min_length=1)


class Chart(Frozen):
    id: str
    repository: str
    chart: str
    version: str = Field(pattern=r"^v?\d+\.\d+\.\d+$")
    source: str | None = None


class _ModelsFile(Frozen):
    models: tuple[CatalogModel, ...]


class _GpusFile(Frozen):
    gpus: tuple[Gpu, ...]
    vm_sizes: tuple[VmSize, ...]


class _ImagesFile(Frozen):
    images: tuple[Image, ...]
    charts: tuple[Chart, ...]
    profiles: tuple[ImageProfile, ...] = ()


def _load(path: Path, model: type[T]) -> T:
    try:
        data = load_data(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), "", f"cannot read catalog: {exc}".replace("\n", " ")) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(path.name, exc) from None


def _index(path: Path, key: str, entries: tuple[IdT, ...]) -> dict[str, IdT]:
    out: dict[str, IdT] = {}
    for i, entry in enumerate(entries):
        entry_id = entry.id
        if entry_id in out:
            raise InputError(path.name, f"{key}[{i}].id", f"duplicate id {entry_id!r}")
        out[entry_id] = entry
    return out


class Catalog(BaseModel):
    """All catalogs, cross-checked: every VM size names a known GPU."""

    models: dict[str, CatalogModel]
    gpus: dict[str, Gpu]
    vm_sizes: dict[str, VmSize]
    images: dict[str, Image]
    charts: dict[str, Chart]
    profiles: dict[str, ImageProfile] = Field(default_factory=dict)
    # Set by supply.lock.apply when the lock that pinned the images is example data: what it says of itself.
    lock_example: str | None = None

    def model_by_repo(self, repo: str) -> CatalogModel | None:
        lowered = repo.lower()
        for model in self.models.values():
            if model.hf_repo.lower() == lowered or any(q.lower() == lowered for q in model.quantized.values()):
                return model
        return None


def nearest(name: str, known: list[str], n: int = 3) -> str:
    """A hint for an unknown id: the closest known ids, or the first few."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    picks = [lowered[c] for c in close] or sorted(known)[:n]
    return ", ".join(picks)


@cache
def load_catalog(directory: Path = CATALOG_DIR) -> Catalog:
    models_path, gpus_path, images_path = (directory / n for n in ("models.yaml", "gpus.yaml", "images.yaml"))
    models = _load(models_path, _ModelsFile)
    gpus = _load(gpus_path, _GpusFile)
    images = _load(images_path, _ImagesFile)
    catalog = Catalog(
        models=_index(models_path, "models", models.models),
        gpus=_index(gpus_path, "gpus", gpus.gpus),
        vm_sizes=_index(gpus_path, "vm_sizes", gpus.vm_sizes),
        images=_index(images_path, "images", images.images),
        charts=_index(images_path, "charts", images.charts),
        profiles={p.image: p for p in images.profiles},
    )
    for i, profile in enumerate(images.profiles):
        if profile.image not in catalog.images:
            raise InputError(images_path.name, f"profiles[{i}].image", f"unknown image {profile.image!r}")
    for i, vm in enumerate(gpus.vm_sizes):
        if vm.gpu not in catalog.gpus:
            raise InputError(gpus_path.name, f"vm_sizes[{i}].gpu", f"unknown GPU {vm.gpu!r}")
    return catalog
