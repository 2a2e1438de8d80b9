"""Edge bundles: one directory per box, built in memory from the box's spec and plans.

`build_box` returns every file of a bundle as bytes (deterministic: same input, same bytes);
`slm_deploy.bundle.writer` puts them on disk atomically and writes the MANIFEST.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from slm_deploy import __version__, yamlout
from slm_deploy.bundle.compose import GATEWAY_CONTAINER_PORT, compose_document
from slm_deploy.bundle.referees import COMPOSE_LINT_CONFIG, compose_lint_config
from slm_deploy.bundle.startplan import PLAN_FILE, plan_document
from slm_deploy.bundle.swap import VERIFY_IGNORES
from slm_deploy.catalog import Catalog, Image
from slm_deploy.errors import InputError
from slm_deploy.fleet import Box, Fleet
from slm_deploy.gateway import API_PATHS, caddyfile, route, upstream_keepalive
from slm_deploy.gateway import METRICS_PORT as GATEWAY_METRICS_PORT
from slm_deploy.observability.scrape import HEALTH_INTERVAL, HEALTH_PATH, ScrapeTarget, prometheus_config
from slm_deploy.onnx_builds import load_onnx_server, onnx_box_problem
from slm_deploy.planner import Plan, plan_colocated
from slm_deploy.runtimes import METRICS_PATH, RuntimeSpec, runtime_image_id, runtime_spec
from slm_deploy.spec import Runtime
from slm_deploy.supply.lock import locked_catalog, require_platform
from slm_deploy.templating import render

IMAGE_LIST = "images.lock.json"
# Admin passwords a service applies only when it creates its database (Grafana's admin_password,
# conf/defaults.ini; Open WebUI's first admin): init-secrets.sh never recreates them over data.
ADMIN_VOLUMES = {"grafana_admin_password": "grafana-data", "webui_admin_password": "webui-data"}
EXECUTABLE = 0o755
REGULAR = 0o644


@dataclass(frozen=True)
class BoxBundle:
    box: Box
    plans: tuple[Plan, ...]
    files: dict[str, bytes]  # relative path -> content, MANIFEST.json included
    modes: dict[str, int]
    spec_sha256: str


def _check_box(box: Box, fleet: Fleet) -> None:
    runtime = box.servings[0].runtime
    if len(box.servings) > 1 and runtime is not Runtime.OLLAMA:
        raise InputError(
            fleet.source,
            f"{box.path}.models",
            "several models on one box need runtime ollama (one server, "
            "routed by model name); give each vLLM, llama.cpp or onnx model its own box",
        )
    if runtime is Runtime.ONNX:
        problem = onnx_box_problem(box.hardware)
        if problem is not None:
            field, reason = problem
            raise InputError(fleet.source, f"{box.path}.hardware.{field}", f"box {box.id}: {reason}")
    if runtime is Runtime.OLLAMA and len({s.concurrency for s in box.servings}) > 1:
        raise InputError(
            fleet.source,
            f"{box.path}.models",
            "models on one Ollama server share OLLAMA_NUM_PARALLEL: give them the same concurrency",
        )


def plan_box(box: Box, fleet: Fleet, catalog: Catalog) -> tuple[Plan, ...]:
    """Plan every model of a box; a model that does not fit is an error naming the box."""
    _check_box(box, fleet)
    gpu = catalog.gpus.get(box.hardware.gpu.model) if box.hardware.gpu else None
    if gpu is not None and gpu.vendor != "nvidia":
        raise InputError(
            fleet.source,
            f"{box.path}.hardware.gpu.model",
            f"box {box.id}: {gpu.name} needs ROCm images and /dev/kfd devices; bundles are written for NVIDIA GPUs only",
        )
    paths = tuple(f"{box.path}.models[{i}]" if len(box.servings) > 1 else f"{box.path}.serving" for i in range(len(box.servings)))
    plans = plan_colocated(
        box.servings,
        box.hardware,
        catalog=catalog,
        source=fleet.source,
        serving_paths=paths,
        hardware_path=f"{box.path}.hardware",
    )
    for plan, path in zip(plans, paths, strict=True):
        if not plan.fits:
            hints = "; ".join(s.change for s in plan.suggestions) or "none in the catalog"
            raise InputError(fleet.source, path, f"box {box.id}: {plan.model} does not fit: {plan.reason}; try: {hints}")
        if box.hardware.disk_gib is not None and plan.resources.cache_disk_gib > box.hardware.disk_gib:
            raise InputError(
                fleet.source,
                f"{box.path}.hardware.disk_gib",
                f"box {box.id}: the model cache needs {plan.resources.cache_disk_gib} GiB",
            )
    if box.options.logs.enabled:
        _check_logs_disk(box, fleet, plans)
    image = catalog.images[runtime_image_id(plans[0])]
    require_platform(image, box.hardware.cpu_arch, fleet.source, f"{box.path}.hardware.cpu_arch", f"box {box.id}")
    return plans


def _check_logs_disk(box: Box, fleet: Fleet, plans: tuple[Plan, ...]) -> None:
    from slm_deploy.observability.logs import logs_budget

    disk = box.hardware.disk_gib or 0.0
    budget = logs_budget(box.options.logs, disk)
    cache = sum(p.resources.cache_disk_gib for p in plans)
    if budget.retention_days < 1:
        raise InputError(
            fleet.source,
            f"{box.path}.logs.disk_share",
            f"box {box.id}: {budget.disk_gib:g} GiB of logs hold less than one day of "
            f"{box.options.logs.gib_per_day:g} GiB; raise disk_share or lower gib_per_day",
        )
    if cache + budget.disk_gib > disk:
        raise InputError(
            fleet.source,
            f"{box.path}.hardware.disk_gib",
            f"box {box.id}: the model cache needs {cache:g} GiB and the logs {budget.disk_gib:g} GiB; the disk has {disk:g}",
        )


def _logs_budget(box: Box) -> dict[str, object] | None:
    """What the README says of the logs (None when they are off)."""
    if not box.options.logs.enabled:
        return None
    from slm_deploy.observability.logs import logs_budget

    budget = logs_budget(box.options.logs, box.hardware.disk_gib or 0.0)
    return {"retention_days": budget.retention_days, "disk_gib": f"{budget.disk_gib:g}", "gib_per_day": f"{budget.gib_per_day:g}"}


def offline_image_ref(box: Box, fleet: Fleet) -> str:
    """Boxes that serve the same models share one offline image: its tag hashes the servings."""
    servings = json.dumps([s.model_dump(mode="json") for s in box.servings], sort_keys=True)
    digest = hashlib.sha256(f"{__version__}:{box.hardware.cpu_arch.value}:{servings}".encode()).hexdigest()
    return f"slm-offline/{fleet.name}:{digest[:12]}"


def spec_digest(box: Box, fleet: Fleet) -> str:
    resolved = {
        "fleet": fleet.name,
        "box": box.id,
        "hardware": box.hardware.model_dump(mode="json"),
        "servings": [s.model_dump(mode="json") for s in box.servings],
        "options": box.options.model_dump(mode="json"),
        "generator": __version__,
    }
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()


def _scrape_targets(spec: RuntimeSpec, box: Box, gpus: bool) -> list[ScrapeTarget]:
    targets = [ScrapeTarget("gateway", f"gateway:{GATEWAY_METRICS_PORT}", "gateway")]
    if spec.runtime in METRICS_PATH:
        targets.append(
            ScrapeTarget(spec.runtime.value, f"{spec.service}:{spec.port}", "model-server", METRICS_PATH[spec.runtime])
        )
    targets += [
        ScrapeTarget("node", "node-exporter:9100", "host"),
        ScrapeTarget("prometheus", "localhost:9090", "prometheus"),
        ScrapeTarget("alertmanager", "alertmanager:9093", "alertmanager"),
    ]
    if gpus:
        targets.append(ScrapeTarget("dcgm", "dcgm-exporter:9400", "gpu"))
    if box.options.logs.enabled:
        from slm_deploy.observability.logs import ALLOY_JOB, ALLOY_PORT, LOKI_JOB, LOKI_PORT

        targets += [ScrapeTarget(LOKI_JOB, f"loki:{LOKI_PORT}", "logs"), ScrapeTarget(ALLOY_JOB, f"alloy:{ALLOY_PORT}", "logs")]
    return targets


def alertmanager_config(box: Box) -> dict[str, Any]:
    """One route to the fleet file's receiver; without one, alerts stay visible in Alertmanager only."""
    receiver: dict[str, Any] = {"name": "box-operator"}
    alerts = box.options.alerts
    if alerts is not None and alerts.webhook:
        receiver["webhook_configs"] = [{"url": alerts.webhook, "send_resolved": True}]
    if alerts is not None and alerts.email:
        receiver["email_configs"] = [
            {"to": alerts.email, "from": alerts.sender, "smarthost": alerts.smarthost, "send_resolved": True}
        ]
    return {
        "route": {
            "receiver": "box-operator",
            "group_by": ["alertname", "box"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }


def _gated(plans: tuple[Plan, ...], catalog: Catalog) -> str:
    """The gated model of the box (needs a Hugging Face token), or ''."""
    for plan in plans:
        entry = catalog.models.get(plan.model)
        if plan.runtime == Runtime.VLLM.value and entry is not None and entry.gated:
            return entry.hf_repo
    return ""


def _served_as(spec: RuntimeSpec) -> str:
    """The model name a runtime serves under when it is not the catalog id (Foundry Local's <name>:<version>)."""
    return spec.command[spec.command.index("--model-id") + 1] if spec.runtime is Runtime.ONNX else ""


def compose_images(compose: dict[str, Any]) -> list[str]:
    """Every image the box runs, except the ones built from the bundle's Dockerfile."""
    built = {s["image"] for s in compose["services"].values() if "build" in s}
    return sorted({s["image"] for s in compose["services"].values()} - built)


def _service_descriptions(compose: dict[str, Any], spec: RuntimeSpec) -> list[tuple[str, str]]:
    what = {
        "volume-init": "one-shot: gives the named volumes to the unprivileged user",
        "model-fetch": "one-shot: downloads the model into the `models` volume",
        spec.service: f"the {spec.runtime.value} model server (internal only)",
        "gateway": "Caddy: TLS, API key, path allow-list, request metrics; the only published port",
        "open-webui": "Open WebUI chat interface, behind the gateway",
        "prometheus": "metrics and alert rules",
        "grafana": "dashboards, behind the gateway at /grafana/",
        "node-exporter": "host CPU, memory, disk and network metrics",
        "dcgm-exporter": "NVIDIA GPU metrics",
        "alertmanager": "routes the alert rules' alerts to the receiver of the fleet file",
        "loki": "stores the containers' logs (retention sized from the disk); its ruler sends log alerts",
        "alloy": "reads the containers' json-file logs (read-only) and pushes them to Loki",
    }
    return [(name, what[name]) for name in compose["services"]]


def _box_images(compose: dict[str, Any], spec: RuntimeSpec, catalog: Catalog) -> list[Image]:
    """The catalog images a box runs or builds from (the offline image is built on the box)."""
    used = {service["image"].split("@", 1)[0] for service in compose["services"].values()}
    if spec.dockerfile is not None:
        used |= {line.split()[1].split("@", 1)[0] for line in spec.dockerfile.splitlines() if line.startswith("FROM ")}
    return sorted((i for i in catalog.images.values() if i.ref.split("@", 1)[0] in used), key=lambda i: i.ref)


def image_list(box: Box, images: list[Image]) -> bytes:
    """images.lock.json: for the air-gapped path, the exact digest of each image for this box's
    platform (`slm-deploy verify` compares the loaded images with it)."""
    platform = f"linux/{box.hardware.cpu_arch.value}"
    entries = {}
    for image in images:
        digests = image.locked.platforms.get(platform) if image.locked else None
        entries[image.ref] = {
            "index": image.locked.digest if image.locked else None,
            "manifest": digests.manifest if digests else None,
            "config": digests.config if digests else None,
        }
    return (json.dumps({"platform": platform, "images": entries}, indent=2, sort_keys=True) + "\n").encode()


def _example_lock(catalog: Catalog) -> str:
    """The example lock's notice when it pinned this bundle's images (README stamp, E15), or ''.
    What the lock says of itself, never its path: the same fleet gives the same bundle wherever
    slm-deploy is installed (a path here made the goldens differ between checkouts)."""
    if not any(i.locked for i in catalog.images.values()):
        return ""
    return catalog.lock_example or ""


def _health_checked(upstream: dict[str, str], spec: RuntimeSpec) -> dict[str, str]:
    """A server without /metrics (Ollama, Foundry Local) is health-checked by the gateway: Caddy's
    caddy_reverse_proxy_upstreams_healthy gauge then says whether it is alive (E10)."""
    if spec.runtime in METRICS_PATH:
        return upstream
    return {**upstream, "health": HEALTH_PATH[spec.runtime.value], "health_interval": HEALTH_INTERVAL}


def build_box(box: Box, fleet: Fleet, catalog: Catalog | None = None) -> BoxBundle:
    catalog = catalog or locked_catalog(fleet.directory)
    plans = plan_box(box, fleet, catalog)
    digest = spec_digest(box, fleet)
    spec = runtime_spec(plans, catalog, box.options.offline, box.id)
    offline_image = offline_image_ref(box, fleet)
    compose = compose_document(box, plans, spec, catalog, offline_image)
    if box.options.offline:
        compose["services"][spec.service]["image"] = offline_image
    images = _box_images(compose, spec, catalog)
    for image in images:
        require_platform(image, box.hardware.cpu_arch, fleet.source, f"{box.path}.hardware.cpu_arch", f"box {box.id}")
    header = f"# Compose bundle for box {box.id} (fleet {fleet.name}), generated by slm-deploy {__version__}.\n"
    files: dict[str, str] = {"compose.yaml": yamlout.dump(compose, header)}
    files[COMPOSE_LINT_CONFIG] = compose_lint_config(compose)
    files[PLAN_FILE] = plan_document(box.id, fleet.name, spec.service, plans)
    files["gateway/Caddyfile"] = caddyfile(
        f"box {box.id}",
        tls=True,
        port=GATEWAY_CONTAINER_PORT,
        routes=[
            _health_checked(
                route(spec.service, f"{spec.service}:{spec.port}", keepalive=upstream_keepalive(plans[0], catalog)), spec
            )
        ],
        grafana_upstream="grafana:3000" if box.options.monitoring else None,
        prometheus_upstream="prometheus:9090" if box.options.monitoring else None,
        webui_upstream="open-webui:8080" if box.options.webui else None,
    )
    files.update(spec.files)
    if spec.dockerfile is not None:
        files["Dockerfile"] = spec.dockerfile
    if box.options.monitoring:
        from slm_deploy.observability.bundle import monitoring_files

        gpus = "dcgm-exporter" in compose["services"]
        scrape = prometheus_config(_scrape_targets(spec, box, gpus), {"box": box.id, "fleet": fleet.name})
        scrape["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]}
        files["alertmanager/alertmanager.yml"] = yamlout.dump(
            alertmanager_config(box), "# Alertmanager configuration, generated by slm-deploy from the fleet file's `alerts`.\n"
        )
        files["prometheus/prometheus.yml"] = yamlout.dump(scrape, "# Prometheus configuration, generated by slm-deploy.\n")
        startup = max(p.resources.startup_budget_seconds for p in plans)
        files.update(monitoring_files(plans[0].runtime, box.options.slo, gpus, box.options.logs.enabled, spec.service, startup))
    if box.options.logs.enabled:
        from slm_deploy.observability.bundle import log_files

        files.update(log_files(box, fleet.name, spec.service))
    secrets = sorted(compose["secrets"])
    files["init-secrets.sh"] = render(
        "init-secrets.sh",
        box_id=box.id,
        uid=10001,
        random_secrets=[s for s in secrets if s not in {"hf_token", "tls_cert", "tls_key"}],
        hf_token="hf_token" in secrets,
        gated=_gated(plans, catalog),
        admin_volumes=ADMIN_VOLUMES,
    )
    files[".env.example"] = render("env.example", box_id=box.id)
    if box.options.offline:
        # Pulled by digest on the connected machine, then tagged as compose names them (README).
        run = set(compose_images(compose))
        files["images.txt"] = "".join(f"{i.ref}\n" for i in images if i.ref.split("@", 1)[0] in run)
    files["README.md"] = render(
        "bundle-README.md",
        box_id=box.id,
        fleet=fleet.name,
        version=__version__,
        services=_service_descriptions(compose, spec),
        runtime=spec.runtime.value,
        runtime_service=spec.service,
        hardware=plans[0].hardware,
        plans=plans,
        listen=box.options.listen_address,
        port=box.options.gateway_port,
        api_paths=API_PATHS,
        webui=box.options.webui,
        monitoring=box.options.monitoring,
        logs=_logs_budget(box),
        offline=box.options.offline,
        offline_image=offline_image,
        images=compose_images(compose),
        platform=f"linux/{box.hardware.cpu_arch.value}",
        alerts=box.options.alerts,
        gated=_gated(plans, catalog),
        jetson=compose["services"][spec.service].get("runtime") == "nvidia",
        cache_disk_gib=sum(p.resources.cache_disk_gib for p in plans),
        startup_minutes=max(p.resources.startup_budget_seconds for p in plans) // 60,
        served_as=_served_as(spec),
        onnx_output_tokens=load_onnx_server().default_output_tokens,
        example_lock=_example_lock(catalog),
        gpu=bool(plans[0].resources.gpu_count),
        volumes=sorted(compose["volumes"]),
        backup_image=compose["services"]["gateway"]["image"],
    )
    encoded = {path: text.encode() for path, text in files.items()}
    encoded[IMAGE_LIST] = image_list(box, images)
    modes = {path: EXECUTABLE if path.endswith(".sh") else REGULAR for path in encoded}
    encoded["MANIFEST.json"] = manifest_bytes(box, fleet, digest, encoded, modes, plans)
    modes["MANIFEST.json"] = REGULAR
    return BoxBundle(box, plans, encoded, modes, digest)


MANIFEST_IGNORES = VERIFY_IGNORES  # the operator's files (bundle.swap): created on the box, not generated


def manifest_bytes(
    box: Box, fleet: Fleet, digest: str, files: dict[str, bytes], modes: dict[str, int], plans: tuple[Plan, ...] = ()
) -> bytes:
    manifest: dict[str, object] = {
        "generator": f"slm-deploy {__version__}",
        "fleet": fleet.name,
        "box": box.id,
        "spec_sha256": digest,
        "ignored": list(MANIFEST_IGNORES),
        "files": {
            path: {"sha256": hashlib.sha256(data).hexdigest(), "mode": f"{modes[path]:04o}"}
            for path, data in sorted(files.items())
        },
    }
    resolved = {p.model: {"source": p.weights_source, "revision": p.model_revision} for p in plans if p.model_revision}
    if resolved:
        # Models resolved from the Hub or Ollama: the revision or digest a rebuild must use.
        manifest["resolved_models"] = resolved
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
