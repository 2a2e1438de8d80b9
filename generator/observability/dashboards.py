"""Grafana dashboards (built in the observability work)."""

from __future__ import annotations

from typing import Any


def dashboards(runtime: str, *, gpus: bool, edge: bool) -> dict[str, Any]:
    return {}
