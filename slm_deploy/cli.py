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


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name="slm-deploy")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Plan, generate, preview and review deployments of small language models."""
    if ctx.invoked_subcommand is None:  # a bare `slm-deploy` is a request for help, not an error
        click.echo(ctx.get_help())


def _choice(enum: type[Any]) -> click.Choice[str]:
    return click.Choice([e.value for e in enum], case_sensitive=False)


@main.command()
@click.option(
    "--model",
    "model",
    required=True,
    help="Catalog id, Hub repo (owner/name[@revision]), Ollama tag (name:tag) or hf.co/owner/repo:QUANT.",
)
@click.option("--gpu", help="Catalog GPU id (l4, a100-80gb, ...) or Azure VM size (Standard_NC24ads_A100_v4).")
@click.option("--gpu-count", type=click.IntRange(min=1), default=None, help="GPUs of that model (default: 1, or the VM size's).")
@click.option(
    "--gpu-memory-gib",
    type=click.FloatRange(min=1, max=4096),
    default=None,
    help="Memory the device reports (nvidia-smi / torch), GiB, for a GPU not in the catalog; --gpu names the closest one.",
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
    gpu_memory_gib: float | None,
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
            cpu_arch=CpuArch(cpu_arch) if cpu_arch else device.host_arch,
            cpus=host.vcpus if host else cpus,
            memory_gib=host.memory_gib if host else memory_gib,
            gpu=GpuAttachment(model=model_name, count=gpu_count or (vm_gpus if gpu_memory_gib is not None else 1)),
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
@click.option("--allow-unlocked", is_flag=True, help="Use tag-only references for images missing from the lock.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace what is at OUT/<box id> even when it is not one of our bundles (operator files are kept).",
)
@click.option(
    "--allow-example-lock",
    is_flag=True,
    help="Accept the packaged example lock (digests no registry serves: for tests; the README says so).",
)
@clear_errors
def bundle(
    fleet_file: Path,
    out_dir: Path,
    box_ids: tuple[str, ...],
    as_tar: bool,
    as_json: bool,
    allow_unlocked: bool,
    force: bool,
    allow_example_lock: bool,
) -> None:
    """Write one hardened compose bundle per box of FLEET into OUT/<box id>.

    Images are pinned by images.lock.yaml beside FLEET (else the lock shipped with the catalog).
    A folder there is replaced only when it is one of our bundles; the operator's files in it
    (secrets/, .env, compose.override.yaml, certs/, images.tar, gateway/tls_cert.pem) are kept.
    """
    from slm_deploy.bundle.swap import older_leftovers
    from slm_deploy.bundle.verify import manifest_digest
    from slm_deploy.bundle.writer import build_fleet, refuse_example_lock, select_boxes, write_boxes
    from slm_deploy.fleet import load_fleet
    from slm_deploy.report import bundle_summary, progress_bar

    fleet = load_fleet(fleet_file)
    if not allow_unlocked:
        refuse_example_lock(fleet, allow_example_lock)
    boxes = select_boxes(fleet, box_ids)
    with progress_bar(len(boxes), enabled=not as_json) as advance:
        bundles = build_fleet(fleet, boxes, progress=advance, allow_unlocked=allow_unlocked)
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
    _example_lock_notice(fleet.directory)


def _example_lock_notice(directory: Path | None) -> None:
    from slm_deploy.supply.lock import example_notice

    notice = example_notice(directory)
    if notice:
        click.echo(notice, err=True)


@main.command()
@click.argument("directory", metavar="DIRECTORY|RELEASE.oci.tar", type=click.Path(path_type=Path))
@click.option(
    "--expect",
    metavar="sha256:DIGEST",
    help="The manifest digest `bundle` printed (keep it off the box): the manifest must match it.",
)
@click.option("--box", help="With a release archive: the box it must be addressed to.")
@click.option(
    "--allowed-signers", type=click.Path(path_type=Path, dir_okay=False), help="With a release archive: the release keys."
)
@clear_errors
def verify(directory: Path, expect: str | None, box: str | None, allowed_signers: Path | None) -> None:
    """Re-hash a bundle against its MANIFEST.json; exit 1 on a missing, extra, changed or wrongly
    moded file, or (with --expect) a manifest that is not the one generated.

    With a docker daemon at hand (on the box), also compare the loaded images with the digests in
    the bundle's images.lock.json; exit 1 when one differs.

    Given a release archive (`publish --layout`), check it as the box does before installing it:
    its signature against --allowed-signers, that it is addressed to --box, and every digest."""
    import re

    if directory.is_file() or box or allowed_signers:
        if not box or not allowed_signers:
            raise InputError(
                "arguments", "--box" if not box else "--allowed-signers", "a release archive needs --box and --allowed-signers"
            )
        from slm_deploy.rollout.commands import verify_release

        values = verify_release(directory, box, allowed_signers)
        click.echo(
            f"ok: {directory} is release {values['release']} (sequence {values['sequence']}) of {values['fleet']} "
            f"for {values['box']}, "
            f"signed ({values['bundle']})"
        )
        return

    from slm_deploy.bundle.verify import verify_bundle
    from slm_deploy.supply.loaded import check

    if expect is not None and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", expect.strip()):
        raise InputError("arguments", "--expect", "expected sha256: and 64 hex digits, as `slm-deploy bundle` prints")
    report = verify_bundle(directory, expect)
    for label, paths in (
        ("missing", report.missing),
        ("extra", report.extra),
        ("changed", report.changed),
        ("mode", report.modes),
        ("digest", report.unexpected),
    ):
        for path in paths:
            click.echo(f"{label}: {path}")
    if not report.ok:
        sys.exit(1)
    how = "the expected digest and " if expect else ""
    click.echo(f"ok: {directory} matches {how}its MANIFEST.json ({report.digest})")
    images = check(directory)
    if images.skipped:
        click.echo(f"images: not checked: {images.skipped}")
        return
    for ref in images.unlocked:
        click.echo(f"images: not locked (bundle generated with --allow-unlocked), not compared: {ref}")
    for ref in images.absent:
        click.echo(f"images: not loaded yet (pulled by digest at `docker compose up`): {ref}")
    for line in images.wrong:
        click.echo(f"image differs: {line}")
    if images.wrong:
        sys.exit(1)
    click.echo(f"images: {len(images.ok)} loaded image(s) match images.lock.json")


@main.command()
@click.argument("stack")
@click.option(
    "--project",
    "--project-dir",
    "project_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Pulumi project folder holding Pulumi.STACK.yaml (default: the current folder).",
)
@click.option("--subscription", default=None, help="Subscription id (default: AZURE_SUBSCRIPTION_ID).")
@click.option(
    "--object-id", default=None, help="The deployer's object id (default: cluster.deployerObjectId, else the signed-in one)."
)
@click.option("--arm-endpoint", default=None, help="Azure Resource Manager URL (default: the public cloud's).")
@clear_errors
def preflight(
    stack: str, project_dir: Path | None, subscription: str | None, object_id: str | None, arm_endpoint: str | None
) -> None:
    """Ask Azure, before anything is created, whether STACK fits the subscription: VM sizes offered
    in the region, vCPU quota per VM family (maximum plus upgrade surge), regional and spot totals,
    the Kubernetes version, and the deployer's roles. Read-only; exit 1 when something will not fit.
    Needs `pip install 'slm-deploy[azure]'` and Azure credentials (az login, or the CI's OIDC login)."""
    from slm_deploy import preflight as checks

    target = checks.load_target(stack, project_dir or Path.cwd(), subscription)
    results = checks.run_preflight(target, checks.default_credential(), base_url=arm_endpoint, object_id=object_id)
    for check in results:
        click.echo(check.line())
    problems = sum(1 for c in results if not c.ok)
    click.echo(f"{target.source} in {target.location}: " + (f"{problems} problem(s)" if problems else "fits"))
    if problems:
        sys.exit(1)


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
@click.option("--allow-unlocked", is_flag=True, help="Use tag-only references for images missing from the lock.")
@click.option(
    "--from",
    "from_text",
    type=str,
    default=None,
    help="Compare with a previous state (a previous --out folder, or a stack file such as the previous commit's): "
    "what an `up` would replace, delete or be refused; exit 1 when it would be refused or lose data.",
)
@clear_errors
def preview(
    stack: str, out_text: str | None, as_json: bool, project_dir: Path | None, allow_unlocked: bool, from_text: str | None
) -> None:
    """Run the Pulumi program for Pulumi.STACK.yaml offline, under the SDK's mocks.

    Not `pulumi preview`: no engine, providers or cloud are involved. It lists what the program
    declares and, with --out, renders the Kubernetes manifests it would send.
    """
    from slm_deploy.preview import run_preview, transition_report, write_manifests, write_state
    from slm_deploy.report import preview_table
    from slm_deploy.stacks.runner import runner_requirements

    if allow_unlocked:
        import os

        from slm_deploy.supply.lock import ALLOW_UNLOCKED_ENV

        os.environ[ALLOW_UNLOCKED_ENV] = "1"  # what the program reads under `pulumi up` too
    if out_text is not None and not out_text.strip():
        raise InputError("arguments", "--out", "an empty path; name a folder for the manifests")
    out_dir = Path(out_text) if out_text is not None else None
    if from_text is not None and not from_text.strip():
        raise InputError("arguments", "--from", "an empty path; name a previous --out folder or a stack file")
    result = run_preview(stack, project_dir or Path.cwd())
    transition = transition_report(result, Path(from_text), project_dir or Path.cwd()) if from_text is not None else None
    if result.ignored_environment:
        click.echo(
            f"note: ignored {', '.join(result.ignored_environment)} from the environment: this offline preview renders "
            f"Pulumi.{stack}.yaml as written (under `pulumi up` the Pulumi CLI passes the stack's own configuration)",
            err=True,
        )
    written = write_manifests(result, out_dir) if out_dir else []
    if out_dir:
        write_state(result, out_dir)  # what a later `preview --from OUT` compares with
    if as_json:
        print_json(
            {
                "stack": stack,
                "resources": [{"type": t, "name": n, "parent": p} for t, n, p in result.table_rows()],
                "outputs": {k: v for k, v in sorted(result.outputs.items())},
                "secret_outputs": sorted(result.secret_outputs),
                "manifests": [str(p) for p in written],
                "runner": runner_requirements(result.environment),
            }
        )
    else:
        preview_table(result.stack, result.table_rows(), len(written), out_dir)
        click.echo("What the runner of `pulumi up` needs:")
        for line in runner_requirements(result.environment):
            click.echo(f"  - {line}")
    _example_lock_notice(project_dir or Path.cwd())
    if transition is not None:
        lines, blocking = transition
        click.echo("\n".join(lines), err=as_json)
        if blocking:
            sys.exit(1)


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
    help=(
        "Run only these tools (slm, checkov, detect-secrets, hadolint, compose, kubernetes-validate, promtool, yamllint, "
        "actionlint, zizmor)."
    ),
)
@click.option(
    "--require-tools",
    is_flag=True,
    envvar="SLM_REQUIRE_TOOLS",
    help="A validator that is not installed is an error (exit 2), not 'not run'. Also SLM_REQUIRE_TOOLS=1.",
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
    require_tools: bool,
) -> None:
    """Run every validator and policy over PATHS, stacks and fleets.

    Exit 1 on findings, 0 when clean, 2 on bad input. A validator whose program is not installed
    is listed as "not run" with how to install it; the review then still exits 0 when nothing was
    found, but says INCOMPLETE in the summary (and "complete": false in --json, and
    executionSuccessful false in SARIF). --require-tools makes a missing program exit 2.
    """
    from slm_deploy.review import review_command

    code = review_command(paths, stacks, fleets, project_dir, sarif_file, as_json, tools, require_tools)
    if code:
        sys.exit(code)


