"""Lookups: a Serving's model (catalog, inline or resolved from the Hub or Ollama) and a Hardware's GPU."""

from __future__ import annotations

import re

from slm_deploy.catalog import Catalog, Gpu, VmSize, nearest
from slm_deploy.errors import InputError
from slm_deploy.onnx_builds import load_onnx_builds
from slm_deploy.planner.types import ModelInfo, Target
from slm_deploy.spec import GpuAttachment, Hardware, Runtime, Serving


def resolve_model(serving: Serving, catalog: Catalog, source: str = "spec", field_name: str = "model") -> ModelInfo:
    entry = catalog.models.get(serving.model) or catalog.model_by_repo(serving.model)
    if entry is not None:
        if serving.architecture is not None:
            raise InputError(source, "architecture", f"{entry.id!r} is a catalog model; drop the inline architecture")
        if serving.runtime is Runtime.ONNX and entry.id not in load_onnx_builds():
            raise InputError(
                source,
                field_name,
                f"{entry.id} has no ONNX Runtime GenAI build in the catalog; "
                f"onnx builds: {', '.join(sorted(load_onnx_builds()))}",
            )
        return ModelInfo(entry.id, entry.hf_repo, entry, entry)
    if serving.runtime is Runtime.ONNX:
        raise InputError(source, "runtime", "onnx needs a catalog model with an ONNX Runtime GenAI build (onnx_models.yaml)")
    if serving.architecture is None:
        from slm_deploy.resolve import is_reference, resolve

        if is_reference(serving.model):
            found = resolve(serving.model, serving.runtime, serving.quantization, source, field_name)
            return ModelInfo(found.model_id, found.repo, found.arch, None, found)
        raise InputError(
            source,
            field_name,
            f"unknown model {serving.model!r}; nearest catalog ids: {nearest(serving.model, list(catalog.models))} "
            "(or a Hugging Face repo owner/name, an Ollama tag name:tag)",
        )
    if not _INLINE_REPO.match(serving.model):
        raise InputError(source, field_name, "a model with an inline architecture must be a Hugging Face repo id (owner/name)")
    if serving.runtime is not Runtime.VLLM:
        raise InputError(source, "runtime", f"{serving.runtime.value} needs a catalog model (it loads GGUF files)")
    model_id = serving.model.split("/", 1)[1].lower()
    return ModelInfo(model_id, serving.model, serving.architecture, None)


_INLINE_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_gpu(name: str, catalog: Catalog, source: str = "--gpu", field_name: str = "gpu") -> tuple[Gpu, int, str | None]:
    """A catalog GPU id (count 1) or an Azure VM size (its GPU model and count)."""
    if name in catalog.gpus:
        return catalog.gpus[name], 1, None
    for vm in catalog.vm_sizes.values():
        if vm.id.lower() == name.lower():
            return catalog.gpus[vm.gpu], vm.gpu_count, vm.id
    known = list(catalog.gpus) + list(catalog.vm_sizes)
    raise InputError(source, field_name, f"unknown GPU or VM size {name!r}; nearest: {nearest(name, known)}")


def hardware_for_vm(vm: VmSize) -> Hardware:
    return Hardware(cpus=vm.vcpus, memory_gib=vm.memory_gib, gpu=GpuAttachment(model=vm.gpu, count=vm.gpu_count))


def resolve_target(hardware: Hardware, catalog: Catalog, source: str = "spec", prefix: str = "hardware") -> Target:
    if hardware.gpu is None:
        return Target("cpu", None, 0, hardware)
    gpu, count, vm = resolve_gpu(hardware.gpu.model, catalog, source, f"{prefix}.gpu.model")
    if gpu.host_arch is not hardware.cpu_arch:
        raise InputError(
            source,
            f"{prefix}.cpu_arch",
            f"{gpu.id} is an {gpu.host_arch.value} device; set cpu_arch: {gpu.host_arch.value}",
        )
    return Target("gpu", gpu, count * hardware.gpu.count, hardware, vm)


# ---------------------------------------------------------------------------------------------
# Arithmetic
