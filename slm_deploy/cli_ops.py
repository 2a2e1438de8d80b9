"""Day-2 commands of `slm-deploy`: `lock` (image digests), `smoke` (a live endpoint), `catalog` (what it knows),
`init` (a repository).

Each parses its options, calls one function of the layer below and prints; cli.py registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from slm_deploy.cli_common import choice, clear_errors, fail, print_json
from slm_deploy.errors import InputError
from slm_deploy.spec import Runtime

# Images of the user's own (a stack's models[].image) are asked for only through --images.
STALE_HINT = (
    "note: your own images (a stack's models[].image, e.g. runtime onnx's server) stay locked only when their "
    "images file is passed again: slm-deploy lock --images examples/stack-images.yaml (or yours)"
)


@click.command()
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


@click.command()
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


@click.command("catalog")
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
    from slm_deploy.scaffold_choices import DEFAULT_VM_SIZES, InitChoices
    from slm_deploy.scaffold_ci import installed_requirement

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


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--stack", "stacks", multiple=True, help="Stack names, cheapest first (default: dev, staging, prod).")
@click.option("--location", help="Azure region (default: westeurope).")
@click.option("--model", help="Catalog model id or Hugging Face repo id (default: phi-4-mini-instruct).")
@click.option("--runtime", type=choice(Runtime), help="vllm, ollama, llamacpp or onnx (default: vllm).")
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
    from slm_deploy.scaffold import build_files, existing, write_files
    from slm_deploy.scaffold_choices import parse_choices
    from slm_deploy.scaffold_ci import installed_requirement

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
