"""The compose file of one box, built as data (then dumped), hardened service by service.

Every service gets the same baseline (pinned image, non-root user, read-only root with tmpfs
scratch, no capabilities, no-new-privileges, limits, log rotation, restart policy, healthcheck
when long-running). Where a service cannot follow a rule, the reason is written next to the
exception in the service's `x-hardening-exceptions` field, which review tools read.
"""

from __future__ import annotations

import math
import re
from typing import Any

from slm_deploy.bundle.logs import add_log_services
from slm_deploy.bundle.monitoring import monitoring_services
from slm_deploy.bundle.services import ALERTS_NETWORK, EDGE_NETWORK, EGRESS_NETWORK, INTERNAL_NETWORK, USER, Limits
from slm_deploy.bundle.services import hardened as _hardened
from slm_deploy.bundle.services import healthcheck as _healthcheck
from slm_deploy.catalog import Catalog
from slm_deploy.fleet import Box
from slm_deploy.gateway import ENTRYPOINT as GATEWAY_ENTRYPOINT
from slm_deploy.gateway import METRICS_PORT as GATEWAY_METRICS_PORT
from slm_deploy.image_profiles import capability_reason, exec_capabilities, scratch_dirs
from slm_deploy.planner import Plan
from slm_deploy.runtimes import APP_UID, COMPILE_CACHE_DIR, MODEL_DIR, RuntimeSpec

GATEWAY_CONTAINER_PORT = 8443
COMPILE_CACHE_VOLUME = "compile-cache"


# Limits of the services around the model server, sized for their work on one box.
SIDECAR_LIMITS = {
    "gateway": Limits(1.0, 256, 256),
    "open-webui": Limits(1.0, 2048, 512),
    "model-fetch": Limits(2.0, 4096, 256),
    "volume-init": Limits(0.25, 64, 32),
}
RUNTIME_PIDS = 4096  # vLLM spawns an engine core, tokenizer workers and compile threads


def _runtime_service(spec: RuntimeSpec, plans: tuple[Plan, ...], box: Box, image: str, catalog: Catalog) -> dict[str, Any]:
    res = plans[0].resources
    jetson = bool(res.gpu_count) and _unified(plans, catalog)
    memory_gib = sum(p.resources.memory_limit_gib for p in plans) if len(plans) > 1 else res.memory_limit_gib
    cap = max(1, math.floor(box.hardware.memory_gib - 1))
    service = _hardened(
        image,
        limits=Limits(res.cpu_request, min(memory_gib, cap) * 1024, RUNTIME_PIDS),
        networks=[INTERNAL_NETWORK],
        tmpfs=["/tmp:size=2g,mode=1777"],
        gpus=0 if jetson else res.gpu_count,
    )
    if jetson:
        # On Jetson (Tegra, CSV mode) the NVIDIA hook refuses `--gpus`, which a device reservation
        # becomes; the nvidia runtime (registered in /etc/docker/daemon.json) mounts the GPU instead.
        service["runtime"] = "nvidia"
        gpu = catalog.gpus.get(plans[0].device)
        if gpu is not None and gpu.device_groups:
            # uid 10001 must be in the group that owns the Tegra device nodes, or CUDA sees no GPU
            # and the server silently runs on the CPU (catalog gpus.yaml device_groups).
            service["group_add"] = list(gpu.device_groups)
    if spec.entrypoint:
        service["entrypoint"] = spec.entrypoint
    service["command"] = spec.command
    service["environment"] = dict(sorted(spec.environment.items()))
    service["shm_size"] = f"{math.ceil(res.shm_gib * 1024)}m"
    service["healthcheck"] = _healthcheck(spec.healthcheck, res.startup_budget_seconds)
    service["expose"] = [str(spec.port)]
    if box.options.offline or spec.built:
        platform = f"linux/{box.hardware.cpu_arch.value}"
        service["build"] = {"context": ".", "dockerfile": "Dockerfile", "platforms": [platform]}
        service["platform"] = platform
        if spec.uses_hf_token or spec.runtime.value == "vllm":
            service["build"]["secrets"] = ["hf_token"]
        # Built on the box. `missing`, not `build`: `build` rebuilds on every `up`, which after a prune
        # downloads from PyPI again and fails during a WAN outage (E17); the README's upgrade runs
        # `docker compose build` explicitly. Air-gapped: loaded, never pulled.
        service["pull_policy"] = "never" if box.options.offline else "missing"
    if not box.options.offline:
        service["volumes"] = [{"type": "volume", "source": "models", "target": MODEL_DIR, "read_only": True}]
        if spec.runtime.value == "ollama":
            # Ollama writes its key pair and manifests next to the models at start.
            service["volumes"][0]["read_only"] = False
        service["depends_on"] = {"model-fetch": {"condition": "service_completed_successfully"}}
    if spec.runtime.value == "vllm":
        # torch inductor, Triton and FlashInfer write compiled kernels there and load them as shared
        # objects (a noexec tmpfs fails with 'failed to map segment'). A named volume, not a tmpfs: it
        # survives restarts (no recompile and graph capture before /metrics answers after a reboot)
        # and is not charged to the memory limit (edge review E11).
        service.setdefault("volumes", []).append({"type": "volume", "source": COMPILE_CACHE_VOLUME, "target": COMPILE_CACHE_DIR})
    return service


