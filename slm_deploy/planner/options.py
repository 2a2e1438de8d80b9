"""`slm-deploy plan`'s options -> a Serving and a Hardware (or none: recommend one) -> a Plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm_deploy.catalog import load_catalog
from slm_deploy.errors import InputError
from slm_deploy.planner.lookup import resolve_gpu
from slm_deploy.planner.planning import plan
from slm_deploy.planner.types import Plan
from slm_deploy.spec import CpuArch, GpuAttachment, Hardware, Serving


@dataclass(frozen=True)
class MachineOptions:
    """The machine as the command line describes it; `gpu` and `cpu_only` both unset: recommend one."""

    gpu: str | None
    gpu_count: int | None
    gpu_memory_gib: float | None
    cpu_only: bool
    cpus: int
    memory_gib: float
    cpu_arch: str | None


def plan_from_options(serving_options: dict[str, Any], machine: MachineOptions) -> Plan:
    """Every inconsistency among the options is an InputError naming the option (source `arguments`)."""
    gpu, gpu_count, gpu_memory_gib = machine.gpu, machine.gpu_count, machine.gpu_memory_gib
    if gpu and machine.cpu_only:
        raise InputError("arguments", "--cpu", "give --gpu or --cpu, not both")
    if gpu_count is not None and not gpu:
        raise InputError("arguments", "--gpu-count", "needs --gpu (the GPU model or VM size it counts)")
    serving = Serving.model_validate({k: v for k, v in serving_options.items() if v is not None})
    catalog = load_catalog()
    hardware: Hardware | None = None
    if gpu_memory_gib is not None and not gpu:
        raise InputError("arguments", "--gpu-memory-gib", "also give --gpu: the catalog GPU closest to yours")
    if gpu:
        device, vm_gpus, vm = resolve_gpu(gpu, catalog, "arguments", "--gpu")
        host = catalog.vm_sizes[vm] if vm else None
        if host is not None and gpu_count is not None:
            if gpu_count != vm_gpus:
                hint = f"{vm} has {vm_gpus} GPU(s); leave --gpu-count out or give {vm_gpus}"
                raise InputError("arguments", "--gpu-count", hint)
            gpu_count = None  # the VM size already counts its GPUs
        model_name = gpu
        if gpu_memory_gib is not None:
            custom = device.model_copy(
                update={
                    "id": f"{device.id}-custom",
                    "name": f"{device.name} with {gpu_memory_gib:g} GiB",
                    "memory_gib": gpu_memory_gib,
                    "source": "--gpu-memory-gib",
                }
            )
            catalog = catalog.model_copy(update={"gpus": {**catalog.gpus, custom.id: custom}})
            model_name = custom.id
        hardware = Hardware(
            cpu_arch=CpuArch(machine.cpu_arch) if machine.cpu_arch else device.host_arch,
            cpus=host.vcpus if host else machine.cpus,
            memory_gib=host.memory_gib if host else machine.memory_gib,
            gpu=GpuAttachment(model=model_name, count=gpu_count or (vm_gpus if gpu_memory_gib is not None else 1)),
        )
    elif machine.cpu_only:
        hardware = Hardware(
            cpu_arch=CpuArch(machine.cpu_arch or CpuArch.AMD64.value), cpus=machine.cpus, memory_gib=machine.memory_gib
        )
    return plan(serving, hardware, catalog=catalog, source="arguments", hardware_path="--gpu")
