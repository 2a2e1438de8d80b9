"""The `slm-deploy` command line: parse, call the layer below, print. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from slm_deploy import __version__
from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.spec import CpuArch, GpuAttachment, Hardware, KvCacheDtype, Quantization, Runtime, Serving

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
        except OSError as exc:  # a disk or path problem not caught nearer: still one line (issue 10)
            where = exc.filename if exc.filename is not None else "output"
            fail(f"{where}: {exc.strerror or exc.__class__.__name__}")
        except RecursionError:
            fail("input: nested too deeply")

    return wrapper  # type: ignore[return-value]


class NonEmptyPath(click.Path):
    """A path that may not be empty: click would turn `--out ''` into Path('.'), the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; name a folder or file", param, ctx)
        return super().convert(value, param, ctx)


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
@click.option("--gpu-count", type=click.IntRange(min=1), default=None, help="GPUs of that model (default: 1, or the VM size's).")
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
@click.option(
    "--max-num-batched-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="vLLM: tokens per scheduler step (default: vLLM's own).",
)
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
    max_num_batched_tokens: int | None,
    as_json: bool,
) -> None:
    """Size MODEL on a GPU, a CPU-only box, or (neither given) recommend a GPU size.

    Exit 0 when it fits, 2 (with the reason and suggestions) when it cannot.
    """
    from slm_deploy.catalog import load_catalog
    from slm_deploy.planner import plan as make_plan
    from slm_deploy.planner import resolve_gpu
    from slm_deploy.report import plan_table

    if gpu and cpu_only:
        raise InputError("arguments", "--cpu", "give --gpu or --cpu, not both")
    if gpu_count is not None and not gpu:
        raise InputError("arguments", "--gpu-count", "needs --gpu (the GPU model or VM size it counts)")
    options: dict[str, Any] = {
        "model": model,
        "runtime": runtime,
        "quantization": quantization,
        "context": context,
        "concurrency": concurrency,
        "kv_cache_dtype": kv_cache_dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "tensor_parallel": tensor_parallel,
        "max_num_batched_tokens": max_num_batched_tokens,
    }
    serving = Serving.model_validate({k: v for k, v in options.items() if v is not None})
    catalog = load_catalog()
    hardware: Hardware | None = None
    if gpu:
        device, vm_gpus, vm = resolve_gpu(gpu, catalog, "arguments", "--gpu")
        host = catalog.vm_sizes[vm] if vm else None
        if host is not None and gpu_count is not None:
            if gpu_count != vm_gpus:
                hint = f"{vm} has {vm_gpus} GPU(s); leave --gpu-count out or give {vm_gpus}"
                raise InputError("arguments", "--gpu-count", hint)
            gpu_count = 1  # the VM size already counts its GPUs
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


@main.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=NonEmptyPath(path_type=Path), help="Directory for the bundles.")
@click.option("--box", "box_ids", multiple=True, help="Only this box (repeatable).")
@click.option("--tar", "as_tar", is_flag=True, help="Also write a reproducible BOX.tar.gz per box.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace what is at OUT/<box id> even when it is not one of our bundles (operator files are kept).",
)
@clear_errors
def bundle(fleet_file: Path, out_dir: Path, box_ids: tuple[str, ...], as_tar: bool, as_json: bool, force: bool) -> None:
    """Write one hardened compose bundle per box of FLEET into OUT/<box id>.

    A folder there is replaced only when it is one of our bundles; the operator's files in it
    (secrets/, .env, compose.override.yaml, certs/, image.tar) are kept.
    """
    from slm_deploy.bundle.swap import older_leftovers
    from slm_deploy.bundle.verify import manifest_digest
    from slm_deploy.bundle.writer import build_fleet, select_boxes, write_boxes
    from slm_deploy.fleet import load_fleet
    from slm_deploy.report import bundle_summary, progress_bar

    fleet = load_fleet(fleet_file)
    boxes = select_boxes(fleet, box_ids)
    with progress_bar(len(boxes), enabled=not as_json) as advance:
        bundles = build_fleet(fleet, boxes, progress=advance)
    write_boxes(out_dir, bundles, force=force, tars=as_tar)
    for leftover in older_leftovers(out_dir, [b.box.id for b in bundles]):
        click.echo(f"note: {leftover} was left by an interrupted older run and may hold secrets; not removed", err=True)
    rows = [
        {
            "box": b.box.id,
            "runtime": p.runtime,
            "model": p.model,
            "quantization": p.quantization,
            "context": p.context,
            "concurrency": p.concurrency,
            "device": p.device,
            "memory_used_gib": p.memory_used_gib,
            "device_memory_gib": p.device_memory_gib,
            "manifest_sha256": manifest_digest(b.files["MANIFEST.json"]),
        }
        for b in bundles
        for p in b.plans
    ]
    if as_json:
        print_json({"out": str(out_dir), "boxes": rows})
    else:
        bundle_summary(rows, out_dir)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--expect",
    metavar="sha256:DIGEST",
    help="The manifest digest `bundle` printed (keep it off the box): the manifest must match it.",
)
@clear_errors
def verify(directory: Path, expect: str | None) -> None:
    """Re-hash a bundle against its MANIFEST.json; exit 1 on a missing, extra, changed or wrongly
    moded file, or (with --expect) a manifest that is not the one generated."""
    import re

    from slm_deploy.bundle.verify import verify_bundle

    if expect is not None and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", expect.strip()):
        raise InputError("arguments", "--expect", "expected sha256: and 64 hex digits, as `slm-deploy bundle` prints")
    report = verify_bundle(directory, expect)
    for label, paths in (
        ("missing", report.missing),
        ("extra", report.extra),
        ("changed", report.changed),
        ("mode", report.modes),
    ):
        for path in paths:
            click.echo(f"{label}: {path}")
    if not report.ok:
        sys.exit(1)
    how = "the expected digest and " if expect else ""
    click.echo(f"ok: {directory} matches {how}its MANIFEST.json ({report.digest})")