# Keys compose-lint takes for credentials (CL-0020), *_PATH and *_FILE included.
CREDENTIAL_KEY = re.compile(r"(TOKEN|PASSWORD|SECRET|API_?KEY|PRIVATE_KEY|CREDENTIALS?)(_PATH|_FILE)?$")


def _fetch_service(spec: RuntimeSpec) -> dict[str, Any]:
    assert spec.fetch is not None
    fetch = spec.fetch
    service = _hardened(
        fetch["image"],
        limits=SIDECAR_LIMITS["model-fetch"],
        networks=[EGRESS_NETWORK],
        one_shot=True,
        tmpfs=["/tmp:size=1g,mode=1777"],
    )
    service["entrypoint"] = fetch["entrypoint"]
    service["environment"] = dict(sorted(fetch["environment"].items()))
    if "pull_policy" in fetch:
        service["pull_policy"] = fetch["pull_policy"]
    service["volumes"] = [{"type": "volume", "source": "models", "target": MODEL_DIR}]
    for source, target in sorted(fetch.get("config_files", {}).items()):
        service["volumes"].append({"type": "bind", "source": f"./{source}", "target": target, "read_only": True})
    if spec.uses_hf_token:
        service["secrets"] = ["hf_token"]
    named = sorted(
        k for k, v in service["environment"].items() if CREDENTIAL_KEY.search(k) and str(v).startswith("/run/secrets/")
    )
    if named:
        service["x-hardening-exceptions"] = {
            "environment": f"{', '.join(named)} names the file of a compose secret under /run/secrets, not a credential",
        }
    service["depends_on"] = {"volume-init": {"condition": "service_completed_successfully"}}
    return service


# Compose re-runs this one-shot on every `up` (docker/compose#11590). A volume it already gave away
# is left alone: the services create folders there that root without DAC_READ_SEARCH cannot read
# (Grafana's png/ and csv/ 0700, Loki's wal/ 0750: image profiles), so a second `chown -R` fails.
VOLUME_INIT_SCRIPT = (
    f'for volume in "$@"; do [ "$(stat -c %u:%g "$volume")" = {USER} ] || chown -R {USER} "$volume" || exit 1; done'
)


def _volume_init(catalog: Catalog, volumes: list[str]) -> dict[str, Any]:
    service = _hardened(
        catalog.images["gateway"].ref,
        limits=SIDECAR_LIMITS["volume-init"],
        networks=[],
        user="0:0",
        one_shot=True,
    )
    del service["networks"]
    service["network_mode"] = "none"
    service["cap_add"] = ["CHOWN"]
    service["entrypoint"] = ["/bin/sh", "-c", VOLUME_INIT_SCRIPT, "volume-init", *(f"/volumes/{v}" for v in volumes)]
    service["volumes"] = [{"type": "volume", "source": v, "target": f"/volumes/{v}"} for v in volumes]
    service["x-hardening-exceptions"] = {
        "user": "root, once: new named volumes belong to root, and every other service runs as "
        f"{USER}; this one-shot container only chowns the ones not yet given away, with no network and CAP_CHOWN alone",
        "cap_add": "CHOWN, to give the new named volumes to the unprivileged user; nothing else",
    }
    return service