@main.group()
def image() -> None:
    """Build contexts for images no registry publishes (runtime onnx's server)."""


@image.command("onnx")
@click.argument("stack")
@click.option("--out", "out_dir", type=NonEmptyPath(path_type=Path, file_okay=False), required=True, help="A new folder.")
@click.option(
    "--project",
    "project_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Pulumi project folder holding Pulumi.STACK.yaml and images.lock.yaml (default: the current folder).",
)
@clear_errors
def image_onnx(stack: str, out_dir: Path, project_dir: Path | None) -> None:
    """Write the build context of each onnx model's server image of Pulumi.STACK.yaml into OUT.

    OUT/<model>/ holds the edge bundle's Dockerfile (the locked python base, hash-pinned wheels, the
    launcher): `docker buildx build --platform linux/amd64 -t IMAGE --push OUT/<model>` (IMAGE: the model's `image:`), then
    `slm-deploy lock --images OUT/images.yaml` pins it by digest for `pulumi up`.
    """
    from slm_deploy.stacks.onnx_image import build_contexts, write_contexts

    files = build_contexts(stack, project_dir or Path.cwd())
    write_contexts(files, out_dir)
    click.echo(f"wrote {out_dir}: {len(files)} files")


# Images of the user's own (a stack's models[].image) are asked for only through --images.
STALE_HINT = (
    "note: your own images (a stack's models[].image, e.g. runtime onnx's server) stay locked only when their "
    "images file is passed again: slm-deploy lock --images examples/stack-images.yaml (or yours)"
)


