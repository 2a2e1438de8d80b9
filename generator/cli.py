"""The `slm-deploy` command line: parse, call the layer below, print. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from generator import __version__
from generator.errors import InputError, from_validation_error
from generator.spec import CpuArch, GpuAttachment, Hardware, KvCacheDtype, Quantization, Runtime, Serving

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def clear_errors(func: F) -> F:
    """Every bad input becomes one `error:` line and exit 2; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except ValidationError as exc:
            fail(str(from_validation_error("arguments", exc)))

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slm-deploy")
def main() -> None:
    """Plan, generate, preview and review deployments of small language models."""


def _choice(enum: type[Any]) -> click.Choice[str]:
    return click.Choice([e.value for e in enum], case_sensitive=False)


@main.command()
@click.option("--model", "model", required=True, help="Catalog model id or Hugging Face repo id.")
@click.option("--gpu", help="Catalog GPU id (l4, a100-80gb, ...) or Azure VM size (Standard_NC24ads_A100_v4).")
@click.option(
    "--gpu-count", type=click.IntRange(min=1), default=None, help="GPUs of that model (default: 1, or the VM size's)."
)
@click.option("--cpu", "cpu_only", is_flag=True, help="Plan for a CPU-only machine.")
@click.option("--cpus", type=click.IntRange(min=1), default=8, show_default=True, help="CPU cores of the machine.")
@click.option("--memory-gib", type=click.FloatRange(min=0.5), default=32.0, show_default=True, help="Host RAM, GiB.")
@click.option("--cpu-arch", type=_choice(CpuArch), default=None, help="amd64 or arm64 (default: the GPU's host).")
@click.option("--runtime", type=_choice(Runtime), default=Runtime.VLLM.value, show_default=True)
@click.option("--quantization", type=_choice(Quantization), default=None, help="Default: bf16 (vllm), q4_k_m (GGUF).")
@click.option("--context", type=click.IntRange(min=1), default=None, help="Max context per request, tokens.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Concurrent requests to hold.")
@click.option("--kv-cache-dtype", type=_choice(KvCacheDtype), default=None)
@click.option("--gpu-memory-utilization", type=float, default=None, help="vLLM: fraction of each GPU to reserve.")
@click.option("--tensor-parallel", type=click.IntRange(min=1), default=None, help="vLLM: GPUs per replica.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@clear_errors
def plan(
    model: str,
    gpu: str | None,
    gpu_count: int | None,
    cpu_only: bool,
    cpus: int,
    memory_gib: float,
    cpu_arch: str | None,
    runtime: str,
    quantization: str | None,
    context: int | None,
    concurrency: int | None,
    kv_cache_dtype: str | None,
    gpu_memory_utilization: float | None,
    tensor_parallel: int | None,
    as_json: bool,
) -> None:
    """Size MODEL on a GPU, a CPU-only box, or (neither given) recommend a GPU size.

    Exit 0 when it fits, 2 (with the reason and suggestions) when it cannot.
    """
    from generator.catalog import load_catalog
    from generator.planner import plan as make_plan
    from generator.planner import resolve_gpu
    from generator.report import plan_table

    if gpu and cpu_only:
        raise InputError("arguments", "--cpu", "give --gpu or --cpu, not both")
    options: dict[str, Any] = {
        "model": model,
        "runtime": runtime,
        "quantization": quantization,
        "context": context,
        "concurrency": concurrency,
        "kv_cache_dtype": kv_cache_dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "tensor_parallel": tensor_parallel,
    }
    serving = Serving.model_validate({k: v for k, v in options.items() if v is not None})
    catalog = load_catalog()
    hardware: Hardware | None = None
    if gpu:
        device, _, vm = resolve_gpu(gpu, catalog, "arguments", "--gpu")
        host = catalog.vm_sizes[vm] if vm else None
        hardware = Hardware(
            cpu_arch=CpuArch(cpu_arch) if cpu_arch else device.host_arch,
            cpus=host.vcpus if host else cpus,
            memory_gib=host.memory_gib if host else memory_gib,
            gpu=GpuAttachment(model=gpu, count=gpu_count or 1),
        )
    elif cpu_only:
        hardware = Hardware(cpu_arch=CpuArch(cpu_arch or CpuArch.AMD64.value), cpus=cpus, memory_gib=memory_gib)
    result = make_plan(serving, hardware, catalog=catalog, source="arguments", hardware_path="--gpu")
    if as_json:
        print_json(result.to_json())
    else:
        plan_table(result)
    if not result.fits:
        hints = "; ".join(s.change for s in result.suggestions) or "none in the catalog"
        fail(f"plan: {result.model} on {result.hardware}: does not fit: {result.reason}; try: {hints}")


if __name__ == "__main__":  # pragma: no cover
    main()
