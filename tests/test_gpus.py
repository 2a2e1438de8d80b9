"""GPUs users rent and buy, with device-reported memory, and --gpu-memory-gib for the rest."""

from __future__ import annotations

import json

import pytest

from slm_deploy.catalog import load_catalog
from tests.conftest import run_cli

ADDED = (
    "a10g",
    "l40s",
    "h200",
    "b200",
    "rtx-4080",
    "rtx-5090",
    "rtx-6000-ada",
    "gb10",
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "mi300x",
)


@pytest.mark.parametrize("gpu_id", ADDED)
def test_each_gpu_is_in_the_catalog_below_its_marketing_size(gpu_id: str) -> None:
    gpu = load_catalog().gpus[gpu_id]
    # The driver keeps part of the memory: the device reports less than the figure on the box,
    # read as GiB (HBM parts such as the H200's 141 GB are sold in GiB, GDDR parts in GB).
    assert gpu.memory_gib < gpu.marketing_gb
    if gpu_id != "l40s":  # the L40S entry predates sources
        assert gpu.source, f"{gpu_id} has no source for its memory figure"


def test_unified_and_arm_devices_are_marked() -> None:
    gpus = load_catalog().gpus
    for gpu_id in ("gb10", "jetson-orin-nano-8gb", "jetson-orin-nx-16gb"):
        assert gpus[gpu_id].unified_memory and gpus[gpu_id].host_arch.value == "arm64"
    assert gpus["mi300x"].vendor == "amd"


def test_plan_on_a_new_gpu_uses_its_device_memory() -> None:
    result = run_cli("plan", "--model", "qwen3-8b", "--gpu", "h200", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device_memory_gib"] == 139.81
    assert data["memory_budget_gib"] == round(0.9 * 139.81, 2)


def test_gpu_memory_gib_sizes_a_gpu_outside_the_catalog() -> None:
    small = run_cli("plan", "--model", "qwen3-8b", "--gpu", "l4", "--gpu-memory-gib", "12", "--json")
    assert small.returncode == 2
    data = json.loads(small.stdout)
    assert data["device_memory_gib"] == 12 and "exceed vLLM's budget of 10.8 GiB" in data["reason"]
    big = run_cli("plan", "--model", "qwen3-8b", "--gpu", "l4", "--gpu-memory-gib", "40", "--json")
    assert big.returncode == 0, big.stderr
    alone = run_cli("plan", "--model", "qwen3-8b", "--gpu-memory-gib", "40")
    assert alone.returncode == 2
    assert alone.stderr == "error: arguments: --gpu-memory-gib: also give --gpu: the catalog GPU closest to yours\n"
