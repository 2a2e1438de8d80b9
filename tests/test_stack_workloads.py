"""The shared workload blocks of the Pulumi program (stacks/k8s/workload.py, profiled_container,
stacks/azure/pools.py): what every rendered pod and pool relies on them for."""

from __future__ import annotations

from typing import Any

import pytest

from slm_deploy.catalog import load_catalog
from slm_deploy.stacks.k8s.common import Sizes, mount, profiled_container, scratch_volume
from slm_deploy.stacks.k8s.workload import serving_pod
from tests.test_stacks import STACKS, preview

SIZES = Sizes(requests={"cpu": "10m"}, limits={"cpu": "100m"})


def _pods(stack: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for m in preview(stack).manifests():
        if m["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            found.append((f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]))
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_pod_mounts_only_volumes_it_declares_and_declares_each_once(stack: str) -> None:
    """A mount without its volume, or a volume declared twice, is a pod the API server refuses."""
    pods = _pods(stack)
    assert len(pods) >= 3
    for where, pod in pods:
        names = [v["name"] for v in pod.get("volumes") or []]
        assert len(names) == len(set(names)), (where, names)
        for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
            for m in container.get("volumeMounts") or []:
                assert m["name"] in names, (where, container["name"], m["name"])


def test_the_gateway_pod_gets_a_scratch_volume_for_each_folder_caddy_writes_at_start() -> None:
    """Caddy's image profile: XDG_CONFIG_HOME=/config and XDG_DATA_HOME=/data, written at start,
    under a read-only root filesystem."""
    pod = next(p for where, p in _pods("dev") if where.startswith("Deployment/") and p["containers"][0]["name"] == "caddy")
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for folder in ("/config", "/data"):
        assert volumes[mounts[folder]]["emptyDir"]["sizeLimit"] == "16Mi", folder


def test_any_container_whose_image_writes_at_start_gets_the_scratch_mount_and_its_pod_the_volume() -> None:
    """Driven by the image profile, not by which component runs the image: two containers of the
    same image in one pod share one volume per folder."""
    image = load_catalog().images["gateway"].ref
    init = profiled_container("prepare", image, command=None, sizes=SIZES)
    main = profiled_container("serve", image, command=None, sizes=SIZES, mounts=[mount("tmp", "/tmp")])
    pod = serving_pod(containers=[main], init_containers=[init], volumes=[scratch_volume("tmp")])
    assert [m.mount_path for m in main.volume_mounts] == ["/tmp", "/config", "/data"]
    assert [m.mount_path for m in init.volume_mounts] == ["/config", "/data"]
    assert [v.name for v in pod.volumes] == ["tmp", "scratch-config", "scratch-data"]
    assert pod.service_account_name == "slm-serving" and pod.automount_service_account_token is False


def test_a_container_of_an_image_without_start_up_writes_gets_no_scratch() -> None:
    image = load_catalog().images["vllm"].ref
    container = profiled_container(
        "vllm", image, command=None, env={"USER": "slm", "LOGNAME": "slm"}, sizes=SIZES, mounts=[mount("tmp", "/tmp")]
    )
    pod = serving_pod(containers=[container], volumes=[scratch_volume("tmp")])
    assert [m.mount_path for m in container.volume_mounts] == ["/tmp"]
    assert [v.name for v in pod.volumes] == ["tmp"]


def test_each_pool_type_keeps_its_type_token() -> None:
    """The type token is part of every URN under a pool: changing it replaces the pool."""
    urns = {r.urn.rsplit("::", 1)[0].rsplit("$", 1)[-1] for r in preview("staging").resources if r.type.endswith("NodePool")}
    assert urns == {"slm:azure:GpuNodePool", "slm:azure:CpuNodePool", "slm:azure:PlatformNodePool"}