def _gateway(catalog: Catalog, box: Box) -> dict[str, Any]:
    profile = catalog.profiles["gateway"]
    entrypoint = ["/bin/sh", "-c", GATEWAY_ENTRYPOINT]
    service = _hardened(
        catalog.images["gateway"].ref,
        limits=SIDECAR_LIMITS["gateway"],
        networks=[EDGE_NETWORK, INTERNAL_NETWORK],
        # Where the profile says Caddy writes at start (its XDG folders), owned by the service's uid.
        tmpfs=["/tmp:size=16m,mode=1777", *(f"{d}:size=16m,uid={APP_UID}" for d in scratch_dirs(profile))],
    )
    service["entrypoint"] = entrypoint
    caps = exec_capabilities(profile, entrypoint, None)
    if caps:
        service["cap_add"] = caps
        service["x-hardening-exceptions"] = {"cap_add": capability_reason(profile, caps)}
    service["environment"] = dict(sorted(profile.environment.items()))
    service["ports"] = [
        {
            "name": "https",
            "host_ip": box.options.listen_address,
            "target": GATEWAY_CONTAINER_PORT,
            "published": str(box.options.gateway_port),
            "protocol": "tcp",
        }
    ]
    if box.options.listen_address in ("0.0.0.0", "::"):
        service.setdefault("x-hardening-exceptions", {})["ports"] = (
            f"the box's one published port, on listen_address {box.options.listen_address} from the fleet file "
            "(clients reach the box on its LAN address); TLS and the API key guard it, and the README says that "
            "Docker's iptables rules bypass the host firewall"
        )
    service["expose"] = [str(GATEWAY_METRICS_PORT)]
    service["secrets"] = ["api_key", "tls_cert", "tls_key"]
    service["volumes"] = [{"type": "bind", "source": "./gateway/Caddyfile", "target": "/etc/caddy/Caddyfile", "read_only": True}]
    service["healthcheck"] = _healthcheck(
        ["CMD", "wget", "--quiet", "--spider", f"http://127.0.0.1:{GATEWAY_METRICS_PORT}/healthz"]
    )
    # No depends_on the model server: the gateway (and with it Grafana) is up while the model still
    # downloads; Caddy resolves the upstream per request and answers 502 until the server is up.
    return service


WEBUI_START_S = 600


def _webui(catalog: Catalog, spec: RuntimeSpec, box_id: str) -> dict[str, Any]:
    service = _hardened(
        catalog.images["open-webui"].ref,
        limits=SIDECAR_LIMITS["open-webui"],
        networks=[INTERNAL_NETWORK],
        tmpfs=["/tmp:size=256m,mode=1777"],
    )
    base = f"http://{spec.service}:{spec.port}"
    env = {
        "HOME": "/tmp",
        "DATA_DIR": "/app/backend/data",
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_SIGNUP": "false",
        "WEBUI_ADMIN_EMAIL": f"admin@{box_id}.local",
        "WEBUI_ADMIN_NAME": "admin",
        "DEFAULT_USER_ROLE": "pending",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
    }
    if spec.runtime.value == "ollama":
        env |= {"OLLAMA_BASE_URL": base, "ENABLE_OPENAI_API": "false"}
    else:
        env |= {"OPENAI_API_BASE_URL": f"{base}/v1", "ENABLE_OLLAMA_API": "false"}
    service["environment"] = dict(sorted(env.items()))
    service["entrypoint"] = ["/bin/bash", "-c", WEBUI_ENTRYPOINT]
    service["secrets"] = ["webui_admin_password", "webui_secret_key"]
    service["volumes"] = [{"type": "volume", "source": "webui-data", "target": "/app/backend/data"}]
    # The real Open WebUI 0.7.0 (tests/test_engines_live.py) imports for minutes on a busy 2-core host
    # before it answers /health: 120 s left it unhealthy, and `up --wait` failed, on its first start.
    service["healthcheck"] = _healthcheck(["CMD", "curl", "--fail", "--silent", "http://127.0.0.1:8080/health"], WEBUI_START_S)
    service["depends_on"] = {spec.service: {"condition": "service_started"}}
    service["read_only"] = False
    service["x-hardening-exceptions"] = {
        "read_only": "Open WebUI writes its compiled frontend and caches under /app/backend at start; "
        "it runs as a non-root user without capabilities instead",
    }
    return service


# The admin account comes from the webui_admin_password secret on the first start: Open WebUI 0.7.0
# and later create it from WEBUI_ADMIN_EMAIL/WEBUI_ADMIN_PASSWORD while there are no users (env.py
# 416-424, main.py 597, utils/auth.py 427; 0.6.x has no such variable, review E1). Sign-up stays
# closed, so nobody else can become admin by registering first.
WEBUI_ENTRYPOINT = (
    'WEBUI_SECRET_KEY="$(cat /run/secrets/webui_secret_key)" '
    'WEBUI_ADMIN_PASSWORD="$(cat /run/secrets/webui_admin_password)" exec bash /app/backend/start.sh'
)


