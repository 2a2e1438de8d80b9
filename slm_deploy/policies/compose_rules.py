"""Compose rules: the CIS Docker Benchmark (section 5) items that map to compose keys.

A service may opt out of a rule only with a written reason next to it, in its
`x-hardening-exceptions` field (key: the compose key concerned, value: why)."""

from __future__ import annotations

import re
from typing import Any

from slm_deploy.image_profiles import ContainerView, profile_for, profile_problems
from slm_deploy.policies.common import REFERENCE_SUFFIXES, SECRET_NAME, unlocked, unpinned
from slm_deploy.policies.model import Kind, RuleMaker, Severity

SENSITIVE_HOST_PATHS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/var/run", "/run")


def _exception(service: dict[str, Any], key: str) -> bool:
    reasons = service.get("x-hardening-exceptions") or {}
    return bool(str(reasons.get(key, "")).strip())


def _long_running(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) != "no"


def non_root(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    user = str(service.get("user", ""))
    if (not user or user.split(":")[0] in ("0", "root")) and not _exception(service, "user"):
        return [f"service {svc['name']} runs as root (no `user:` or user 0)"]
    return []


def read_only(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    if service.get("read_only") is not True and not _exception(service, "read_only"):
        return [f"service {svc['name']} has a writable root filesystem (read_only: true with tmpfs)"]
    return []


def cap_drop_all(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    problems = []
    if "ALL" not in (service.get("cap_drop") or []):
        problems.append(f"service {svc['name']} does not drop ALL capabilities")
    if service.get("cap_add") and not _exception(service, "cap_add"):
        problems.append(f"service {svc['name']} adds capabilities {sorted(service['cap_add'])} without a written reason")
    return problems


def no_new_privileges(svc: dict[str, Any]) -> list[str]:
    opts = [str(o).replace("=", ":") for o in svc["service"].get("security_opt") or []]
    if "no-new-privileges:true" not in opts and "no-new-privileges" not in opts:
        return [f"service {svc['name']} lacks security_opt no-new-privileges:true"]
    return []


def _bind_source(volume: Any) -> tuple[str, bool] | None:
    if isinstance(volume, str):
        parts = volume.split(":")
        if len(parts) >= 2 and (parts[0].startswith("/") or parts[0].startswith(".")):
            return parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
        return None
    if isinstance(volume, dict) and volume.get("type") == "bind":
        return str(volume.get("source", "")), volume.get("read_only") is True
    return None


def no_host_access(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    name = svc["name"]
    problems = []
    if service.get("privileged") is True:
        problems.append(f"service {name} is privileged")
    for key in ("network_mode", "pid", "ipc", "uts", "userns_mode"):
        if str(service.get(key, "")) == "host":
            problems.append(f"service {name} shares the host's {key.replace('_mode', '')} namespace")
    if service.get("devices"):
        problems.append(f"service {name} maps host devices")
    for volume in service.get("volumes") or []:
        bind = _bind_source(volume)
        if bind is None:
            continue
        source, read_only_mount = bind
        if "docker.sock" in source:
            problems.append(f"service {name} mounts the Docker socket")
        elif (
            source.startswith("/")
            and any(source == p or source.startswith(p + "/") for p in SENSITIVE_HOST_PATHS)
            and not (read_only_mount and _exception(service, "volumes"))
        ):
            problems.append(f"service {name} mounts the host path {source}")
    return problems


def single_published_port(document: dict[str, Any]) -> list[str]:
    publishing = []
    problems = []
    for name, service in (document.get("services") or {}).items():
        for port in service.get("ports") or []:
            publishing.append(name)
            explicit = bool(port.get("host_ip")) if isinstance(port, dict) else str(port).count(":") >= 2
            if not explicit:
                problems.append(f"service {name} publishes a port without an explicit host interface")
    if len(set(publishing)) > 1:
        problems.append(f"more than one service publishes ports: {sorted(set(publishing))} (only the gateway may)")
    elif publishing and publishing[0] != "gateway":
        problems.append(f"service {publishing[0]} publishes a port; only the gateway may")
    return problems


def healthcheck(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    check = service.get("healthcheck") or {}
    if _long_running(service) and (not check.get("test") or check.get("disable") is True):
        return [f"long-running service {svc['name']} has no healthcheck"]
    return []


def limits(svc: dict[str, Any]) -> list[str]:
    service = svc["service"]
    limit = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    missing = [k for k in ("cpus", "memory") if not limit.get(k) and not service.get("mem_limit" if k == "memory" else k)]
    if not limit.get("pids") and not service.get("pids_limit"):
        missing.append("pids")
    return [f"service {svc['name']} has no {', '.join(missing)} limit"] if missing else []


def pinned_image(svc: dict[str, Any]) -> list[str]:
    image = str(svc["service"].get("image", ""))
    if not image:
        return [] if svc["service"].get("build") else [f"service {svc['name']} has no image"]
    if unpinned(image):
        return [f"service {svc['name']} uses an unpinned image {image!r}"]
    return []


def locked_image(svc: dict[str, Any]) -> list[str]:
    image = str(svc["service"].get("image", ""))
    if not image or svc["service"].get("build") or not unlocked(image):
        return []  # a service built on the box has no registry digest; its Dockerfile's FROM lines do
    services = (svc.get("document") or {}).get("services") or {}
    built_here = any(isinstance(s, dict) and s.get("build") and s.get("image") == image for s in services.values())
    if built_here and svc["service"].get("pull_policy") == "never":
        return []  # the image another service of the box builds, never pulled from a registry
    locked_as = str(svc["service"].get("x-locked-image", ""))
    if svc["service"].get("pull_policy") == "never" and locked_as.startswith(image + "@sha256:"):
        return []  # air-gapped: loaded by tag (save/load keeps no digest); verify checks the locked digest
    return [f"service {svc['name']} uses {image!r} without a digest"]


def no_secret_environment(svc: dict[str, Any]) -> list[str]:
    env = svc["service"].get("environment") or {}
    pairs: list[tuple[str, str]] = []
    if isinstance(env, dict):
        pairs = [(str(k), "" if v is None else str(v)) for k, v in env.items()]
    else:
        for item in env:
            key, _, value = str(item).partition("=")
            pairs.append((key, value))
    bad = [
        k
        for k, v in pairs
        if SECRET_NAME.search(k) and not k.upper().endswith(REFERENCE_SUFFIXES) and v and not v.startswith("/")
    ]
    bad += [k for k, v in pairs if re.search(r"\bhf_[A-Za-z0-9]{20,}", v)]
    return [f"service {svc['name']} passes secrets in environment values: {sorted(set(bad))}"] if bad else []


def _profile(service: dict[str, Any], catalog: Any = None) -> Any:
    """The catalog profile of the image a service runs (None for images the catalog does not pin)."""
    return profile_for(str(service.get("image", "")), catalog)


def compose_view(name: str, service: dict[str, Any]) -> ContainerView:
    """A compose service as the profile rules read it (slm_deploy.image_profiles)."""
    exec_mounts = []
    for mount in service.get("tmpfs") or []:
        target, _, options = str(mount).partition(":")
        if "exec" in options.split(","):
            exec_mounts.append(target.rstrip("/"))
    for volume in service.get("volumes") or []:
        # A named volume is mounted without noexec; a bind keeps its host filesystem's options.
        if isinstance(volume, dict) and volume.get("type") == "volume" and not volume.get("read_only"):
            exec_mounts.append(str(volume.get("target", "")).rstrip("/"))

    def listed(key: str) -> tuple[str, ...] | None:
        value = service.get(key)
        if value is None:
            return None
        return tuple(str(a) for a in value) if isinstance(value, list) else tuple(str(value).split())

    return ContainerView(
        name=name,
        image=str(service.get("image", "")),
        entrypoint=listed("entrypoint"),
        command=listed("command"),
        cap_drop=tuple(str(c) for c in service.get("cap_drop") or []),
        cap_add=tuple(str(c) for c in service.get("cap_add") or []),
        environment=_env(service),
        exec_mounts=tuple(exec_mounts),
    )


def exec_capabilities(svc: dict[str, Any], catalog: Any = None) -> list[str]:
    """An exec of a binary with file capabilities fails (EPERM) when they are not in the bounding set."""
    return [p for p in profile_problems(compose_view(svc["name"], svc["service"]), catalog) if "file capability" in p]


def healthcheck_program(svc: dict[str, Any], catalog: Any = None) -> list[str]:
    service = svc["service"]
    profile = _profile(service, catalog)
    test = (service.get("healthcheck") or {}).get("test") or []
    if profile is None or not test or test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        return []
    program = "sh" if test[0] == "CMD-SHELL" else str(test[1]).rsplit("/", 1)[-1]
    if program not in profile.binaries:
        return [
            f"service {svc['name']}: the healthcheck runs {program}, which {service['image']} does not have "
            f"(it has {', '.join(profile.binaries)})"
        ]
    return []


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items() if v is not None}
    return dict(str(item).partition("=")[::2] for item in env)


def runtime_needs(svc: dict[str, Any], catalog: Any = None) -> list[str]:
    """What the image needs from its environment to start under our hardening (profile: needs_environment, exec_caches)."""
    return [p for p in profile_problems(compose_view(svc["name"], svc["service"]), catalog) if "file capability" not in p]


def profile_rules(document: dict[str, Any], catalog: Any = None) -> list[str]:
    """Every profile-driven problem of a compose document (the three rules below)."""
    problems = []
    for name, service in (document.get("services") or {}).items():
        svc = {"name": name, "service": service, "document": document}
        for check in (exec_capabilities, healthcheck_program, runtime_needs):
            problems += check(svc, catalog)
    return problems


_c = RuleMaker(Kind.COMPOSE)


RULES = [
    _c(
        "SLM-COMPOSE-001",
        "Services run as non-root (CIS 4.1)",
        Severity.HIGH,
        "A root process that escapes its container is root on the box.",
        'Set `user: "10001:10001"` (or write the reason in x-hardening-exceptions.user).',
        non_root,
    ),
    _c(
        "SLM-COMPOSE-002",
        "Read-only root filesystem (CIS 5.12)",
        Severity.MEDIUM,
        "A writable root lets an attacker change binaries and persist.",
        "Set read_only: true and tmpfs for scratch (or x-hardening-exceptions.read_only).",
        read_only,
    ),
    _c(
        "SLM-COMPOSE-003",
        "All capabilities dropped (CIS 5.3)",
        Severity.HIGH,
        "Default Docker capabilities include NET_RAW and CHOWN, useful to an attacker.",
        "Set cap_drop: [ALL]; add back only what a written exception explains.",
        cap_drop_all,
    ),
    _c(
        "SLM-COMPOSE-004",
        "no-new-privileges (CIS 5.25)",
        Severity.HIGH,
        "setuid binaries can regain privileges the container dropped.",
        "Add security_opt: [no-new-privileges:true].",
        no_new_privileges,
    ),
    _c(
        "SLM-COMPOSE-005",
        "No privileged mode, host namespaces, devices or sensitive mounts (CIS 5.4, 5.5, 5.9, 5.15-5.17, 5.31)",
        Severity.CRITICAL,
        "Each of these hands the host to the container.",
        "Remove privileged, host network/pid/ipc/uts, devices and docker.sock; mount host paths read-only "
        "with a written reason only.",
        no_host_access,
    ),
    _c(
        "SLM-COMPOSE-006",
        "Only the gateway publishes a port, on an explicit interface (CIS 5.13)",
        Severity.HIGH,
        "Model servers have no authentication of their own; ports bound to 0.0.0.0 by default reach every network.",
        "Publish only the gateway, with host_ip set; keep the rest on an internal network.",
        single_published_port,
        Kind.COMPOSE_FILE,
    ),
    _c(
        "SLM-COMPOSE-007",
        "Healthcheck on long-running services (CIS 4.6)",
        Severity.LOW,
        "Without a healthcheck a hung server looks up, and `restart` never helps.",
        "Add a healthcheck with a start_period that covers model loading.",
        healthcheck,
    ),
    _c(
        "SLM-COMPOSE-008",
        "CPU, memory and pids limits (CIS 5.10, 5.11, 5.28)",
        Severity.MEDIUM,
        "One runaway or fork-bombed service takes the whole box down.",
        "Set deploy.resources.limits cpus, memory and pids.",
        limits,
    ),
    _c(
        "SLM-COMPOSE-009",
        "Pinned images",
        Severity.HIGH,
        "`latest` changes under you: what was reviewed is not what runs.",
        "Use an explicit version tag (or digest) from the catalog.",
        pinned_image,
    ),
    _c(
        "SLM-COMPOSE-010",
        "Secrets through `secrets:`, not environment values",
        Severity.CRITICAL,
        "Environment values show in `docker inspect`, in logs and in every copy of the compose file.",
        "Declare a compose secret (a file) and point the program at /run/secrets/NAME (e.g. a *_FILE variable).",
        no_secret_environment,
    ),
    _c(
        "SLM-COMPOSE-011",
        "Images locked to a digest",
        Severity.MEDIUM,
        "A tag can be moved on the registry: the same bundle then runs different bits, box by box.",
        "Run `slm-deploy lock` and regenerate without --allow-unlocked: references become repository:tag@sha256:...",
        locked_image,
    ),
    _c(
        "SLM-COMPOSE-014",
        "Capabilities kept for binaries that carry file capabilities (image profile)",
        Severity.HIGH,
        "With an empty bounding set the kernel refuses to exec a binary with file capabilities: the service never starts.",
        "Add back exactly the file's capability with cap_add, and write why in x-hardening-exceptions.cap_add.",
        exec_capabilities,
    ),
    _c(
        "SLM-COMPOSE-012",
        "Healthcheck programs exist in the image (image profile)",
        Severity.MEDIUM,
        "A healthcheck that runs a missing program fails forever: the service stays unhealthy and its dependants never start.",
        "Use a program the image's profile lists (e.g. wget in busybox images, not curl).",
        healthcheck_program,
    ),
    _c(
        "SLM-COMPOSE-013",
        "What the image needs to start under the hardening (image profile)",
        Severity.HIGH,
        "An unnamed uid without USER/LOGNAME, or compile caches on a noexec tmpfs, kill the server at start.",
        "Set the environment the profile names and put exec caches on an exec-capable tmpfs.",
        runtime_needs,
    ),
]
