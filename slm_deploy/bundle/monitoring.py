"""The monitoring services of an edge bundle: Prometheus, Grafana, Alertmanager, node-exporter and,
on a discrete NVIDIA GPU, dcgm-exporter, hardened like every service.

See slm_deploy/observability/bundle.py for their configuration files.
"""

from __future__ import annotations

from typing import Any

from slm_deploy.bundle.services import ALERTS_NETWORK, INTERNAL_NETWORK, Limits, hardened, healthcheck
from slm_deploy.catalog import Catalog
from slm_deploy.fleet import Box

LIMITS = {
    "prometheus": Limits(1.0, 1024, 256),
    "grafana": Limits(0.5, 512, 256),
    "node-exporter": Limits(0.25, 128, 64),
    "dcgm-exporter": Limits(0.5, 512, 128),
    "alertmanager": Limits(0.25, 128, 64),
}
PROMETHEUS_RETENTION = "15d"
PROMETHEUS_DISK_SHARE = 0.02  # of the box's disk, for metrics
PROMETHEUS_SIZE_MIB = (256, 8192)  # at least, at most


def prometheus_retention_mib(disk_gib: float | None) -> int:
    """The TSDB's size cap (E22): a share of the box's disk, within bounds; time alone lets a busy
    small box fill its disk (Prometheus removes whole blocks once the size is exceeded)."""
    if disk_gib is None:
        return PROMETHEUS_SIZE_MIB[1] // 4
    share = int(disk_gib * 1024 * PROMETHEUS_DISK_SHARE)
    return max(PROMETHEUS_SIZE_MIB[0], min(PROMETHEUS_SIZE_MIB[1], share))


def _prometheus(catalog: Catalog, box: Box) -> dict[str, Any]:
    service = hardened(catalog.images["prometheus"].ref, limits=LIMITS["prometheus"], networks=[INTERNAL_NETWORK])
    service["command"] = [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
        f"--storage.tsdb.retention.size={prometheus_retention_mib(box.hardware.disk_gib)}MB",
        "--web.listen-address=0.0.0.0:9090",
    ]
    service["volumes"] = _config_and_data("./prometheus", "/etc/prometheus", "prometheus-data", "/prometheus")
    service["expose"] = ["9090"]
    service["healthcheck"] = healthcheck(["CMD", "wget", "--quiet", "--spider", "http://127.0.0.1:9090/-/ready"])
    return service


def _grafana(catalog: Catalog, box: Box) -> dict[str, Any]:
    service = hardened(catalog.images["grafana"].ref, limits=LIMITS["grafana"], networks=[INTERNAL_NETWORK])
    service["environment"] = {
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana_admin_password",
        "GF_SERVER_ROOT_URL": f"https://localhost:{box.options.gateway_port}/grafana/",
        "GF_SERVER_SERVE_FROM_SUB_PATH": "true",
        "GF_AUTH_ANONYMOUS_ENABLED": "false",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_PLUGINS_PREINSTALL_DISABLED": "true",  # no downloads from grafana.com on an internal network
        "GF_PATHS_DATA": "/var/lib/grafana",
        "GF_PATHS_PROVISIONING": "/etc/grafana/provisioning",
    }
    service["secrets"] = ["grafana_admin_password"]
    provisioning = "/etc/grafana/provisioning"
    service["volumes"] = _config_and_data("./grafana/provisioning", provisioning, "grafana-data", "/var/lib/grafana")
    service["expose"] = ["3000"]
    service["healthcheck"] = healthcheck(["CMD", "wget", "--quiet", "--spider", "http://127.0.0.1:3000/api/health"], 60)
    service["depends_on"] = {"prometheus": {"condition": "service_started"}}
    return service


def _alertmanager(catalog: Catalog, box: Box) -> dict[str, Any]:
    networks = [INTERNAL_NETWORK]
    if box.options.alerts is not None:
        networks.append(ALERTS_NETWORK)  # the receiver (webhook, mail relay) is outside the box
    service = hardened(catalog.images["alertmanager"].ref, limits=LIMITS["alertmanager"], networks=networks)
    service["command"] = [
        "--config.file=/etc/alertmanager/alertmanager.yml",
        "--storage.path=/alertmanager",
        "--web.listen-address=0.0.0.0:9093",
        "--cluster.listen-address=",
    ]
    service["volumes"] = _config_and_data("./alertmanager", "/etc/alertmanager", "alertmanager-data", "/alertmanager")
    service["expose"] = ["9093"]
    service["healthcheck"] = healthcheck(["CMD", "wget", "--quiet", "--spider", "http://127.0.0.1:9093/-/ready"])
    service["depends_on"] = _after_volume_init()
    return service


# What node-exporter's collectors read on the host, and nothing more: the dashboards and rules use
# cpu, meminfo, loadavg, filesystem and netdev only. /sys is not namespaced (the container's
# read-only sysfs is the host's), so it is not bound; PID 1's mount table and network directory must
# be the host's, and the three proc files sit beside them under --path.procfs.
NODE_COLLECTORS = ("cpu", "filesystem", "loadavg", "meminfo", "netdev")
NODE_HOST_FILES = (
    ("/proc/1/mounts", "/host/proc/1/mounts"),  # filesystem: the host's mount table (older releases)
    ("/proc/1/mountinfo", "/host/proc/1/mountinfo"),  # filesystem: the host's mount table
    # netdev: PID 1's net directory is the host's network namespace; the container's own /proc/net
    # (and netlink) would show the container's interfaces instead.
    ("/proc/1/net", "/host/proc/net"),
)
NODE_PROC_LINKS = ("stat", "meminfo", "loadavg")  # cpu, meminfo, loadavg
# The disk that matters is Docker's data root, where the model cache and every volume live: a named
# volume's filesystem is that disk. It is mounted as the exporter's root filesystem (statfs of the
# host's "/" mount point), instead of the host's whole "/" (which holds the engine's sockets).
NODE_DISK_VOLUME = "prometheus-data"
# The release this box runs, as the box agent writes it (rollout/boxagent/metrics.py record_state) into
# ROOT/metrics, read by node-exporter's textfile collector (node_exporter collector/textfile.go:
# *.prom files of --collector.textfile.directory) for the fleet view (docs/rollout.md). ROOT is the
# agent's --root; a box with another root sets SLM_ROOT in the bundle's .env (an operator file).
# create_host_path: a box without the agent gets an empty folder, and no release metrics. Compose
# passes such a bind through the legacy Binds API, which creates a missing source on any engine
# (docker/compose pkg/compose/create.go buildContainerVolumes/requireMountAPI, moby#43483).
RELEASE_METRICS_SOURCE = "${SLM_ROOT:-/srv/slm-deploy}/metrics"
RELEASE_METRICS_TARGET = "/host/slm-release"