@main.command()
@click.argument("stack")
@click.option("--out", "out_text", type=str, help="Write each Kubernetes resource as a manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print resources and outputs as JSON.")
@click.option(
    "--project",
    "--project-dir",
    "project_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Pulumi project folder holding Pulumi.yaml and Pulumi.STACK.yaml (default: the current folder).",
)
@clear_errors
def preview(stack: str, out_text: str | None, as_json: bool, project_dir: Path | None) -> None:
    """Run the Pulumi program for Pulumi.STACK.yaml offline, under the SDK's mocks.

    Not `pulumi preview`: no engine, providers or cloud are involved. It lists what the program
    declares and, with --out, renders the Kubernetes manifests it would send.
    """
    from slm_deploy.preview import run_preview, write_manifests
    from slm_deploy.report import preview_table

    if out_text is not None and not out_text.strip():
        raise InputError("arguments", "--out", "an empty path; name a folder for the manifests")
    out_dir = Path(out_text) if out_text is not None else None
    result = run_preview(stack, project_dir or Path.cwd())
    if result.ignored_environment:
        click.echo(
            f"note: ignored {', '.join(result.ignored_environment)} from the environment: this offline preview renders "
            f"Pulumi.{stack}.yaml as written (under `pulumi up` the Pulumi CLI passes the stack's own configuration)",
            err=True,
        )
    written = write_manifests(result, out_dir) if out_dir else []
    if as_json:
        print_json(
            {
                "stack": stack,
                "resources": [{"type": t, "name": n, "parent": p} for t, n, p in result.table_rows()],
                "outputs": {k: v for k, v in sorted(result.outputs.items())},
                "secret_outputs": sorted(result.secret_outputs),
                "manifests": [str(p) for p in written],
            }
        )
    else:
        preview_table(result.stack, result.table_rows(), len(written), out_dir)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--stack", "stacks", multiple=True, help="Review a stack through its offline preview (repeatable).")
@click.option("--fleet", "fleets", multiple=True, type=click.Path(path_type=Path), help="Review a fleet's bundles.")
@click.option(
    "--project",
    "project_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Pulumi project folder for --stack (default: the current folder).",
)
@click.option("--sarif", "sarif_file", type=NonEmptyPath(path_type=Path), help="Write merged SARIF 2.1.0 here.")
@click.option("--json", "as_json", is_flag=True, help="Print findings and skips as JSON.")
@click.option(
    "--tool",
    "tools",
    multiple=True,
    help="Run only these tools (slm, checkov, detect-secrets, hadolint, compose, kubernetes-validate, promtool, yamllint).",
)
@clear_errors
def review(
    paths: tuple[Path, ...],
    stacks: tuple[str, ...],
    fleets: tuple[Path, ...],
    project_dir: Path | None,
    sarif_file: Path | None,
    as_json: bool,
    tools: tuple[str, ...],
) -> None:
    """Run every validator and policy over PATHS, stacks and fleets. Exit 1 on findings, 0 when clean."""
    from slm_deploy.report import review_table
    from slm_deploy.review import TOOLS, ToolMissing, sarif
    from slm_deploy.review import review as run_review

    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        raise InputError("arguments", "--tool", f"unknown tool {unknown[0]!r}; known: {', '.join(TOOLS)}")
    if not (paths or stacks or fleets):
        raise InputError("arguments", "PATHS", "nothing to review: give paths, --stack or --fleet")
    try:
        report = run_review(paths, stacks, fleets, tools=tools or None, project=project_dir)
    except ToolMissing as exc:
        raise InputError("review", "tools", f"{exc} is not installed") from None
    if sarif_file:
        from slm_deploy.atomicfile import write_atomic

        write_atomic(sarif_file, (json.dumps(sarif(report), indent=2, sort_keys=True) + "\n").encode())
    if as_json:
        print_json(
            {
                "clean": report.clean,
                "files": report.files,
                "distinct": report.distinct,
                "findings": [vars(f) for f in report.findings],
                "skipped": [{**vars(f), "reason": s.reason} for f, s in report.skipped],
                "tools": {k: vars(v) for k, v in sorted(report.tools.items())},
            }
        )
    else:
        review_table(report)
    if not report.clean:
        sys.exit(1)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so every clean-up (temporary folders, staged bundles) runs on SIGTERM too


def run() -> None:
    """The console script: click's usage errors become the same one-line `error:` as ours."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    try:
        main.main(prog_name="slm-deploy", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "slm-deploy"
        fail(f"arguments: {exc.format_message()} (see `{command} --help`)")
    except click.ClickException as exc:
        fail(f"arguments: {exc.format_message()}")
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C (and our SIGTERM) into Abort
        fail("interrupted: nothing half written is left behind")
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    run()