@main.command()
@click.option(
    "--lock", "lock_file", type=click.Path(path_type=Path, dir_okay=False), default="images.lock.yaml", show_default=True
)
@click.option(
    "--images", "images_files", multiple=True, type=click.Path(path_type=Path), help="Also lock these (images.yaml format)."
)
@click.option("--no-catalog", is_flag=True, help="Lock only the --images files, not the catalog's images.")
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a tag moved, an image is missing or an entry is stale.")
@click.option("--mirror", help="Resolve through this registry mirror (HOST[:PORT], images under HOST/<registry>/<path>).")
@click.option("--insecure-registry", "insecure", multiple=True, help="Allow plain HTTP to this host (loopback may).")
@clear_errors
def lock(
    lock_file: Path, images_files: tuple[Path, ...], no_catalog: bool, check: bool, mirror: str | None, insecure: tuple[str, ...]
) -> None:
    """Resolve every image to its digests on the registry and write them to the lock file.

    Exit 0 when written (or, with --check, when the lock matches the registry); 1 when --check finds
    a moved tag, a missing image or a stale entry (an image no longer asked for, which `lock` drops);
    2 when a registry cannot answer (nothing is written then).
    """
    from slm_deploy.catalog import load_catalog
    from slm_deploy.supply import lock as locking
    from slm_deploy.supply.registry import RegistryClient, RegistryError

    extra = [image for path in images_files for image in locking.load_images_file(path)]
    refs = locking.wanted_images(None if no_catalog else load_catalog(), extra)
    if not refs:
        raise InputError("arguments", "--images", "no images to lock")
    previous = locking.load(lock_file) if lock_file.exists() else None
    client = RegistryClient(insecure_hosts=frozenset(insecure))
    try:
        current = (locking.check if check else locking.resolve)(refs, client, previous, mirror=mirror)
    except RegistryError as exc:
        fail(f"lock: {exc}; {lock_file} {'left unchanged' if previous is not None else 'not written'}")
    moved = locking.compare(previous, current)
    stale = locking.stale(previous, refs)
    if check:
        for change in moved:
            old = change.old or "missing from the lock"
            click.echo(f"{'moved' if change.old else 'missing'}: {change.key}: {old} -> {change.new}")
        for key in stale:
            click.echo(f"stale: {key}: in the lock, but no longer in the catalog or the --images files")
        if stale:
            click.echo(STALE_HINT, err=True)
        if moved or stale:
            sys.exit(1)
        click.echo(f"ok: {lock_file}: {len(current)} images match the registry")
        return
    locking.write(lock_file, locking.LockFile(version=1, images=current))
    for key in stale:
        click.echo(f"removed: {key}: no longer in the catalog or the --images files")
    if stale:
        click.echo(STALE_HINT, err=True)
    click.echo(f"wrote {lock_file}: {len(current)} images, {len(moved)} changed, {len(stale)} removed")


