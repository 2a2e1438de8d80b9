"""The hardening every compose service of a bundle shares: user, read-only root, no capabilities,
log rotation, limits, a health check's timing, and the names of the box's networks.

Below compose.py (the model server, the gateway, Open WebUI), monitoring.py (Prometheus and its
exporters) and logs.py (Loki and Alloy), which build their services from it; compose.py puts the
other two's services into the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm_deploy.runtimes import APP_UID

USER = f"{APP_UID}:{APP_UID}"
LOGGING = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
HEALTH_TIMING = {"interval": "30s", "timeout": "5s", "retries": 3}
# The box's networks: the gateway's published side, the services' internal one (no route out), the
# model fetch's way out, and the alert receiver's (outside the box).
EDGE_NETWORK = "edge"
INTERNAL_NETWORK = "internal"
EGRESS_NETWORK = "egress"
ALERTS_NETWORK = "alerts"


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_mib: int
    pids: int


def deploy(cpus: float, memory_mib: int, pids: int, gpus: int = 0) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "limits": {"cpus": f"{cpus:g}", "memory": f"{memory_mib}M", "pids": pids},
        "reservations": {"cpus": f"{min(cpus, 0.25 if cpus < 1 else cpus / 2):g}", "memory": f"{memory_mib // 2}M"},
    }
    if gpus:
        resources["reservations"]["devices"] = [{"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}]
    return {"resources": resources}


def healthcheck(test: list[str], start_period_s: int = 30) -> dict[str, Any]:
    return {"test": test, **HEALTH_TIMING, "start_period": f"{start_period_s}s"}


def hardened(
    image: str,
    *,
    limits: Limits,
    networks: list[str],
    tmpfs: list[str] | None = None,
    user: str = USER,
    one_shot: bool = False,
    gpus: int = 0,
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": image,
        "user": user,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "tmpfs": tmpfs or ["/tmp:size=64m,mode=1777"],
        "restart": "no" if one_shot else "unless-stopped",
        "networks": networks,
        "logging": LOGGING,
        "deploy": deploy(limits.cpus, limits.memory_mib, limits.pids, gpus),
    }
    return service