def compose_document(
    box: Box, plans: tuple[Plan, ...], spec: RuntimeSpec, catalog: Catalog, offline_image: str
) -> dict[str, Any]:
    """The whole compose file as data: services, networks, volumes, secrets."""
    options = box.options
    services: dict[str, Any] = {}
    volumes = ["models"] if spec.fetch is not None else []
    if spec.runtime.value == "vllm":
        volumes.append(COMPILE_CACHE_VOLUME)
    if options.webui:
        volumes.append("webui-data")
    if options.monitoring:
        volumes += ["prometheus-data", "grafana-data", "alertmanager-data"]
    if options.logs.enabled:
        volumes.append("loki-data")
    if volumes:
        services["volume-init"] = _volume_init(catalog, volumes)
    if spec.fetch is not None:
        services["model-fetch"] = _fetch_service(spec)
    image = offline_image if options.offline else spec.image
    services[spec.service] = _runtime_service(spec, plans, box, image, catalog)
    services["gateway"] = _gateway(catalog, box)
    if options.webui:
        services["open-webui"] = _webui(catalog, spec, box.id)
        services["open-webui"]["depends_on"]["volume-init"] = {"condition": "service_completed_successfully"}
    if options.monitoring:
        gpus = plans[0].resources.gpu_count
        dcgm_gpus = (box.hardware.gpu.count if box.hardware.gpu else gpus) if gpus and not _unified(plans, catalog) else None
        services.update(monitoring_services(catalog, box, dcgm_gpus))
    networks: dict[str, Any] = {
        EDGE_NETWORK: {"driver": "bridge"},
        INTERNAL_NETWORK: {"driver": "bridge", "internal": True},
    }
    if spec.fetch is not None:
        networks[EGRESS_NETWORK] = {"driver": "bridge"}
    if options.monitoring and options.alerts is not None:
        networks[ALERTS_NETWORK] = {"driver": "bridge"}
    if options.logs.enabled:
        add_log_services(services, networks, catalog)
        volumes.append("alloy-data")  # after volume-init's list: Alloy runs as root and keeps it root's
    secrets = {"api_key", "tls_cert", "tls_key"}
    if spec.uses_hf_token or "hf_token" in services[spec.service].get("build", {}).get("secrets", []):
        secrets.add("hf_token")
    if options.webui:
        secrets |= {"webui_secret_key", "webui_admin_password"}
    if options.monitoring:
        secrets.add("grafana_admin_password")
    for service in services.values():
        _escape_interpolation(service)
    if options.offline:
        # Air-gapped: every image is loaded beforehand (README); nothing may be pulled. By tag: `docker
        # save` records no tag for a digest reference and `docker load` restores no digest (moby
        # image/tarexport/save.go; moby#22011, #43570), so `repo:tag@sha256:...` never resolves after a
        # load. `slm-deploy verify` compares the loaded image's Id with the locked config digest instead.
        for service in services.values():
            service["pull_policy"] = "never"
            if "@" in service["image"]:
                service["x-locked-image"] = service["image"]  # what the loaded image must be (verify)
                service["image"] = service["image"].split("@", 1)[0]
            if "x-locked-image" in service:
                service.setdefault("x-hardening-exceptions", {})["image"] = (
                    "air-gapped: loaded with docker load, which restores tags but no digests, so compose names "
                    "repository:tag; slm-deploy verify compares the loaded image with the locked digest (x-locked-image)"
                )
    built = {s["image"] for s in services.values() if "build" in s}
    for service in services.values():
        if service["image"] in built:
            service.setdefault("x-hardening-exceptions", {})["image"] = (
                "built on the box from the bundle's Dockerfile, whose FROM lines are locked; no registry holds it"
            )
    return {
        "name": box.id,
        "services": services,
        "networks": networks,
        "volumes": {v: {} for v in volumes},
        "secrets": {s: {"file": f"./secrets/{s}"} for s in sorted(secrets)},
    }


def _unified(plans: tuple[Plan, ...], catalog: Catalog) -> bool:
    gpu = catalog.gpus.get(plans[0].device)
    return gpu is not None and gpu.unified_memory


def _escape_interpolation(service: dict[str, Any]) -> None:
    """Compose interpolates `$VAR` in every string; scripts in commands need `$$` for a literal `$`."""

    def escape(args: list[str]) -> list[str]:
        return [arg.replace("$", "$$") for arg in args]

    for key in ("entrypoint", "command"):
        if key in service:
            service[key] = escape(service[key])
    if "healthcheck" in service:
        service["healthcheck"]["test"] = escape(service["healthcheck"]["test"])
