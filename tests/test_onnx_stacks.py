"""Runtime `onnx` on Kubernetes: a CPU pool (`cpuPools`) and an OnnxServer running the user's own
image (`models[].image`, built from `slm-deploy image onnx`) pinned by the lock; what the preview
declares, where the simulator schedules it, the review, and the refusals."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.environment import plan_environment
from slm_deploy.preview import PreviewResult, run_preview
from slm_deploy.simulator import from_preview, simulate
from slm_deploy.simulator.scheduling import _why_not, pools, workload_pods
from slm_deploy.supply import lock as locking
from tests.conftest import ROOT, run_cli

IMAGE = "example.azurecr.io/slm-onnx:2.2.1"


def _config() -> dict[str, Any]:
    """The staging example: an A10 pool (vLLM, Ollama) and a CPU pool serving the onnx model phi4cpu."""
    config = copy.deepcopy(yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())["config"])
    assert config["slm-deploy:models"][2]["runtime"] == "onnx" and config["slm-deploy:models"][2]["image"] == IMAGE
    return config


def _lock_with_image(archs: tuple[str, ...] = ("linux/amd64",)) -> locking.LockFile:
    """The packaged (example) lock plus an entry for IMAGE, as `slm-deploy lock --images` writes one."""
    lock = locking.load(locking.PACKAGED_LOCK)
    python = lock.images["python:3.11-slim-bookworm"]
    entry = python.model_copy(update={"platforms": {p: d for p, d in python.platforms.items() if p in archs}})
    return lock.model_copy(update={"images": {**lock.images, IMAGE: entry}})


def _project(tmp_path: Path, config: dict[str, Any], lock: locking.LockFile | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.cpu.yaml").write_text(yaml.safe_dump({"config": config}))
    locking.write(tmp_path / locking.LOCK_NAME, lock or _lock_with_image())
    return tmp_path


_CACHE: dict[str, PreviewResult] = {}


def _preview(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    if "cpu" not in _CACHE:
        _CACHE["cpu"] = run_preview("cpu", _project(tmp_path_factory.mktemp("cpu"), _config()))
    return _CACHE["cpu"]


def _manifest(result: PreviewResult, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in result.manifests() if m["kind"] == kind and m["metadata"]["name"].startswith(name)]
    assert len(found) == 1, (kind, name, [m["metadata"]["name"] for m in found])
    return found[0]


def test_preview_declares_the_onnx_server_sized_by_the_plan_with_the_locked_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    result = _preview(tmp_path_factory)
    env = plan_environment("cpu", {k.split(":", 1)[1]: v for k, v in _config().items() if k.startswith("slm-deploy:")})
    plan = next(m.plan for m in env.models if m.spec.name == "phi4cpu")
    digest = _lock_with_image().images[IMAGE].digest
    ref = f"{IMAGE}@{digest}"
    pod = _manifest(result, "Deployment", "phi4cpu")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == ref and pod["initContainers"][0]["image"] == ref
    assert server["command"] == ["python3", "/opt/slm/foundry_launcher.py"]
    args = server["args"]
    assert args[args.index("--variant") + 1] == "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
    assert args[args.index("--max-length") + 1] == "4096"
    res = plan.resources
    assert server["resources"]["requests"]["cpu"] == f"{res.cpu_request:g}"
    assert server["resources"]["requests"]["memory"] == f"{res.memory_request_gib}Gi"
    assert server["resources"]["limits"]["memory"] == f"{res.memory_limit_gib}Gi"
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert server["startupProbe"]["httpGet"]["path"] == "/status"
    assert server["startupProbe"]["failureThreshold"] == res.startup_failure_threshold
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    # Restricted: non-root 10001, read-only root, writable emptyDir scratch, Foundry Local's telemetry off.
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "CI", "value": "true"} in server["env"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp and args[args.index("--scratch") + 1].startswith("/tmp/")
    # On the CPU pool only: its selector and its taint, not the GPU taint.
    assert pod["nodeSelector"] == {"slm.dev/pool": "cpu"}
    assert [t["key"] for t in pod["tolerations"]] == ["slm.dev/cpu-models"]
    # No ConfigMap of the build context: requirements and launcher are in the image.
    assert not [m for m in result.manifests() if m["metadata"]["name"] == "phi4cpu-config"]

    job = _manifest(result, "Job", "phi4cpu-fetch")["spec"]["template"]["spec"]
    (fetch,) = job["containers"]
    assert fetch["image"] == ref
    assert "allow_patterns=['cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/*']" in fetch["command"][-1]
    assert [t["key"] for t in job["tolerations"]] == ["slm.dev/cpu-models"] and job["nodeSelector"] == pod["nodeSelector"]
    pvc = _manifest(result, "PersistentVolumeClaim", "phi4cpu-models")
    assert pvc["spec"]["resources"]["requests"]["storage"] == f"{res.cache_disk_gib}Gi"
    assert _manifest(result, "PodDisruptionBudget", "phi4cpu")["spec"]["maxUnavailable"] == 1
    assert _manifest(result, "HorizontalPodAutoscaler", "phi4cpu")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    ingress = _manifest(result, "NetworkPolicy", "phi4cpu-ingress")["spec"]
    assert ingress["ingress"][0]["ports"] == [{"port": 5273, "protocol": "TCP"}]
    assert _manifest(result, "NetworkPolicy", "phi4cpu-fetch-egress")["spec"]["egress"][0]["ports"][0]["port"] == 443
    assert not [m for m in result.manifests() if m["kind"] == "PodMonitor" and m["metadata"]["name"] == "phi4cpu"]
    caddyfile = _manifest(result, "ConfigMap", "slm-cpu-gateway-config")["data"]["Caddyfile"]
    assert "phi4cpu.slm.svc.cluster.local:5273" in caddyfile


def test_the_cpu_pool_is_an_aks_user_pool_tainted_for_cpu_model_servers(tmp_path_factory: pytest.TempPathFactory) -> None:
    result = _preview(tmp_path_factory)
    (pool,) = [
        r
        for r in result.resources
        if r.type == "azure-native:containerservice:AgentPool" and r.inputs.get("agentPoolName") == "cpu"
    ]
    assert pool.inputs["vmSize"] == "Standard_D8ds_v5" and pool.inputs["mode"] == "User"
    assert pool.inputs["nodeTaints"] == ["slm.dev/cpu-models=true:NoSchedule"]
    assert pool.inputs["nodeLabels"]["slm.dev/pool"] == "cpu"
    assert "gpuProfile" not in pool.inputs and pool.inputs["maxCount"] == 2
    assert pool.inputs["osDiskType"] == "Ephemeral" and pool.inputs["osDiskSizeGB"] == 128


def test_the_simulator_lands_the_onnx_server_on_the_cpu_pool_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = from_preview(_preview(tmp_path_factory))
    assert simulate(stack) == []
    facts = load_aks_facts()
    node_pools = pools(stack, facts)
    cpu = next(p for p in node_pools if p.name == "cpu")
    # Allocatable after AKS's reservations (8 vCPUs less 180m), less the requests of AKS's own DaemonSets.
    assert cpu.cpu == 8000 - 180 - facts.daemonset_allowance.cpu_millicores and cpu.gpus == 0
    server = next(p for p in workload_pods(stack) if "phi4cpu" in p.owner and "Deployment" in p.owner)
    assert [p.name for p in node_pools if _why_not(server, p) is None] == ["cpu"]
    assert "not tolerated" in str(_why_not(server, next(p for p in node_pools if p.name == "a10")))
    # Nothing else lands on the CPU pool: the gateway and the GPU servers do not tolerate its taint.
    others = [p for p in workload_pods(stack) if "phi4cpu" not in p.owner and not p.daemon]
    assert others and all(_why_not(p, cpu) for p in others)


def test_an_onnx_server_that_does_not_tolerate_the_cpu_pool_fits_no_pool(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.test_simulator import is_manifest, mutate, with_inputs

    stack = from_preview(_preview(tmp_path_factory))
    broken = mutate(stack, is_manifest("Deployment", "phi4cpu"), with_inputs("spec.template.spec.tolerations", None))
    findings = simulate(broken)
    assert [f.rule for f in findings] == ["SLM-SIM-001"]
    assert (
        "phi4cpu" in findings[0].resource and "cpu: taint slm.dev/cpu-models=true:NoSchedule not tolerated" in findings[0].message
    )


@pytest.mark.tools
def test_the_review_of_a_stack_with_an_onnx_model_is_clean(tmp_path: Path) -> None:
    root = _project(tmp_path, _config())
    out = run_cli(
        "review", "--stack", "cpu", "--project", str(root), "--tool", "slm", "--tool", "checkov", "--tool", "kubernetes-validate"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "clean: zero findings" in out.stdout


def _refusal(tmp_path: Path, config: dict[str, Any], lock: locking.LockFile | None = None) -> str:
    out = run_cli("preview", "cpu", "--project-dir", str(_project(tmp_path, config, lock)))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_an_onnx_model_without_image_is_refused(tmp_path: Path) -> None:
    config = _config()
    del config["slm-deploy:models"][2]["image"]
    err = _refusal(tmp_path, config)
    assert err.startswith("error: Pulumi.cpu.yaml: slm-deploy:models[2].image: runtime onnx needs image: ")
    assert "slm-deploy image onnx" in err


def test_an_image_missing_from_the_lock_is_refused(tmp_path: Path) -> None:
    lock = locking.load(locking.PACKAGED_LOCK)
    without = lock.model_copy(update={"images": {k: v for k, v in lock.images.items() if k != IMAGE}})
    err = _refusal(tmp_path, _config(), without)
    assert err.startswith(f"error: Pulumi.cpu.yaml: slm-deploy:models[2].image: {IMAGE} is not in ")
    assert "slm-deploy lock --images" in err


def test_an_image_without_an_amd64_manifest_is_refused(tmp_path: Path) -> None:
    err = _refusal(tmp_path, _config(), _lock_with_image(("linux/arm64",)))
    assert "slm-deploy:models[2].image" in err and "has no linux/amd64 manifest" in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["slm-deploy:models"][2].update(pool="a10"), "slm-deploy:models[2].pool: pool 'a10' is a GPU pool: "),
        (lambda c: c["slm-deploy:models"][0].update(image=IMAGE), "slm-deploy:models[0].image: only runtime onnx takes image"),
        (
            lambda c: c["slm-deploy:cpuPools"][0].update(vmSize="Standard_NC8ads_A10_v4"),
            "cpuPools[0].vmSize: 'Standard_NC8ads_A10_v4' is a GPU size",
        ),
        (
            lambda c: c["slm-deploy:cpuPools"][0].update(vmSize="Standard_D8s_v5"),
            "cpuPools[0].osDiskGb: an ephemeral OS disk of 0 GB",
        ),
        (
            lambda c: c["slm-deploy:cpuPools"][0].update(nodeSelector={"a": "b"}),
            "cpuPools[0].nodeSelector: for existing clusters only",
        ),
        (lambda c: c["slm-deploy:cpuPools"].append({"name": "a10", "vmSize": "Standard_D8ds_v5"}), "pool names must be unique"),
    ],
)
def test_misplaced_onnx_settings_are_refused_with_one_line(tmp_path: Path, change: Any, expected: str) -> None:
    config = _config()
    change(config)
    assert expected in _refusal(tmp_path, config)


def test_a_managed_os_disk_makes_a_dsv5_cpu_pool_usable(tmp_path: Path) -> None:
    config = _config()
    config["slm-deploy:cpuPools"][0] |= {"vmSize": "Standard_D16s_v5", "osDiskType": "Managed"}
    result = run_preview("cpu", _project(tmp_path, config))
    (pool,) = [
        r
        for r in result.resources
        if r.type == "azure-native:containerservice:AgentPool" and r.inputs.get("agentPoolName") == "cpu"
    ]
    assert pool.inputs["vmSize"] == "Standard_D16s_v5" and pool.inputs["osDiskType"] == "Managed"
    assert simulate(from_preview(result)) == []


def test_on_an_existing_cluster_the_cpu_pool_is_a_node_selector_and_tolerations_from_config(tmp_path: Path) -> None:
    config = _config()
    config["slm-deploy:cluster"] = {"mode": "existing", "kubeconfig": "~/.kube/config", "context": "lab"}
    config["slm-deploy:cpuPools"] = [
        {
            "name": "cpu",
            "vmSize": "Standard_D16ds_v5",
            "nodeSelector": {"node.example/cpu": "big"},
            "tolerations": ["dedicated=llm:NoSchedule"],
        }
    ]
    result = run_preview("cpu", _project(tmp_path, config))
    assert not [r for r in result.resources if r.type.startswith("azure-native:")]
    for kind, name in (("Deployment", "phi4cpu"), ("Job", "phi4cpu-fetch")):
        pod = _manifest(result, kind, name)["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"node.example/cpu": "big"}
        assert pod["tolerations"] == [{"effect": "NoSchedule", "key": "dedicated", "operator": "Equal", "value": "llm"}]
    # Planned on the configured size: 16 vCPUs give a larger CPU request than the 8 of the aks test.
    server = _manifest(result, "Deployment", "phi4cpu")["spec"]["template"]["spec"]["containers"][0]
    assert float(server["resources"]["requests"]["cpu"]) > 8


def test_image_onnx_writes_the_build_context_and_an_images_file_for_the_lock(tmp_path: Path) -> None:
    from slm_deploy.catalog import load_catalog
    from slm_deploy.launcher import foundry
    from slm_deploy.onnx_builds import load_onnx_server

    root = _project(tmp_path / "project", _config())
    out = run_cli("image", "onnx", "cpu", "--project", str(root), "--out", str(tmp_path / "ctx"))
    assert out.returncode == 0, out.stderr
    files = sorted(str(p.relative_to(tmp_path / "ctx")) for p in (tmp_path / "ctx").rglob("*") if p.is_file())
    assert files == ["images.yaml", "phi4cpu/Dockerfile", "phi4cpu/onnx/foundry_launcher.py", "phi4cpu/onnx/requirements.txt"]
    context = tmp_path / "ctx" / "phi4cpu"
    base = load_catalog().images[load_onnx_server().base_image]
    digest = _lock_with_image().images[f"{base.repository}:{base.tag}"].digest
    assert f"FROM {base.repository}:{base.tag}@{digest} AS server" in (context / "Dockerfile").read_text()
    assert "USER 10001:10001" in (context / "Dockerfile").read_text()
    assert (context / "onnx" / "requirements.txt").read_text() == load_onnx_server().requirements_text()
    assert (context / "onnx" / "foundry_launcher.py").read_text() == Path(foundry.__file__).read_text()
    # What `slm-deploy lock --images` reads: the model's image, as the stack names it.
    (image,) = locking.load_images_file(tmp_path / "ctx" / "images.yaml")
    assert f"{image.repository}:{image.tag}" == IMAGE
    # Review item 5: the wheels are x86_64 only; the build instructions say so wherever they are written.
    amd64 = "docker buildx build --platform linux/amd64"
    assert amd64 in (tmp_path / "ctx" / "images.yaml").read_text()
    assert amd64 in (ROOT / "examples" / "stack-images.yaml").read_text()
    assert amd64 in (ROOT / "docs" / "onnx-runtime.md").read_text()
    again = run_cli("image", "onnx", "cpu", "--project", str(root), "--out", str(tmp_path / "ctx"))
    assert again.returncode == 2 and again.stderr.startswith(f"error: {tmp_path / 'ctx'}: exists and is not an empty folder")


def test_image_onnx_refuses_a_stack_without_an_onnx_model(tmp_path: Path) -> None:
    config = _config()
    del config["slm-deploy:models"][2], config["slm-deploy:cpuPools"]
    root = _project(tmp_path / "project", config)
    out = run_cli("image", "onnx", "cpu", "--project", str(root), "--out", str(tmp_path / "ctx"))
    assert (
        out.returncode == 2
        and out.stderr == "error: Pulumi.cpu.yaml: slm-deploy:models: no model on runtime onnx: nothing to build\n"
    )
    assert not (tmp_path / "ctx").exists()


def test_the_staging_example_serves_an_onnx_model_from_the_example_lock() -> None:
    """The shipped example: Pulumi.staging.yaml's phi4cpu runs examples/stack-images.yaml's image,
    pinned by the packaged (example) lock, as `python -m tests.example_lock` writes it."""
    digest = locking.load(locking.PACKAGED_LOCK).images[IMAGE].digest
    (image,) = locking.load_images_file(ROOT / "examples" / "stack-images.yaml")
    assert f"{image.repository}:{image.tag}" == IMAGE
    result = run_preview("staging", ROOT)
    pod = _manifest(result, "Deployment", "phi4cpu")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{IMAGE}@{digest}" and pod["nodeSelector"] == {"slm.dev/pool": "cpu"}


@pytest.mark.tools
def test_image_onnx_then_lock_images_pins_the_server_for_the_preview(tmp_path: Path) -> None:
    """The documented flow, against a registry on loopback holding a stand-in of every image (the
    example lock's mirror): `image onnx` writes images.yaml, `lock --images` resolves it with the
    catalog's images into the project's lock, and the preview runs the server by that digest."""
    from slm_deploy.supply.registry import mirror_path
    from tests.example_lock import start_mirror

    root = _project(tmp_path / "project", _config())
    (root / locking.LOCK_NAME).unlink()  # the user's own lock, written by `slm-deploy lock` below
    assert run_cli("image", "onnx", "cpu", "--project", str(root), "--out", str(tmp_path / "ctx")).returncode == 0
    (tmp_path / "mirror").mkdir()
    mirror = start_mirror(tmp_path / "mirror")
    try:
        # The user's build: another image than the example lock's stand-in under the same tag.
        repository, tag = IMAGE.rsplit(":", 1)
        pushed = mirror.push(mirror_path(mirror.host, repository).split("/", 1)[1], tag, ("amd64",), label="my build")
        lock_args = ["--lock", str(root / locking.LOCK_NAME), "--images", str(tmp_path / "ctx" / "images.yaml")]
        locked = run_cli("lock", *lock_args, "--mirror", mirror.host)
    finally:
        mirror.stop()
    assert locked.returncode == 0, locked.stderr
    digest = locking.load(root / locking.LOCK_NAME).images[IMAGE].digest
    assert digest == pushed["digest"] != locking.load(locking.PACKAGED_LOCK).images[IMAGE].digest
    pod = _manifest(run_preview("cpu", root), "Deployment", "phi4cpu")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{IMAGE}@{digest}"


def test_the_kubelet_identity_may_pull_the_onnx_image_before_the_server_starts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Review item 1: nodes pull as the kubelet identity; cluster.acrIds gives it AcrPull on the
    registry, and the server and its fetch Job wait for that assignment (else ErrImagePull 401)."""
    result = _preview(tmp_path_factory)
    facts = load_aks_facts()
    (grant,) = [r for r in result.resources if r.type == "azure-native:authorization:RoleAssignment" and "acrpull" in r.name]
    assert grant.inputs["roleDefinitionId"].endswith("/" + facts.roles["acr_pull"].id)
    assert grant.inputs["scope"].endswith("/Microsoft.ContainerRegistry/registries/example")
    assert grant.inputs["principalType"] == "ServicePrincipal"
    assert any(d.endswith("ManagedCluster::slm-cpu-aks") for d in grant.dependencies)  # principal: its kubelet identity
    stack = from_preview(result)
    for kind, name in (("Deployment", "phi4cpu"), ("Job", "phi4cpu-fetch")):
        (workload,) = [r for r in stack.manifests(kind) if r.inputs["metadata"]["name"].startswith(name)]
        assert grant.urn in stack.waits_for(workload)


def test_without_acr_ids_the_simulator_names_the_missing_pull_path(tmp_path: Path) -> None:
    config = _config()
    del config["slm-deploy:cluster"]["acrIds"]
    findings = simulate(from_preview(run_preview("cpu", _project(tmp_path, config))))
    assert {(f.rule, f.resource.split(" ")[0]) for f in findings} == {("SLM-SIM-017", "Deployment"), ("SLM-SIM-017", "Job")}
    assert "example.azurecr.io" in findings[0].message


def test_an_acr_id_that_is_not_a_registry_resource_id_is_refused(tmp_path: Path) -> None:
    config = _config()
    config["slm-deploy:cluster"]["acrIds"] = ["example.azurecr.io"]
    assert "slm-deploy:cluster.acrIds" in _refusal(tmp_path, config)


def test_the_cpu_server_replaces_one_replica_at_a_time_without_a_surge_pod(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Review item 2: one server fills a cpu node and the pool holds maxReplicas nodes; a surge pod
    would stay Pending (the rollout never ends)."""
    result = _preview(tmp_path_factory)
    strategy = _manifest(result, "Deployment", "phi4cpu")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert _manifest(result, "Deployment", "phi4mini")["spec"]["strategy"] == {"type": "Recreate"}
    assert simulate(from_preview(result)) == []


def test_the_cpu_server_leaves_room_for_akss_daemonsets_and_its_fetch_job(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Review item 3: the server's request is a D8ds_v5 node's allocatable (7820m) less AKS's
    DaemonSets (catalog allowance) less the fetch Job's 500m, not 8 - 1 = 7 CPUs: both pods and the
    DaemonSets fit one node, and the simulator, which subtracts the same allowance, agrees."""
    result = _preview(tmp_path_factory)
    facts = load_aks_facts()
    assert 0 < facts.daemonset_allowance.cpu_millicores < 1000 and facts.daemonset_allowance.memory_mib > 0
    server = _manifest(result, "Deployment", "phi4cpu")["spec"]["template"]["spec"]["containers"][0]
    job = _manifest(result, "Job", "phi4cpu-fetch")["spec"]["template"]["spec"]["containers"][0]
    room = 7820 - facts.daemonset_allowance.cpu_millicores
    server_cpu = float(server["resources"]["requests"]["cpu"]) * 1000
    assert server_cpu == (room - 500) // 100 * 100 and job["resources"]["requests"]["cpu"] == "500m"
    assert server_cpu + 500 <= room
    assert simulate(from_preview(result)) == []


def test_a_cpu_server_requesting_the_whole_node_leaves_its_fetch_job_pending(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.test_simulator import is_manifest, mutate

    def whole_node(r: Any) -> Any:
        r.inputs["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "7"  # the old cpus - 1
        return r

    broken = mutate(from_preview(_preview(tmp_path_factory)), is_manifest("Deployment", "phi4cpu"), whole_node)
    findings = simulate(broken)
    assert [(f.rule, f.resource.split(" ")[0]) for f in findings] == [("SLM-SIM-001", "Job")]


def test_the_cpu_hpa_scales_up_on_sustained_load_and_keeps_a_replica_half_an_hour(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Review item 4: a new CPU replica costs a node and a model load; the HPA's behavior (from
    aks.yaml) waits 2 minutes before scaling up and 30 before scaling down, and the simulator's
    idle/burst/sustained/idle trace still reaches the maximum and comes back."""
    from slm_deploy.simulator.autoscaling import scalers
    from slm_deploy.simulator.autoscaling import simulate as trace_of

    result = _preview(tmp_path_factory)
    facts = load_aks_facts()
    behavior = _manifest(result, "HorizontalPodAutoscaler", "phi4cpu")["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 1800
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] > 0
    assert (
        behavior["scaleDown"]["stabilizationWindowSeconds"]
        == facts.autoscaling.hpa_server_behavior.scale_down_stabilization_seconds
    )
    (hpa,) = [s for s in scalers(from_preview(result), facts) if "phi4cpu" in s.resource.inputs["metadata"]["name"]]
    trace = trace_of(hpa, facts)
    burst = [(t, r) for phase, t, _, r, _ in trace if phase == "burst"]
    assert burst[0][1] == 1 and max(r for _, r in burst) == 2  # not on the first sample, but within the burst
    idle = [(t, r) for phase, t, _, r, _ in trace if phase == "idle" and t > 600]
    assert idle[len(idle) // 2][1] == 2 and idle[-1][1] == 1  # still 2 after 15 idle minutes, 1 at the end
    assert not [f for f in simulate(from_preview(result)) if f.rule == "SLM-SIM-008"]


def test_the_cpu_limit_is_the_nodes_vcpus_and_liveness_tolerates_a_busy_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Review items 6 and 7: twice a 6.7-CPU request would be 13.4 CPUs on an 8-vCPU node; and
    Foundry Local answers /status late while a request keeps every core busy."""
    container = _manifest(_preview(tmp_path_factory), "Deployment", "phi4cpu")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "8"
    assert float(container["resources"]["requests"]["cpu"]) <= 8
    liveness = container["livenessProbe"]
    assert (liveness["timeoutSeconds"], liveness["failureThreshold"]) == (10, 6)


def test_the_gateway_opens_a_new_connection_per_request_to_llama_cpp_only() -> None:
    """llama-server closes its connection after each streamed reply (tests/test_engines_live.py,
    check_connection_reuse); Foundry Local keeps its own (tests/test_foundry_live.py). The staging
    gateway keeps its routes' connections alive, the onnx one included; of the edge boxes only the
    llama.cpp box's gateway keeps none, and every API route reads request bodies first."""
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet
    from slm_deploy.gateway import REQUEST_BUFFERS

    (config,) = [m for m in run_preview("staging", ROOT).manifests() if m["kind"] == "ConfigMap" and "Caddyfile" in m["data"]]
    blocks = [b.split("\n\t}")[0] for b in config["data"]["Caddyfile"].split("reverse_proxy ")[1:]]
    routes = [b for b in blocks if b.startswith("{$SLM_UPSTREAM_")]
    assert any(b.startswith("{$SLM_UPSTREAM_PHI4CPU") for b in routes) and len(routes) > 1
    assert not any("keepalive off" in b for b in routes)
    assert all(f"request_buffers {REQUEST_BUFFERS}" in b for b in routes)
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    for bundle in build_fleet(fleet, fleet.boxes):
        caddyfile = bundle.files["gateway/Caddyfile"].decode()
        assert ("keepalive off" in caddyfile) == (bundle.box.id == "clinic-0007"), bundle.box.id