def _node_exporter(catalog: Catalog) -> dict[str, Any]:
    service = hardened(catalog.images["node-exporter"].ref, limits=LIMITS["node-exporter"], networks=[INTERNAL_NETWORK])
    service["command"] = [
        "--path.procfs=/host/proc",
        "--path.sysfs=/sys",
        "--path.rootfs=/host/root",
        "--collector.disable-defaults",
        *(f"--collector.{c}" for c in NODE_COLLECTORS),
        "--no-collector.netdev.netlink",
        "--collector.textfile",
        f"--collector.textfile.directory={RELEASE_METRICS_TARGET}",
        # One series: the data root's disk, reported at mountpoint "/".
        "--collector.filesystem.mount-points-exclude=^/.+",
    ]
    service["volumes"] = [{"type": "bind", "source": s, "target": t, "read_only": True} for s, t in NODE_HOST_FILES]
    service["volumes"] += [
        {"type": "bind", "source": f"/proc/{name}", "target": f"/host/proc/{name}", "read_only": True} for name in NODE_PROC_LINKS
    ]
    service["volumes"].append({"type": "volume", "source": NODE_DISK_VOLUME, "target": "/host/root", "read_only": True})
    service["volumes"].append(
        {
            "type": "bind",
            "source": RELEASE_METRICS_SOURCE,
            "target": RELEASE_METRICS_TARGET,
            "read_only": True,
            "bind": {"create_host_path": True},
        }
    )
    service["expose"] = ["9100"]
    service["healthcheck"] = healthcheck(["CMD", "wget", "--quiet", "--spider", "http://127.0.0.1:9100/metrics"])
    service["x-hardening-exceptions"] = {
        "volumes": "read-only host proc files for the collectors the dashboards use: /proc/1/mounts and "
        "/proc/1/mountinfo (filesystem: the host's mount table), /proc/1/net (netdev: the host's interfaces, not "
        "the container's), /proc/stat, /proc/meminfo, /proc/loadavg (cpu, meminfo, loadavg, beside them under "
        f"--path.procfs); {RELEASE_METRICS_SOURCE}, the box agent's release metrics (textfile collector, the fleet view); "
        "the disk is read through a named volume, not the host's /; no write access, no host namespaces",
    }
    return service


DCGM_COUNTERS_PATH = "/etc/dcgm-exporter/slm.csv"


def _dcgm_exporter(catalog: Catalog, gpus: int) -> dict[str, Any]:
    limits = LIMITS["dcgm-exporter"]
    service = hardened(catalog.images["dcgm-exporter"].ref, limits=limits, networks=[INTERNAL_NETWORK], gpus=gpus)
    # The image's entrypoint script runs `ldconfig` under `set -e`, which fails as a non-root user on a
    # read-only root; the NVIDIA runtime hook has already updated the loader cache, so run the exporter.
    service["entrypoint"] = ["/usr/bin/dcgm-exporter"]
    # Only the DCGM_FI_DEV_* fields the rules and dashboards read (observability.bundle.DCGM_FIELDS):
    # the default counters include profiling fields that a non-root host engine cannot watch.
    service["command"] = ["-f", DCGM_COUNTERS_PATH]
    service["volumes"] = [{"type": "bind", "source": "./dcgm/counters.csv", "target": DCGM_COUNTERS_PATH, "read_only": True}]
    service["expose"] = ["9400"]
    service["healthcheck"] = healthcheck(["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9400"], 60)
    return service


def monitoring_services(catalog: Catalog, box: Box, dcgm_gpus: int | None) -> dict[str, Any]:
    """The monitoring services by name, each after volume-init where it keeps data; dcgm-exporter
    watches `dcgm_gpus` GPUs (None: no exporter, as on unified-memory boards and CPU boxes)."""
    services = {"prometheus": _prometheus(catalog, box), "grafana": _grafana(catalog, box)}
    services["prometheus"]["depends_on"] = _after_volume_init()
    services["grafana"]["depends_on"] |= _after_volume_init()
    services["alertmanager"] = _alertmanager(catalog, box)
    services["node-exporter"] = _node_exporter(catalog)
    if dcgm_gpus is not None:
        services["dcgm-exporter"] = _dcgm_exporter(catalog, dcgm_gpus)
    return services


def _config_and_data(config: str, config_target: str, data: str, data_target: str) -> list[dict[str, Any]]:
    """The bundle's configuration folder, read-only, and the named volume the service keeps its data in."""
    return [
        {"type": "bind", "source": config, "target": config_target, "read_only": True},
        {"type": "volume", "source": data, "target": data_target},
    ]


def _after_volume_init() -> dict[str, Any]:
    return {"volume-init": {"condition": "service_completed_successfully"}}
