"""Helm values that pin every image a chart release runs to the catalog's locked digest, at the
values path and in the digest spelling that chart version reads (chart_profiles.yaml `images`)."""

from __future__ import annotations

from typing import Any

from slm_deploy.catalog import Catalog, Chart
from slm_deploy.catalog.platform import load_chart_profiles


def pin_chart_images(values: dict[str, Any], chart: Chart, catalog: Catalog) -> None:
    """Merge each image block into VALUES (keys already set there, such as `enabled`, are kept)."""
    profile = load_chart_profiles().get((chart.id, chart.version))
    if profile is None or not profile.images:
        raise ValueError(f"chart_profiles.yaml lists no images for {chart.id} {chart.version}: its images cannot be pinned")
    for entry in profile.images:
        image = catalog.images[entry.image]
        *parents, last = entry.values.split(".")
        block = values
        for key in parents:
            block = block.setdefault(key, {})
        block[last] = {**block.get(last, {}), **entry.block(image.repository, image.tag, image.digest)}