@main.command()
@click.argument("url")
@click.option("--api-key-file", required=True, type=click.Path(path_type=Path, dir_okay=False), help="File holding the API key.")
@click.option("--cacert", type=click.Path(path_type=Path, dir_okay=False), help="CA or self-signed certificate to trust (PEM).")
@click.option("--model", help="Model to call (default: the first one listed).")
@click.option("--requests", "requests_", type=click.IntRange(1, 64), default=8, show_default=True, help="Requests in the burst.")
@click.option("--max-tokens", type=click.IntRange(1, 1024), default=32, show_default=True, help="Tokens per completion.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True, help="Seconds per request.")
@click.option("--min-cert-days", type=click.IntRange(0), default=14, show_default=True, help="Fail on an expiry sooner.")
@click.option("--metrics-url", help="Internal metrics address to check too (e.g. http://127.0.0.1:9180/metrics on the box).")
@click.option(
    "--connect-to",
    metavar="ADDRESS",
    help="Connect to this address instead of resolving URL's host; TLS is still checked against URL's host (curl --connect-to).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@clear_errors
def smoke(
    url: str,
    api_key_file: Path,
    cacert: Path | None,
    model: str | None,
    requests_: int,
    max_tokens: int,
    timeout: float,
    min_cert_days: int,
    metrics_url: str | None,
    connect_to: str | None,
    as_json: bool,
) -> None:
    """Test a deployed endpoint: TLS, auth, models, chat (plain and streamed), a latency burst, metrics.

    URL is the gateway's base address (https://box:8443, or .../<model name> on a shared gateway).
    Exit 0 when every check passes, 1 when one fails.
    """
    from slm_deploy.report import smoke_table
    from slm_deploy.smoke import read_api_key, run_smoke

    key = read_api_key(api_key_file)
    result = run_smoke(
        url,
        key,
        cacert=cacert,
        model=model,
        requests=requests_,
        max_tokens=max_tokens,
        timeout=timeout,
        metrics_url=metrics_url,
        min_cert_days=min_cert_days,
        connect_to=connect_to,
    )
    if as_json:
        print_json(result.to_json())
    else:
        smoke_table(result)
    if not result.passed:
        sys.exit(1)


@main.command("catalog")
@click.argument("kinds", nargs=-1, type=click.Choice(["models", "gpus", "vm-sizes", "images"]))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@clear_errors
def catalog_command(kinds: tuple[str, ...], as_json: bool) -> None:
    """List the models, GPUs, Azure VM sizes and images the catalog knows, each with its source
    (all four when none is named)."""
    from slm_deploy.catalog_listing import KINDS, catalog_rows, print_catalog

    listing = catalog_rows(tuple(dict.fromkeys(kinds)) or tuple(KINDS))
    if as_json:
        print_json(listing)
    else:
        print_catalog(listing)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask_init_choices(values: dict[str, Any]) -> None:
    """Ask for every choice not given, in an order where each default can follow the answers before."""
    from slm_deploy.scaffold import DEFAULT_VM_SIZES, InitChoices, installed_requirement

    def ask(name: str, text: str, default: Any = None) -> None:
        if name not in values:
            values[name] = click.prompt(text, default=default)

    fields = InitChoices.model_fields
    ask("model", "model", str(fields["model"].default))
    ask("runtime", "runtime (vllm, ollama, llamacpp, onnx)", str(fields["runtime"].default))
    onnx = str(values["runtime"]).lower() == Runtime.ONNX.value
    ask("vm_size", "vm size", DEFAULT_VM_SIZES["cpu" if onnx else "gpu"])
    if onnx:
        ask("image", "image your onnx server build is pushed to (REGISTRY/REPOSITORY:TAG)")
    ask("location", "location", str(fields["location"].default))
    if "api_ranges" not in values:
        answer = click.prompt("CIDR ranges allowed to reach the AKS API server (comma-separated)")
        values["api_ranges"] = tuple(r.strip() for r in answer.split(",") if r.strip())
    if "package" not in values:
        try:
            installed_requirement()
        except InputError as exc:  # a local install: no runner can install it, so ask where CI gets it
            click.echo(exc.message.split("; pass", 1)[0], err=True)
            values["package"] = click.prompt(
                "requirements.txt line CI installs slm-deploy with (slm-deploy @ git+https://...@<full commit>)"
            )


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--stack", "stacks", multiple=True, help="Stack names, cheapest first (default: dev, staging, prod).")
@click.option("--location", help="Azure region (default: westeurope).")
@click.option("--model", help="Catalog model id or Hugging Face repo id (default: phi-4-mini-instruct).")
@click.option("--runtime", type=_choice(Runtime), help="vllm, ollama, llamacpp or onnx (default: vllm).")
@click.option(
    "--vm-size",
    help="Azure VM size of the pool: a GPU size (default: Standard_NC8as_T4_v3), or for runtime onnx a CPU size "
    "(default: Standard_D8ds_v5). `slm-deploy catalog vm-sizes` lists them.",
)
@click.option(
    "--gpu-driver",
    type=click.Choice(["operator", "aks"]),
    help="Who installs GPU drivers (default: aks on a GRID size such as Standard_NV36ads_A10_v5, else operator).",
)
@click.option("--image", help="Runtime onnx (required): REGISTRY/REPOSITORY:TAG your build of its server is pushed to.")
@click.option("--context", type=click.IntRange(min=512), help="Max context per request, tokens (default: 8192).")
@click.option("--api-range", "api_ranges", multiple=True, help="CIDR allowed to reach the AKS API server (repeatable).")
@click.option("--edge-gpu", help="Catalog GPU of the example edge box (default: l4).")
@click.option("--fleet", "fleet_name", help="Fleet name (default: edge).")
@click.option(
    "--package",
    help="requirements.txt line that installs slm-deploy in CI, e.g. 'slm-deploy @ git+https://HOST/OWNER/slm-deploy@COMMIT' "
    "(default: how this slm-deploy was installed; required when that was a local folder or file).",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@clear_errors
def init(directory: Path, stacks: tuple[str, ...], force: bool, fleet_name: str | None, **options: Any) -> None:
    """Scaffold a deployment repository in DIRECTORY: fleet, Pulumi project and stacks, policy pack,
    README of day-2 commands and GitHub Actions workflows.

    Options not given are asked for when stdin is a terminal (--api-range, --package when this
    slm-deploy was installed from a local path, --image for runtime onnx) and take their defaults
    otherwise; --api-range has no default and is required.
    """
    from slm_deploy.scaffold import build_files, existing, installed_requirement, parse_choices, write_files

    values: dict[str, Any] = {k: v for k, v in options.items() if v not in (None, ())}
    if stacks:
        values["stacks"] = stacks
    if fleet_name:
        values["fleet"] = fleet_name
    if _interactive():
        _ask_init_choices(values)
    if "api_ranges" not in values:
        raise InputError(
            "arguments",
            "--api-range",
            "required: the CIDR ranges `pulumi up` reaches the AKS API server from (your CI runners' and operators' egress)",
        )
    choices = parse_choices(values)
    # Before anything is built: a local install needs --package (one line, exit 2, no file).
    requirement = choices.package or installed_requirement()
    files = build_files(choices, requirement)
    clashes = [] if force else existing(directory, files)
    if clashes:
        raise InputError(str(directory / clashes[0]), "", f"exists; {len(clashes)} file(s) would be overwritten (use --force)")
    write_files(directory, files)
    click.echo(f"wrote {len(files)} files to {directory}; next: read {directory / 'README.md'}")


@main.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--release", required=True, help="Release name (letters, digits, . _ -), e.g. 2026.12.06-1.")
@click.option("--key", required=True, type=click.Path(path_type=Path), help="The release signing key (OpenSSH private key).")
@click.option(
    "--sequence",
    required=True,
    type=click.IntRange(0, 10**18 - 1),
    help="The release's place in order, signed: a box refuses a release older than the one it runs (e.g. 20261206001).",
)
@click.option("--to", "repository", metavar="REGISTRY/REPOSITORY", help="Push each box's artifact there as BOX-RELEASE.")
@click.option("--layout", type=NonEmptyPath(path_type=Path), help="Write BOX.oci.tar (OCI image layout) here, for offline boxes.")
@click.option("--box", "box_ids", multiple=True, help="Only this box (repeatable).")
@click.option("--insecure-registry", multiple=True, metavar="HOST[:PORT]", help="Plain HTTP to this registry host.")
@click.option("--promote", is_flag=True, help="Also move each box's own tag (BOX) to this release: the pull variant fetches it.")
@click.option("--allow-unlocked", is_flag=True, help="Use tag-only references for images missing from the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
@clear_errors
def publish(
    fleet_file: Path,
    release: str,
    key: Path,
    sequence: int,
    repository: str | None,
    layout: Path | None,
    box_ids: tuple[str, ...],
    insecure_registry: tuple[str, ...],
    promote: bool,
    allow_unlocked: bool,
    as_json: bool,
) -> None:
    """Sign each box's bundle and publish it as an OCI artifact (registry and/or layout archive).

    The signature (ssh-keygen -Y sign) covers the box it is for, the release and every digest; a box
    verifies it offline with ssh-keygen and the release public keys (allowed_signers)."""
    from slm_deploy.rollout.commands import publish as run_publish

    done = run_publish(
        fleet_file, release, key, box_ids, layout, repository, insecure_registry, allow_unlocked, promote, sequence
    )
    if as_json:
        print_json([item.__dict__ for item in done])
        return
    for item in done:
        where = ", ".join(w for w in (item.pushed, item.layout) if w)
        click.echo(f"{item.box}  {item.digest}  {where}")
    click.echo(f"published {len(done)} {'release' if len(done) == 1 else 'releases'} ({release})")


@main.command()
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.option("--release", required=True, help="The release `publish --layout` wrote.")
@click.option("--artifacts", required=True, type=click.Path(path_type=Path, file_okay=False), help="publish's --layout folder.")
@click.option("--allowed-signers", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Release public keys.")
@click.option(
    "--out", "out_dir", required=True, type=NonEmptyPath(path_type=Path), help="Folder for inventory, playbook, reports."
)
@click.option("--hosts", type=click.Path(path_type=Path, dir_okay=False), help="YAML: box id -> ansible_host, ansible_user, ...")
@click.option("--apply", is_flag=True, help="Run ansible-playbook now (waves, gates, rollback).")
@clear_errors
def rollout(
    fleet_file: Path, release: str, artifacts: Path, allowed_signers: Path, out_dir: Path, hosts: Path | None, apply: bool
) -> None:
    """Write (and with --apply run) the Ansible inventory and playbook that roll RELEASE out in the
    fleet's rings: a failed wave stops the rollout and its boxes roll back to their previous release."""
    from slm_deploy.rollout.commands import fleet_status
    from slm_deploy.rollout.commands import rollout as run_rollout
    from slm_deploy.rollout.tables import fleet_status_table

    written, code = run_rollout(fleet_file, release, artifacts, allowed_signers, out_dir, hosts, apply)
    if code is None:
        click.echo(
            f"wrote {len(written)} files to {out_dir}; run: cd {out_dir} && ansible-playbook -i inventory.yml playbook.yml"
        )
        return
    fleet_status_table(fleet_status(out_dir / "reports"))
    if code:
        sys.exit(1)


@main.group()
def fleet() -> None:
    """Fleet-wide views: what each box runs, and rollouts at scale."""


@fleet.command("status")
@click.argument("reports", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@clear_errors
def fleet_status_command(reports: Path, as_json: bool) -> None:
    """Which box runs which release, which wave failed and why, from a rollout's reports folder."""
    from slm_deploy.rollout.commands import fleet_status
    from slm_deploy.rollout.tables import fleet_status_table

    rows = fleet_status(reports)
    if as_json:
        print_json([row.__dict__ for row in rows])
    else:
        fleet_status_table(rows)
    if any(not row.installed or row.gate != "passed" for row in rows):
        sys.exit(1)


@fleet.command("trust")
@click.argument("fleet_file", metavar="FLEET", type=click.Path(path_type=Path))
@click.argument("public_key", metavar="KEY.pub", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", "out_file", required=True, type=NonEmptyPath(path_type=Path), help="The allowed_signers file (other keys kept)."
)
@click.option("--valid-after", metavar="YYYYMMDD", help="The key signs releases from this day on.")
@click.option("--valid-before", metavar="YYYYMMDD", help="The key no longer verifies from this day on (retiring it).")
@clear_errors
def fleet_trust(fleet_file: Path, public_key: Path, out_file: Path, valid_after: str | None, valid_before: str | None) -> None:
    """Add a release key to the allowed_signers file the fleet's boxes verify releases with."""
    from slm_deploy.rollout.commands import trust

    click.echo(trust(fleet_file, public_key, out_file, valid_after, valid_before))


@fleet.command("simulate")
@click.option("--boxes", type=click.IntRange(1, 1_000_000), default=10000, show_default=True)
@click.option(
    "--ring", "rings", multiple=True, default=("1", "1%", "10%", "rest"), show_default=True, help="A count, N%, or rest."
)
@click.option("--forks", type=click.IntRange(1, 10000), default=50, show_default=True, help="Ansible forks.")
@click.option(
    "--flaky", type=click.FloatRange(0, 1), default=0.005, show_default=True, help="Share of boxes failing any release."
)
@click.option("--max-fail-percentage", type=click.FloatRange(0, 100), default=2.0, show_default=True)
@click.option("--bad-share", type=click.FloatRange(0, 1), default=1.0, show_default=True, help="Share a bad release breaks.")
@click.option("--median-box-seconds", type=click.FloatRange(1, 86400), default=120.0, show_default=True)
@clear_errors
def fleet_simulate(
    boxes: int,
    rings: tuple[str, ...],
    forks: int,
    flaky: float,
    max_fail_percentage: float,
    bad_share: float,
    median_box_seconds: float,
) -> None:
    """Simulate a good and a bad release through the rings (waves, forks, flaky boxes, registry load)."""
    import re

    from slm_deploy.rollout.simulate import Scenario, false_stop_probability, ring_sizes, run
    from slm_deploy.rollout.tables import simulation_table

    for ring in rings:
        if not re.fullmatch(r"rest|[1-9][0-9]*|[0-9]+(\.[0-9]+)?%", ring):
            raise InputError("arguments", "--ring", f"{ring!r}: expected a count, N% or rest")
    base = Scenario(boxes, rings, forks, median_box_seconds, flaky, max_fail_percentage, False, bad_share)
    good, bad = run(base), run(Scenario(**{**base.__dict__, "bad_release": True}))
    stops = [false_stop_probability(size, flaky, max_fail_percentage) for size in ring_sizes(base)]
    simulation_table(base, good, bad, stops)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so every clean-up (temporary folders, staged bundles) runs on SIGTERM too


def run() -> None:
    """The console script: click's usage errors become the same one-line `error:` as ours."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    try:
        from slm_deploy.netclient import start_command

        start_command()
        main.main(prog_name="slm-deploy", standalone_mode=False)
    except InputError as exc:  # a bad SLM_DEPLOY_NET_* setting, before any command ran
        fail(str(exc))
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
