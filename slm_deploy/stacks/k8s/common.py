"""Building blocks every workload shares: the restricted security contexts, probes, labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import (
    CapabilitiesArgs,
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
    EnvVarArgs,
    HTTPGetActionArgs,
    PodSecurityContextArgs,
    ProbeArgs,
    ResourceRequirementsArgs,
    SeccompProfileArgs,
    SecurityContextArgs,
    TolerationArgs,
    TopologySpreadConstraintArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicyPeerArgs
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget, PodDisruptionBudgetSpecArgs

from slm_deploy.catalog import Catalog, ImageProfile
from slm_deploy.image_profiles import capability_reason, exec_capabilities, profile_for, runs, scratch_dirs
from slm_deploy.stacks.k8s.chart_images import pin_chart_images
from slm_deploy.stacks.placement import GPU_RESOURCE

APP_UID = 10001
PART_OF = "slm-deploy"
ROLE_LABEL = "slm.dev/role"


def labels(name: str, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
        ROLE_LABEL: role,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def pod_security() -> PodSecurityContextArgs:
    """Pod Security Standards `restricted`, at pod level."""
    return PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        fs_group=APP_UID,
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security(add: Sequence[str] = ()) -> SecurityContextArgs:
    """Pod Security Standards `restricted`, plus a read-only root filesystem. ADD: capabilities the
    image's programs carry as file capabilities (restricted allows NET_BIND_SERVICE alone)."""
    return SecurityContextArgs(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        capabilities=CapabilitiesArgs(drop=["ALL"], add=list(add) or None),
        seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
    )


@dataclass(frozen=True)
class Probes:
    startup: ProbeArgs | None = None
    readiness: ProbeArgs | None = None
    liveness: ProbeArgs | None = None

    @classmethod
    def over_http(
        cls, port: int, *, ready: str, live: str, startup: tuple[int, int], live_tolerance: tuple[int, int] | None = None
    ) -> Probes:
        """Readiness on READY every 10 s, liveness on LIVE every 20 s; until LIVE first answers, the
        startup probe on it (STARTUP: period, failures) holds liveness off. LIVE_TOLERANCE: liveness's
        (failures, timeout seconds) where the default 3 x 5 s is too tight."""
        return cls(
            startup=http_probe(live, port, *startup),
            readiness=http_probe(ready, port, 10, 3),
            liveness=http_probe(live, port, 20, *(live_tolerance or (3, 5))),
        )


@dataclass(frozen=True)
class Sizes:
    """requests and limits of one container (cpu, memory, ephemeral-storage and devices)."""

    requests: dict[str, str]
    limits: dict[str, str]


def profiled_container(
    name: str,
    image: str,
    *,
    command: list[str] | None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    sizes: Sizes,
    probes: Probes = Probes(),
    mounts: list[VolumeMountArgs] | None = None,
    ports: list[ContainerPortArgs] | None = None,
) -> ContainerArgs:
    """One hardened container, driven by its image's profile (catalog/images.yaml `profiles`): the
    capabilities its programs need under drop ALL (their file capabilities), the environment the
    image sets or needs, a scratch mount where it writes at start (its pod's volume: scratch_volumes);
    the same facts the compose bundle is built from (slm_deploy.image_profiles)."""
    profile = profile_for(image)
    add: list[str] = []
    environment = dict(env or {})
    if profile is not None:
        add = exec_capabilities(profile, command, args)
        environment = {**profile.environment, **environment}
        missing = [k for k in profile.needs_environment if not environment.get(k) and runs_main(profile, command, args)]
        if missing:
            raise ValueError(f"container {name}: {image} needs {', '.join(missing)} set (image profile)")
        if scratch := scratch_dirs(profile):
            mounts = [*(mounts or []), *(mount(_scratch_name(d), d) for d in scratch)]
    return ContainerArgs(
        name=name,
        image=image,
        image_pull_policy="Always",
        command=command,
        args=args,
        env=[EnvVarArgs(name=k, value=v) for k, v in sorted(environment.items())] or None,
        ports=ports,
        security_context=container_security(add),
        resources=ResourceRequirementsArgs(requests=sizes.requests, limits=sizes.limits),
        startup_probe=probes.startup,
        readiness_probe=probes.readiness,
        liveness_probe=probes.liveness,
        volume_mounts=mounts,
    )


def _scratch_name(path: str) -> str:
    return "scratch-" + path.strip("/").replace("/", "-")


def scratch_volumes(image: str) -> list[VolumeArgs]:
    """The volumes behind profiled_container's scratch mounts: the folders IMAGE's environment
    points its start-up writes to (Caddy's XDG_CONFIG_HOME and XDG_DATA_HOME), writable under a
    read-only root."""
    profile = profile_for(image)
    return [scratch_volume(_scratch_name(d), "16Mi") for d in (scratch_dirs(profile) if profile is not None else [])]


