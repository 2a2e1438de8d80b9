"""The log services of an edge bundle (opt-in): Loki and Alloy, hardened like every service.

See slm_deploy/observability/logs.py for how the logs are collected without the Docker socket.
"""

from __future__ import annotations

from typing import Any, cast

from slm_deploy.bundle.services import LOGGING, Limits, hardened, healthcheck
from slm_deploy.catalog import Catalog
from slm_deploy.observability.logs import (
    ALLOY_CONFIG,
    ALLOY_DATA,
    ALLOY_PORT,
    COMPOSE_LABELS,
    DOCKER_CONTAINERS,
    LOKI_CONFIG,
    LOKI_DATA,
    LOKI_PORT,
    LOKI_RULES,
)

# Loki has no authentication: only who needs it shares its network (internal, like the others). Alloy
# pushes to it, Grafana queries it, Prometheus scrapes Loki and Alloy, Loki's ruler notifies
# Alertmanager. Not the model server, the gateway or Open WebUI: a container that reaches Loki reads
# every log line and can push forged ones (a fake "CUDA out of memory" pages ModelServerOutOfMemory).
LOGS_NETWORK = "logs"
LOKI_PEERS = ("grafana", "prometheus", "alertmanager")
LIMITS = {"loki": Limits(1.0, 1024, 256), "alloy": Limits(0.5, 256, 128)}
LOGGING_WITH_LABELS = {**LOGGING, "options": {**cast(dict[str, str], LOGGING["options"]), "labels": ",".join(COMPOSE_LABELS)}}
# Alloy's image has no curl or wget (ubuntu:noble with ca-certificates, tzdata): bash asks /-/ready.
ALLOY_READY = (
    f"exec 3<>/dev/tcp/127.0.0.1/{ALLOY_PORT} && printf 'GET /-/ready HTTP/1.0\\r\\n\\r\\n' >&3 && "
    "head -n 1 <&3 | grep -q ' 200 '"
)


def loki_service(catalog: Catalog) -> dict[str, Any]:
    service = hardened(catalog.images["loki"].ref, limits=LIMITS["loki"], networks=[LOGS_NETWORK])
    service["command"] = [f"-config.file={LOKI_CONFIG}"]
    service["volumes"] = [
        {"type": "bind", "source": "./loki/loki.yaml", "target": LOKI_CONFIG, "read_only": True},
        {"type": "bind", "source": "./loki/rules", "target": LOKI_RULES, "read_only": True},
        {"type": "volume", "source": "loki-data", "target": LOKI_DATA},
    ]
    service["expose"] = [str(LOKI_PORT)]
    service["healthcheck"] = healthcheck(["CMD", "wget", "--quiet", "--spider", f"http://127.0.0.1:{LOKI_PORT}/ready"], 60)
    service["depends_on"] = {"volume-init": {"condition": "service_completed_successfully"}}
    return service


def alloy_service(catalog: Catalog) -> dict[str, Any]:
    service = hardened(catalog.images["alloy"].ref, limits=LIMITS["alloy"], networks=[LOGS_NETWORK], user="0:0")
    service["command"] = [
        "run",
        ALLOY_CONFIG,
        f"--storage.path={ALLOY_DATA}",
        f"--server.http.listen-addr=0.0.0.0:{ALLOY_PORT}",
        "--disable-reporting",
    ]
    service["volumes"] = [
        {"type": "bind", "source": "./alloy/config.alloy", "target": ALLOY_CONFIG, "read_only": True},
        {"type": "bind", "source": DOCKER_CONTAINERS, "target": DOCKER_CONTAINERS, "read_only": True},
        {"type": "volume", "source": "alloy-data", "target": ALLOY_DATA},
    ]
    service["expose"] = [str(ALLOY_PORT)]
    service["healthcheck"] = healthcheck(["CMD", "bash", "-c", ALLOY_READY])
    service["depends_on"] = {"loki": {"condition": "service_started"}}
    service["x-hardening-exceptions"] = {
        "user": f"uid 0 with no capabilities: Docker's json-file logs under {DOCKER_CONTAINERS} are root-owned (0640), "
        "so only their owner reads them without CAP_DAC_READ_SEARCH (the capability of the 'shocker' escape); the "
        "Docker socket is refused; the mount is read-only, the root filesystem read-only, the network internal",
        "volumes": f"{DOCKER_CONTAINERS} read-only: the containers' json-file logs are the only log source "
        "without the Docker socket; the bind also shows this uid-0 process every container's config.v2.json "
        "(root-only, 0600), which holds each container's environment, secrets passed as variables included; "
        "Alloy reads only *-json.log and sits on the internal logs network with no published port",
    }
    return service


def add_log_services(services: dict[str, Any], networks: dict[str, Any], catalog: Catalog) -> None:
    """Loki and Alloy on their own network, and the json-file `labels` option on every service so its
    lines name it."""
    services["loki"] = loki_service(catalog)
    services["alloy"] = alloy_service(catalog)
    networks[LOGS_NETWORK] = {"driver": "bridge", "internal": True}
    for peer in LOKI_PEERS:
        services[peer]["networks"] = [*services[peer]["networks"], LOGS_NETWORK]
    for service in services.values():
        service["logging"] = LOGGING_WITH_LABELS
