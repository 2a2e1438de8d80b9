"""Prometheus alert and recording rules (minimal until the observability work lands)."""

from __future__ import annotations

from typing import Any

from generator.fleet import SloThresholds

RUNBOOK = "https://github.com/slm-deploy/slm-deploy/blob/main/docs/runbooks.md"


def rule_groups(runtime: str, slo: SloThresholds, *, gpus: bool, edge: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": "slm-availability",
            "rules": [
                {
                    "alert": "ScrapeTargetDown",
                    "expr": "up == 0",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {
                        "summary": "{{ $labels.job }} on {{ $labels.instance }} is down",
                        "description": "Prometheus could not scrape {{ $labels.job }} for 5 minutes.",
                        "runbook_url": f"{RUNBOOK}#scrapetargetdown",
                    },
                }
            ],
        }
    ]
