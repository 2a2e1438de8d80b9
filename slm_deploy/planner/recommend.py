"""The cheapest catalog VM size a request fits on."""

from __future__ import annotations

from dataclasses import replace

from slm_deploy.catalog import Catalog, VmSize
from slm_deploy.planner.evaluate import evaluate
from slm_deploy.planner.lookup import hardware_for_vm
from slm_deploy.planner.types import Request, Target
from slm_deploy.spec import Hardware, Runtime


def recommend(req: Request, host: Hardware, catalog: Catalog) -> tuple[Target, VmSize] | None:
    """The cheapest catalog VM size that fits: fewest GPUs, then least GPU memory."""

    def cost(vm: VmSize) -> tuple[int, float, int, float]:
        return vm.gpu_count, catalog.gpus[vm.gpu].memory_gib, vm.vcpus, vm.memory_gib

    for vm in sorted(catalog.vm_sizes.values(), key=cost):
        if req.runtime is not Runtime.VLLM and vm.gpu_count > 1:
            continue
        target = Target("gpu", catalog.gpus[vm.gpu], vm.gpu_count, hardware_for_vm(vm), vm.id)
        trial = replace(req, tp=vm.gpu_count if req.runtime is Runtime.VLLM else 1)
        if evaluate(trial, target).fits:
            return target, vm
    return None
