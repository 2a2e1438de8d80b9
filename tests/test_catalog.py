from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from slm_deploy.catalog import CATALOG_DIR, load_catalog
from slm_deploy.errors import InputError
from slm_deploy.spec import Quantization

REQUIRED_MODELS = {
    "microsoft/Phi-4-mini-instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-14B",
    "Qwen/Qwen3-32B",
    "google/gemma-3-1b-it",
    "google/gemma-3-4b-it",
    "google/gemma-3-12b-it",
    "google/gemma-3-27b-it",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "microsoft/Phi-3.5-mini-instruct",
    "microsoft/phi-4",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
}
REQUIRED_GPUS = {
    "t4",
    "l4",
    "l40s",
    "a10",
    "a100-40gb",
    "a100-80gb",
    "h100-80gb",
    "h100-nvl-94gb",
    "rtx-3090",
    "rtx-4090",
    "rtx-4000-ada",
    "jetson-orin-64gb",
}
REQUIRED_IMAGES = {
    "vllm",
    "ollama",
    "llamacpp",
    "open-webui",
    "prometheus",
    "grafana",
    "node-exporter",
    "dcgm-exporter",
    "gateway",
}


def test_every_catalog_loads_with_the_required_entries() -> None:
    catalog = load_catalog()
    assert {m.hf_repo for m in catalog.models.values()} >= REQUIRED_MODELS
    assert set(catalog.gpus) >= REQUIRED_GPUS
    assert set(catalog.images) >= REQUIRED_IMAGES
    for model in catalog.models.values():
        assert model.source and model.license
        assert model.gguf_file(Quantization.Q4_K_M).endswith("Q4_K_M.gguf")
    # The device reports less than the memory on the board (driver, ECC and firmware reserves).
    for gpu in catalog.gpus.values():
        assert gpu.memory_gib < gpu.marketing_gb, gpu.id
    assert catalog.gpus["jetson-orin-64gb"].unified_memory
    assert catalog.gpus["jetson-orin-64gb"].host_arch.value == "arm64"


def test_images_are_pinned_never_latest() -> None:
    for image in load_catalog().images.values():
        assert image.tag not in {"latest", "main", "nightly", "stable"}, image.id
        assert any(ch.isdigit() for ch in image.tag), image.id


def test_reference_architecture_numbers() -> None:
    models = load_catalog().models
    phi = models["phi-4-mini-instruct"]
    assert (phi.layers, phi.kv_heads, phi.head_dim, phi.max_context) == (32, 8, 128, 131072)
    gemma = models["gemma-3-1b-it"]
    assert (gemma.layers, gemma.kv_heads, gemma.head_dim, gemma.sliding_window) == (26, 1, 256, 512)
    assert models["qwen3-8b"].max_context == 40960
    assert models["qwen3-8b"].ollama_tag(Quantization.Q4_K_M) == "qwen3:8b-q4_K_M"


def _broken_copy(tmp_path: Path, filename: str, mutate: object) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = yaml.safe_load((target / filename).read_text())
    mutate(data)  # type: ignore[operator]
    (target / filename).write_text(yaml.safe_dump(data))
    return target


@pytest.mark.parametrize(
    ("filename", "mutate", "expected"),
    [
        ("gpus.yaml", lambda d: d["gpus"][0].update(memory_gib=-1), "gpus[0].memory_gib"),
        ("models.yaml", lambda d: d["models"][2].update(layer_count=3), "models[2].layer_count: unknown field"),
        ("models.yaml", lambda d: d["models"].append(dict(d["models"][0])), "duplicate id 'phi-4-mini-instruct'"),
        ("images.yaml", lambda d: d["images"][0].update(tag="latest :x"), "images[0].tag"),
        ("gpus.yaml", lambda d: d["vm_sizes"][0].update(gpu="v100"), "vm_sizes[0].gpu: unknown GPU 'v100'"),
    ],
)
def test_inconsistent_catalog_entries_fail_loading(tmp_path: Path, filename: str, mutate: object, expected: str) -> None:
    broken = _broken_copy(tmp_path, filename, mutate)
    with pytest.raises(InputError) as info:
        load_catalog.__wrapped__(broken)
    assert expected in str(info.value)
    assert str(info.value).startswith(filename)
