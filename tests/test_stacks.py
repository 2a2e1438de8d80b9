"""The Pulumi program under mocks: each stack previews, its manifests validate, and the
components carry the hardening and sizing the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.environment import plan_environment
from slm_deploy.k8s_validation import validate_manifest
from slm_deploy.preview import REDACTED, PreviewResult, run_preview
from tests.conftest import ROOT, run_cli, schema_dir

STACKS = ("dev", "staging", "prod")
_CACHE: dict[str, PreviewResult] = {}


def echo_mocks() -> Any:
    """Pulumi mocks that give every resource its inputs back as its state, and every call nothing."""
    import pulumi

    class EchoMocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            return args.name, dict(args.inputs)

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
            return {}, []

    return EchoMocks()


def preview(stack: str) -> PreviewResult:
    if stack not in _CACHE:
        _CACHE[stack] = run_preview(stack, ROOT)
    return _CACHE[stack]


def resources(stack: str, type_: str) -> list[Any]:
    return [r for r in preview(stack).resources if r.type == type_]


def manifest(stack: str, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in preview(stack).manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


@pytest.mark.tools
@pytest.mark.parametrize("stack", STACKS)
def test_every_manifest_validates_strictly_for_two_kubernetes_versions(stack: str) -> None:
    schemas = schema_dir()
    manifests = preview(stack).manifests()
    assert len(manifests) > 15
    kinds = {m["kind"] for m in manifests}
    assert {"ScaledObject", "ServiceMonitor", "PodMonitor", "SecretProviderClass", "PrometheusRule"} <= kinds
    for m in manifests:
        assert validate_manifest(m, ("1.31.0", "1.33.0"), schemas) == [], (m["kind"], m["metadata"]["name"])


@pytest.mark.tools
def test_validation_can_fail() -> None:
    """A misspelled field in a rendered manifest is caught, for built-in and custom kinds."""
    schemas = schema_dir()
    deployment = json.loads(json.dumps(manifest("dev", "Deployment", "phi4mini")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    assert validate_manifest(deployment, ("1.33.0",), schemas)
    scaled = json.loads(json.dumps(manifest("dev", "ScaledObject", "phi4mini")))
    scaled["spec"]["minReplicaCount"] = "zero"
    assert validate_manifest(scaled, ("1.33.0",), schemas)


def test_pulumi_yaml_validates_against_the_project_schema() -> None:
    from jsonschema.validators import validator_for

    schema = json.loads((schema_dir() / "pulumi" / "project.json").read_text())
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    errors = list(validator_for(schema)(schema).iter_errors(project))
    assert errors == []
    # No `main`: Pulumi runs the project folder's __main__.py, which calls the installed package.
    assert "main" not in project and project["runtime"]["name"] == "python"
    assert "slm_deploy.stacks.entry" in (ROOT / "__main__.py").read_text()
    for key, declaration in project["config"].items():
        assert {"type", "description", "default"} <= set(declaration), key


def test_dev_is_one_small_spot_pool_that_scales_to_zero() -> None:
    (pool,) = [p for p in resources("dev", "azure-native:containerservice:AgentPool") if p.inputs.get("nodeTaints")]
    assert pool.inputs["vmSize"] == "Standard_NC8as_T4_v3"
    assert pool.inputs["minCount"] == 0 and pool.inputs["enableAutoScaling"] is True
    assert pool.inputs["scaleSetPriority"] == "Spot" and pool.inputs["spotMaxPrice"] == -1
    # AKS writes its spot taint into a spot pool; declared too, so a refresh shows no drift (AKS-11)
    assert pool.inputs["nodeTaints"] == [
        "nvidia.com/gpu=present:NoSchedule",
        "kubernetes.azure.com/scalesetpriority=spot:NoSchedule",
    ]
    assert pool.inputs["osDiskType"] == "Ephemeral"
    assert pool.inputs["gpuProfile"] == {"driver": "None"}  # the GPU Operator installs drivers
    assert pool.ignore_changes == ("count",)
    scaled = manifest("dev", "ScaledObject", "phi4mini")
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and "vllm:num_requests_waiting" in trigger["metadata"]["query"]


def test_prod_has_two_models_a_restricted_api_server_and_alerts() -> None:
    (cluster,) = resources("prod", "azure-native:containerservice:ManagedCluster")
    assert cluster.inputs["apiServerAccessProfile"]["enablePrivateCluster"] is False
    assert cluster.inputs["apiServerAccessProfile"]["authorizedIPRanges"]
    servers = {r.name for r in preview("prod").resources if r.type.startswith("slm:k8s:") and "Server" in r.type}
    assert servers == {"phi4mini", "qwen3-8b"}
    assert manifest("prod", "PrometheusRule", "slm-deploy")["spec"]["groups"]
    pools = {p.inputs["vmSize"] for p in resources("prod", "azure-native:containerservice:AgentPool")}
    assert pools == {"Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_D4ds_v5"}


def test_aks_cluster_is_hardened() -> None:
    (cluster,) = resources("staging", "azure-native:containerservice:ManagedCluster")
    i = cluster.inputs
    assert i["disableLocalAccounts"] is True
    assert i["aadProfile"] == {"enableAzureRBAC": True, "managed": True}
    assert i["oidcIssuerProfile"]["enabled"] is True
    assert i["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert i["networkProfile"]["networkPlugin"] == "azure" and i["networkProfile"]["networkPolicy"] == "cilium"
    assert i["apiServerAccessProfile"]["authorizedIPRanges"] == ["1.2.3.4/32"]
    assert i["autoUpgradeProfile"]["upgradeChannel"] == "patch"
    assert i["addonProfiles"]["azureKeyvaultSecretsProvider"]["config"]["enableSecretRotation"] == "true"
    assert i["addonProfiles"]["omsagent"]["enabled"] is True
    assert i["workloadAutoScalerProfile"]["keda"]["enabled"] is True
    (system,) = i["agentPoolProfiles"]
    assert system["mode"] == "System" and system["nodeTaints"] == ["CriticalAddonsOnly=true:NoSchedule"]


def test_key_vault_rbac_purge_protection_and_deny_by_default() -> None:
    (vault,) = resources("dev", "azure-native:keyvault:Vault")
    props = vault.inputs["properties"]
    assert props["enableRbacAuthorization"] is True and props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert props["networkAcls"]["defaultAction"] == "Deny"
    (secret,) = resources("dev", "azure-native:keyvault:Secret")
    assert secret.inputs["properties"]["value"] == REDACTED
    (federation,) = resources("dev", "azure-native:managedidentity:FederatedIdentityCredential")
    assert federation.inputs["subject"] == "system:serviceaccount:slm:slm-serving"
    (role,) = [r for r in resources("dev", "azure-native:authorization:RoleAssignment") if "secrets-user" in r.name]
    assert role.inputs["roleDefinitionId"].endswith("4633458b-17de-408a-b874-0445c86b69e6")


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_stay_secret_end_to_end(stack: str) -> None:
    result = preview(stack)
    assert {"apiKey", "kubeconfig"} <= result.secret_outputs
    text = json.dumps([r.inputs for r in result.resources]) + json.dumps(result.outputs)
    assert "preview-slm-" not in text  # the mocked random values never appear in clear


def test_model_server_is_restricted_and_sized_by_the_plan() -> None:
    env = plan_environment("prod", _structured("prod"))
    plan = next(m.plan for m in env.models if m.spec.name == "qwen3-8b")
    d = manifest("prod", "Deployment", "qwen3-8b")
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(plan.resources.gpu_count) == "2"
    assert container["startupProbe"]["failureThreshold"] == plan.resources.startup_failure_threshold
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["args"][container["args"].index("--max-model-len") + 1] == str(plan.context)
    assert pod["nodeSelector"] == {"slm.dev/pool": "a100x2"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert {v["name"] for v in pod["volumes"]} >= {"models", "tmp", "shm"}
    pvc = manifest("prod", "PersistentVolumeClaim", "qwen3-8b-models")
    assert pvc["spec"]["resources"]["requests"]["storage"] == f"{plan.resources.cache_disk_gib}Gi"
    assert manifest("prod", "Service", "qwen3-8b")["spec"]["type"] == "ClusterIP"
    assert manifest("prod", "PodDisruptionBudget", "qwen3-8b")["spec"]["maxUnavailable"] == 1


def test_namespace_is_restricted_with_default_deny() -> None:
    ns = manifest("dev", "Namespace", "slm")
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    deny = manifest("dev", "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = manifest("dev", "NetworkPolicy", "phi4mini-fetch-egress")
    assert egress["spec"]["podSelector"]["matchLabels"]["slm.dev/role"] == "model-fetch"
    assert manifest("dev", "ServiceAccount", "slm-serving")["automountServiceAccountToken"] is False


def test_ollama_gets_a_cpu_hpa_and_the_gateway_routes_every_model() -> None:
    hpa = manifest("staging", "HorizontalPodAutoscaler", "qwen3-ollama")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    caddyfile = manifest("staging", "ConfigMap", "slm-staging-gateway-config")["data"]["Caddyfile"]
    assert "/phi4mini/v1/chat/completions" in caddyfile and "/qwen3-ollama/v1/models" in caddyfile
    assert 'not header Authorization "Bearer {$SLM_API_KEY}"' in caddyfile


def _structured(stack: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("slm-deploy:")}


def _write_stack(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))
    return tmp_path


def test_existing_cluster_mode_deploys_only_kubernetes(tmp_path: Path) -> None:
    config = {
        "slm-deploy:cluster": {
            "mode": "existing",
            "kubeconfig": "~/.kube/config",
            "context": "lab",
            "storageClass": "nfs-rwx",
            "keda": False,
        },
        "slm-deploy:models": [
            {
                "name": "qwen",
                "pool": "any",
                "model": "qwen3-4b",
                "runtime": "ollama",
                "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
            }
        ],
        "slm-deploy:hfToken": {"secure": "v1:abc"},
    }
    result = run_preview("lab", _write_stack(tmp_path, "lab", config))
    assert not [r for r in result.resources if r.type.startswith("azure-native:")]
    secret = next(m for m in result.manifests() if m["kind"] == "Secret" and m["metadata"]["name"] == "slm-secrets")
    assert set(secret["stringData"]) == {"api_key", "hf_token"}
    assert set(secret["stringData"].values()) == {REDACTED}
    assert not [m for m in result.manifests() if m["kind"] == "SecretProviderClass"]
    provider = next(r for r in result.resources if r.type == "pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "lab"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["slm-deploy:models"][0].update(contxt=4096), "slm-deploy:models[0].contxt: unknown field"),
        (lambda c: c.update({"slm-deploy:gpuPool": []}), "slm-deploy:gpuPool: unknown config key"),
        (lambda c: c["slm-deploy:cluster"].update(apiServer={}), "slm-deploy:cluster.apiServer: list authorizedIpRanges"),
        (lambda c: c["slm-deploy:models"][0].update(pool="a100"), "which gpuPools does not define"),
        (lambda c: c["slm-deploy:models"][0].update(model="qwen3-32b"), "phi4mini does not fit Standard_NC8as_T4_v3"),
    ],
)
def test_a_typo_in_a_stack_file_is_exit_2_with_one_clear_line(tmp_path: Path, mutate: Any, expected: str) -> None:
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    mutate(config)
    root = _write_stack(tmp_path, "typo", config)
    out = run_cli("preview", "typo", "--project-dir", str(root))
    assert out.returncode == 2
    assert out.stderr.startswith("error: Pulumi.typo.yaml: ") and expected in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_preview_cli_writes_manifests_and_reports_errors(tmp_path: Path) -> None:
    out = run_cli("preview", "dev", "--out", str(tmp_path / "m"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "apiKey" in data["secret_outputs"] and data["manifests"]
    assert (tmp_path / "m" / "slm" / "deployment-phi4mini.yaml").is_file()
    missing = run_cli("preview", "qa")
    assert missing.returncode == 2 and missing.stderr.startswith("error: Pulumi.qa.yaml: ")


def test_a_misspelled_component_argument_fails_loudly() -> None:
    from slm_deploy.stacks.azure.pools import GpuNodePool
    from slm_deploy.stacks.k8s.servers import VllmServer

    with pytest.raises(TypeError):
        VllmServer("x", plann=None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        GpuNodePool("x", pool=None, vmsize="Standard_NC4as_T4_v3")  # type: ignore[call-arg]
    from pulumi_kubernetes.core.v1 import ContainerArgs

    with pytest.raises(TypeError):
        ContainerArgs(name="x", imagePullPolicy="Always")  # type: ignore[call-arg]


def test_pulumi_up_reports_a_bad_stack_file_as_one_line_not_a_traceback() -> None:
    """What `pulumi up` runs (stacks/__main__.py -> stacks.entry.main) turns InputError into RunError."""
    import pulumi
    from pulumi.runtime import set_all_config, set_mocks

    from slm_deploy.stackfile import PROJECT, load_stack_file
    from slm_deploy.stacks.entry import main

    config, secrets, _ = load_stack_file("dev", ROOT)
    config["slm-deploy:monitoring"] = json.dumps({"enabled": True, "retention": "forever"})

    set_mocks(echo_mocks(), project=PROJECT, stack="dev", preview=True)
    set_all_config(config, secrets)
    with pytest.raises(pulumi.RunError) as info:
        main()
    assert str(info.value).startswith("Pulumi.dev.yaml: slm-deploy:monitoring.retention: String should match pattern")
    assert "\n" not in str(info.value)


def test_pulumi_up_refuses_the_packaged_example_lock() -> None:
    """Without an images.lock.yaml of its own, a project is pinned by the packaged example lock, whose
    digests exist only on the test mirror: `pulumi up` would deploy pods that can never pull their
    images. The update stops with one line naming `slm-deploy lock`; a dry run (pulumi preview) goes on."""
    import pulumi
    from pulumi.runtime import set_all_config, set_mocks

    from slm_deploy.stackfile import PROJECT, load_stack_file
    from slm_deploy.stacks.entry import main
    from slm_deploy.supply.lock import LOCK_NAME

    assert not (ROOT / LOCK_NAME).exists()  # the repository root is pinned by the packaged example lock
    config, secrets, _ = load_stack_file("dev", ROOT)

    set_mocks(echo_mocks(), project=PROJECT, stack="dev", preview=False)
    set_all_config(config, secrets)
    with pytest.raises(pulumi.RunError) as info:
        main(ROOT)
    assert "example data" in str(info.value) and "slm-deploy lock" in str(info.value) and "\n" not in str(info.value)
    set_mocks(echo_mocks(), project=PROJECT, stack="dev", preview=True)
    set_all_config(config, secrets)
    main(ROOT)  # pulumi preview: a warning, not a failure


def test_a_preview_after_a_program_left_unfinished_in_the_process_is_that_stack_alone() -> None:
    """A `pulumi up` entry point run in this process without waiting for its registrations (as the
    two tests above do, as a tool embedding slm-deploy might) left them on the event loop; the next
    preview finished them into its own run: a dev pool's identity failed inside a prod preview
    (CI, stop 26). The preview starts from a clean runtime."""
    from pulumi.runtime import set_all_config, set_mocks

    from slm_deploy.stackfile import PROJECT, load_stack_file
    from slm_deploy.stacks.entry import main

    config, secrets, _ = load_stack_file("dev", ROOT)

    set_mocks(
        echo_mocks(),  # identities come back as sent (a list), not as ARM's map
        project=PROJECT,
        stack="dev",
        preview=True,
    )
    set_all_config(config, secrets)
    main(ROOT)  # registrations left pending, never awaited
    result = run_preview("prod", ROOT)
    names = {r.name for r in result.resources}
    assert names and not any(name.startswith("slm-dev") for name in names)
    assert {r.name for r in result.resources} == {r.name for r in preview("prod").resources}


def test_the_previews_output_queue_answers_pulumis_calls_as_its_deque_does() -> None:
    """The preview swaps Pulumi's deque of outputs to await for a queue with a constant-time remove
    (slm_deploy/preview_outputs.py); every call Pulumi makes must answer as the deque's does."""
    from collections import deque

    from slm_deploy.preview_outputs import OutputQueue

    def drive(queue: Any) -> list[Any]:
        seen: list[Any] = []
        for item in ("a", "b", "a", "c", "d", "a"):
            queue.append(item)  # Output.__init__; "a" three times, as Output.secret re-wraps a future
        queue.remove("b")  # an output's done-callback
        try:
            queue.remove("b")  # one already taken by wait_for_rpcs: output.py catches ValueError
        except ValueError:
            seen.append("ValueError")
        first = queue.popleft()  # wait_for_rpcs: not done yet, so appended back
        queue.append(first)
        queue.remove("a")  # the oldest "a" left
        seen.append(list(queue))
        seen += [len(queue), bool(queue), list(queue)]
        while len(queue) != 0:
            seen.append(queue.popleft())
        try:
            queue.popleft()
        except IndexError:
            seen.append("IndexError")
        queue.append("e")
        queue.clear()  # mocks.py
        seen.append(len(queue))
        return seen

    assert drive(OutputQueue()) == drive(deque())


def test_preview_ends_without_the_collector_scanning_the_sdk_it_loaded() -> None:
    """`slm-deploy preview prod` loads some 800 Pulumi SDK modules. Python's shutdown collected
    that heap several times while clearing the modules: 1.1-1.4 s of a 4 s preview, after its last
    line was printed (measured 2026-12-07; the time is `make bench`'s figure, never a test's). The
    console script now freezes the heap once every other exit handler has run, so by the time the
    interpreter clears its modules the collector has nothing of it left to scan."""
    probe = (
        "import atexit, gc, sys\n"
        # registered before the console script's own handler, so it runs after it
        "atexit.register(lambda: print('collectable', len(gc.get_objects()), 'frozen', gc.get_freeze_count(), file=sys.stderr))\n"
        "sys.argv = ['slm-deploy', 'preview', 'prod']\n"
        "from slm_deploy.cli import run\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Namespace" in done.stdout  # it previewed
    words = done.stderr.split("collectable ")[-1].split()
    collectable, frozen = int(words[0]), int(words[2])
    assert frozen > 100_000 and collectable < frozen / 100, done.stderr[-500:]
