"""`slm-deploy catalog [models|gpus|vm-sizes|images]`: what the catalog knows, each row with its
source, so a user picks an id instead of guessing one (the ids are the ones `plan`, fleet files
and stack files accept)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from slm_deploy.catalog import load_catalog
from slm_deploy.catalog.platform import load_aks_facts

# A VM size's GPU numbers come from gpus.yaml, whose entries share one source (the file's header);
# its platform facts (driver family, temp disk) and their source from aks.yaml.
VM_SIZES_SOURCE = "catalog/gpus.yaml: Microsoft Learn size pages"


def _rows(items: Iterable[Any], attributes: tuple[str, ...], **computed: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """A row per catalog entry: its `attributes` as they are, then the `computed` columns, in that order."""
    return [
        {**{name: getattr(item, name) for name in attributes}, **{name: value(item) for name, value in computed.items()}}
        for item in items
    ]


def _models() -> list[dict[str, Any]]:
    columns = ("id", "hf_repo", "params_b", "max_context", "license", "gated", "source")
    return _rows(load_catalog().models.values(), columns)


def _gpus() -> list[dict[str, Any]]:
    return _rows(
        load_catalog().gpus.values(),
        ("id", "name", "memory_gib", "vendor"),
        host_arch=lambda g: g.host_arch.value,
        source=lambda g: g.source or "catalog/gpus.yaml",
    )


def _vm_sizes() -> list[dict[str, Any]]:
    facts = load_aks_facts()
    rows = []
    for vm in load_catalog().vm_sizes.values():
        node = facts.node_size(vm.id)
        rows.append(
            {
                "id": vm.id,
                "gpu": f"{vm.gpu_count} x {vm.gpu}",
                "vcpus": vm.vcpus,
                "memory_gib": vm.memory_gib,
                # A GRID family needs gpuDriver: aks (the GPU Operator's driver does not bring it up).
                "driver": node.driver if node else "unknown",
                "source": f"{VM_SIZES_SOURCE}; {node.source}" if node else VM_SIZES_SOURCE,
            }
        )
    return rows


def _images() -> list[dict[str, Any]]:
    return _rows(
        load_catalog().images.values(),
        ("id",),
        image=lambda i: f"{i.repository}:{i.tag}",
        source=lambda i: i.source or "catalog/images.yaml",
    )


KINDS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "models": _models,
    "gpus": _gpus,
    "vm-sizes": _vm_sizes,
    "images": _images,
}


def catalog_rows(kinds: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """Rows per kind, sorted by id so the listing is the same on every run."""
    return {kind: sorted(KINDS[kind](), key=lambda row: str(row["id"])) for kind in kinds}


def print_catalog(listing: dict[str, list[dict[str, Any]]]) -> None:
    from rich.table import Table

    from slm_deploy.report import console

    for kind, rows in listing.items():
        table = Table(title=f"{kind}: {len(rows)} in the catalog")
        for column in rows[0] if rows else ("id",):
            table.add_column(column, no_wrap=column == "id", overflow="fold")
        for row in rows:
            table.add_row(*(str(value) for value in row.values()))
        console.print(table)