def capability_skips(image: str, command: list[str] | None, args: list[str] | None = None) -> dict[str, str]:
    """checkov's own exception format (a `checkov.io/skip` annotation on the workload) for the
    capabilities a container keeps for its image's file capabilities (CKV_K8S_25: added capability)."""
    profile = profile_for(image)
    caps = exec_capabilities(profile, command, args) if profile is not None else []
    return {"checkov.io/skip1": f"CKV_K8S_25={capability_reason(profile, caps)}"} if profile and caps else {}


def runs_main(profile: ImageProfile, command: list[str] | None, args: list[str] | None) -> bool:
    main = (profile.entrypoint or profile.command or ("",))[0]
    return runs(profile, command, args, main)


def http_probe(path: str, port: int, period: int, failures: int, timeout: int = 5) -> ProbeArgs:
    return ProbeArgs(
        http_get=HTTPGetActionArgs(path=path, port=port),
        period_seconds=period,
        failure_threshold=failures,
        timeout_seconds=timeout,
    )


def scratch_volume(name: str = "tmp", size: str = "1Gi", memory: bool = False) -> VolumeArgs:
    return VolumeArgs(name=name, empty_dir=EmptyDirVolumeSourceArgs(size_limit=size, medium="Memory" if memory else None))


def mount(name: str, path: str, read_only: bool = False, sub_path: str | None = None) -> VolumeMountArgs:
    return VolumeMountArgs(name=name, mount_path=path, read_only=read_only, sub_path=sub_path)


def port(number: int, name: str) -> ContainerPortArgs:
    return ContainerPortArgs(container_port=number, name=name, protocol="TCP")


GPU_TOLERATION = TolerationArgs(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
GPU_TOLERATION_VALUES = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def toleration_values(taints: tuple[str, ...]) -> list[dict[str, str]]:
    """`key=value:Effect` taints (as AKS writes them) -> tolerations that match them exactly."""
    out = []
    for taint in taints:
        key_value, effect = taint.rsplit(":", 1)
        key, _, value = key_value.partition("=")
        out.append(
            {"key": key, "operator": "Equal", "value": value, "effect": effect}
            if value
            else {"key": key, "operator": "Exists", "effect": effect}
        )
    return out


def tolerations_for(taints: tuple[str, ...]) -> list[TolerationArgs]:
    return [
        TolerationArgs(key=t["key"], operator=t["operator"], value=t.get("value"), effect=t["effect"])
        for t in toleration_values(taints)
    ]


def gib(value: float) -> str:
    return f"{round(value * 1024)}Mi"


def spread(name: str) -> list[TopologySpreadConstraintArgs]:
    """Replicas on different nodes where possible."""
    return [
        TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key="kubernetes.io/hostname",
            when_unsatisfiable="ScheduleAnyway",
            label_selector=LabelSelectorArgs(match_labels=selector(name)),
        )
    ]


def disruption_budget(name: str, namespace: str, opts: pulumi.ResourceOptions) -> PodDisruptionBudget:
    # maxUnavailable, not minAvailable: a single replica must not block node drains and upgrades.
    return PodDisruptionBudget(
        f"{name}-pdb",
        metadata=ObjectMetaArgs(name=name, namespace=namespace),
        spec=PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=LabelSelectorArgs(match_labels=selector(name))),
        opts=opts,
    )


def from_monitoring() -> NetworkPolicyPeerArgs:
    return NetworkPolicyPeerArgs(namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": "monitoring"}))


def metrics_monitor(
    name: str, namespace: str, *, kind: str, role: str, port_name: str, path: str, opts: pulumi.ResourceOptions
) -> CustomResource:
    """A ServiceMonitor or PodMonitor; `slm_role` is what the alert rules select on."""
    endpoint = {
        "port": port_name,
        "path": path,
        "interval": "15s",
        "relabelings": [{"targetLabel": "slm_role", "replacement": role}],
    }
    endpoints_key = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    return CustomResource(
        f"{name}-monitor",
        api_version="monitoring.coreos.com/v1",
        kind=kind,
        metadata=ObjectMetaArgs(name=name, namespace=namespace, labels=labels(name, role)),
        spec={
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, ROLE_LABEL: role}},
            endpoints_key: [endpoint],
        },
        opts=opts,
    )


def chart_release(
    resource_name: str,
    catalog: Catalog,
    chart_id: str,
    *,
    namespace: str,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    timeout: int = 900,
) -> Release:
    """The catalog's chart CHART_ID as an atomic Helm release named after the chart, every image it
    runs pinned to the locked digest (merged into VALUES: pin_chart_images)."""
    chart = catalog.charts[chart_id]
    pin_chart_images(values, chart, catalog)
    return Release(
        resource_name,
        ReleaseArgs(
            name=chart.chart,
            chart=chart.chart,
            version=chart.version,
            namespace=namespace,
            repository_opts=RepositoryOptsArgs(repo=chart.repository),
            values=values,
            atomic=True,
            timeout=timeout,
        ),
        opts=opts,
    )
