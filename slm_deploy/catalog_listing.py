"""`slm-deploy catalog [models|gpus|vm-sizes|images]`: what the catalog knows, each row with its
source, so a user picks an id instead of guessing one (the ids are the ones `plan`, fleet files
and stack files accept)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slm_deploy.catalog import load_catalog
from slm_deploy.catalog.platform import load_aks_facts

# A VM size's GPU numbers come from gpus.yaml, whose entries share one source (the file's header);
# its platform facts (driver family, temp disk) and their source from aks.yaml.
VM_SIZES_SOURCE = "catalog/gpus.yaml: Microsoft Learn size pages"


def _models() -> list[dict[str, Any]]:
    return [
        {
            "id": m.id,
            "hf_repo": m.hf_repo,
            "params_b": m.params_b,
            "max_context": m.max_context,
            "license": m.license,
            "gated": m.gated,
            "source": m.source,
        }
        for m in load_catalog().models.values()
    ]


def _gpus() -> list[dict[str, Any]]:
    return [
        {
            "id": g.id,
            "name": g.name,
            "memory_gib": g.memory_gib,
            "vendor": g.vendor,
            "host_arch": g.host_arch.value,
            "source": g.source or "catalog/gpus.yaml",
        }
        for g in load_catalog().gpus.values()
    ]


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
    return [
        {
            "id": i.id,
            "image": f"{i.repository}:{i.tag}",
            "source": i.source or "catalog/images.yaml",
        }
        for i in load_catalog().images.values()
    ]


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
