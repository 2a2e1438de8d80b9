"""The review of issue 11: each way the first real `pulumi up` of the shipped stacks would have
failed, as a test on what the program declares (offline preview) or what the config refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.environment import plan_environment
from slm_deploy.errors import InputError
from slm_deploy.preview import CapturedResource, PreviewResult, run_preview
from tests.conftest import ROOT, run_cli

_CACHE: dict[str, PreviewResult] = {}


def preview(stack: str) -> PreviewResult:
    if stack not in _CACHE:
        _CACHE[stack] = run_preview(stack, ROOT)
    return _CACHE[stack]


def stack_config(stack: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in data["config"].items() if k.startswith("slm-deploy:")}


def preview_config(tmp_path: Path, name: str, config: dict[str, Any]) -> PreviewResult:
    data = {"config": {"azure-native:location": "westeurope", **{f"slm-deploy:{k}": v for k, v in config.items()}}}
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(data))
    return run_preview(name, tmp_path)


def of_type(result: PreviewResult, type_: str) -> list[CapturedResource]:
    return [r for r in result.resources if r.type == type_]


def one(result: PreviewResult, type_: str, name: str) -> CapturedResource:
    found = [r for r in result.resources if r.type == type_ and r.name == name]
    assert len(found) == 1, (type_, name, [r.name for r in of_type(result, type_)])
    return found[0]


def waits_for(result: PreviewResult, resource: CapturedResource) -> set[str]:
    """Everything the engine creates before `resource`: its dependencies, its ancestors'
    dependencies and its provider, transitively (a component stands for its children)."""
    by_urn = result.by_urn()
    children: dict[str, list[str]] = {}
    for r in result.resources:
        if r.parent and r.parent in by_urn and not by_urn[r.parent].custom:
            children.setdefault(r.parent, []).append(r.urn)
    seen: set[str] = set()
    todo = [resource.urn]
    while todo:
        urn = todo.pop()
        r = by_urn.get(urn)
        if r is None:
            continue
        direct = list(r.dependencies) + ([r.provider] if r.provider else [])
        parent = r.parent
        while parent in by_urn:
            direct += list(by_urn[parent].dependencies)
            parent = by_urn[parent].parent
        for dep in direct:
            for d in [dep, *children.get(dep, [])]:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
    return seen


def release_urn(result: PreviewResult, release: str) -> str:
    (r,) = [r for r in of_type(result, "kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == release]
    return r.urn


# 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_1_an_untainted_autoscaled_user_pool_holds_the_platform_workloads(stack: str) -> None:
    pools = of_type(preview(stack), "azure-native:containerservice:AgentPool")
    platform = [p for p in pools if not p.inputs.get("nodeTaints") and p.inputs["mode"] == "User"]
    assert len(platform) == 1, [p.inputs.get("nodeTaints") for p in pools]
    assert platform[0].inputs["enableAutoScaling"] is True and platform[0].inputs["minCount"] >= 1


def test_1_model_servers_do_not_wait_for_the_monitoring_release() -> None:
    result = preview("prod")
    kps = release_urn(result, "kube-prometheus-stack")
    deployment = one(result, "kubernetes:apps/v1:Deployment", "qwen3-8b-deploy")
    assert kps not in waits_for(result, deployment)
    monitor = one(result, "kubernetes:monitoring.coreos.com/v1:PodMonitor", "qwen3-8b-monitor")
    assert kps in waits_for(result, monitor)


# 2 -------------------------------------------------------------------------------------------
def test_2_the_deployer_is_cluster_admin_before_any_kubernetes_call() -> None:
    result = preview("dev")
    admin = [
        r
        for r in of_type(result, "azure-native:authorization:RoleAssignment")
        if r.inputs["roleDefinitionId"].endswith("b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b")
    ]
    assert len(admin) == 1
    assert admin[0].inputs["principalId"] == "00000000-0000-0000-0000-0000000000dd"  # the runner's objectId
    (provider,) = of_type(result, "pulumi:providers:kubernetes")
    assert admin[0].urn in waits_for(result, provider)
    waits = [r for r in result.resources if "PropagationWait" in r.type or r.name.endswith("rbac-propagation")]
    assert waits and waits[0].urn in waits_for(result, provider)


# 3 -------------------------------------------------------------------------------------------
def test_3_prod_api_server_is_reachable_from_the_runner() -> None:
    (cluster,) = of_type(preview("prod"), "azure-native:containerservice:ManagedCluster")
    access = cluster.inputs["apiServerAccessProfile"]
    assert access.get("enablePrivateCluster") is not True
    assert access["authorizedIPRanges"]


def test_3_a_private_api_server_is_refused_with_the_reason() -> None:
    config = stack_config("prod")
    config["cluster"]["apiServer"] = {"private": True}
    with pytest.raises(InputError, match="runner"):
        plan_environment("prod", config)


# 4 -------------------------------------------------------------------------------------------
def test_4_the_ingress_has_a_controller_and_a_certificate_source() -> None:
    result = preview("prod")
    (cluster,) = of_type(result, "azure-native:containerservice:ManagedCluster")
    assert cluster.inputs["ingressProfile"]["webAppRouting"]["enabled"] is True
    (ingress,) = [m for m in result.manifests() if m["kind"] == "Ingress"]
    assert ingress["spec"]["ingressClassName"] == "webapprouting.kubernetes.azure.com"
    uri = ingress["metadata"]["annotations"]["kubernetes.azure.com/tls-cert-keyvault-uri"]
    assert uri.startswith("https://") and "/certificates/" in uri
    assert ingress["spec"]["tls"][0]["secretName"] == f"keyvault-{ingress['metadata']['name']}"


# 5 -------------------------------------------------------------------------------------------
DEVICE_CODE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://c.hcp.westeurope.azmk8s.io:443"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args: [get-token, --environment, AzurePublicCloud, --server-id, 6dae42f8-4368-4678-94ff-3960e28e3630,
             --client-id, 80faf920-1908-4b52-b5ef-a8e7bedfc67a, --tenant-id, t, --login, devicecode]
"""


def test_5_kubeconfig_logs_in_without_a_device_code() -> None:
    from slm_deploy.stacks.azure.kubeconfig import non_interactive_kubeconfig

    text = non_interactive_kubeconfig(DEVICE_CODE_KUBECONFIG, "azurecli")
    exec_ = yaml.safe_load(text)["users"][0]["user"]["exec"]
    assert "devicecode" not in exec_["args"]
    assert exec_["args"][exec_["args"].index("--login") + 1] == "azurecli"
    assert {"name": "AAD_LOGIN_METHOD", "value": "azurecli"} in exec_["env"]
    spn = yaml.safe_load(non_interactive_kubeconfig(DEVICE_CODE_KUBECONFIG, "spn"))["users"][0]["user"]["exec"]
    assert spn["args"][spn["args"].index("--login") + 1] == "spn"


def test_5_the_login_mode_comes_from_config() -> None:
    config = stack_config("dev")
    config["cluster"]["kubeloginMode"] = "devicecode"
    with pytest.raises(InputError, match="kubeloginMode"):
        plan_environment("dev", config)


# 6 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cidr", ["203.0.113.0/24", "198.51.100.7/32", "192.0.2.0/24", "2001:db8::/48"])
def test_6_documentation_ranges_are_refused(cidr: str) -> None:
    config = stack_config("dev")
    config["cluster"]["apiServer"] = {"authorizedIpRanges": [cidr]}
    with pytest.raises(InputError, match="documentation range"):
        plan_environment("dev", config)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_6_shipped_stacks_carry_no_documentation_range(stack: str) -> None:
    (cluster,) = of_type(preview(stack), "azure-native:containerservice:ManagedCluster")
    for cidr in cluster.inputs["apiServerAccessProfile"]["authorizedIPRanges"]:
        assert not cidr.startswith(("203.0.113.", "198.51.100.", "192.0.2."))


# 7 -------------------------------------------------------------------------------------------
def test_7_custom_resources_wait_for_their_crds() -> None:
    result = preview("prod")
    kps = release_urn(result, "kube-prometheus-stack")
    for type_, name in [
        ("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "slm-prod-rules"),
        ("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "slm-prod-gateway-monitor"),
        ("kubernetes:core/v1:ConfigMap", "slm-prod-dashboard-serving"),
    ]:
        assert kps in waits_for(result, one(result, type_, name)), name


def test_7_without_monitoring_no_monitor_is_declared(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["monitoring"] = {"enabled": False}
    config["logs"] = {"enabled": False}  # logs need monitoring (their own test: tests/test_logs.py)
    result = preview_config(tmp_path, "nomon", config)
    kinds = {m["kind"] for m in result.manifests()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


# 8 -------------------------------------------------------------------------------------------
def test_8_staging_uses_a_datacenter_gpu_family() -> None:
    sizes = {p.inputs["vmSize"] for p in of_type(preview("staging"), "azure-native:containerservice:AgentPool")}
    assert "Standard_NV36ads_A10_v5" not in sizes


def test_8_a_grid_family_with_the_operator_driver_is_refused() -> None:
    config = stack_config("staging")
    config["gpuPools"][0]["vmSize"] = "Standard_NV36ads_A10_v5"
    with pytest.raises(InputError, match="GRID"):
        plan_environment("staging", config)


# 9 -------------------------------------------------------------------------------------------
def test_9_ephemeral_os_disks_fit_the_temp_disk() -> None:
    for pool in of_type(preview("prod"), "azure-native:containerservice:AgentPool"):
        if pool.inputs["vmSize"] == "Standard_NC24ads_A100_v4" and pool.inputs.get("osDiskType") == "Ephemeral":
            assert pool.inputs["osDiskSizeGB"] <= 64


def test_9_an_os_disk_larger_than_the_temp_disk_is_refused() -> None:
    config = stack_config("prod")
    config["gpuPools"][0]["osDiskGb"] = 128
    with pytest.raises(InputError, match="temp disk"):
        plan_environment("prod", config)


# 10 ------------------------------------------------------------------------------------------
def test_10_an_upgrade_channel_owns_the_kubernetes_version() -> None:
    (cluster,) = of_type(preview("prod"), "azure-native:containerservice:ManagedCluster")
    assert cluster.inputs["autoUpgradeProfile"]["upgradeChannel"] == "stable"
    assert "kubernetesVersion" in cluster.ignore_changes


# 11 ------------------------------------------------------------------------------------------
def test_11_workloads_wait_for_the_key_vault_chain() -> None:
    result = preview("dev")
    chain = [
        *of_type(result, "azure-native:managedidentity:FederatedIdentityCredential"),
        *[r for r in of_type(result, "azure-native:authorization:RoleAssignment") if "secrets-user" in r.name],
        *of_type(result, "azure-native:keyvault:Secret"),
    ]
    assert len(chain) >= 3
    for name in ("phi4mini-deploy", "slm-dev-gateway-deploy"):
        waited = waits_for(result, one(result, "kubernetes:apps/v1:Deployment", name))
        assert {r.urn for r in chain} <= waited, name


# 12 ------------------------------------------------------------------------------------------
def test_12_vllm_knows_who_it_is_as_uid_10001() -> None:
    (deployment,) = [m for m in preview("dev").manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == "phi4mini"]
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USER"] and env["LOGNAME"]
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/tmp/")


# 13 ------------------------------------------------------------------------------------------
def test_13_no_scrape_targets_that_aks_never_exposes() -> None:
    (release,) = [
        r for r in of_type(preview("dev"), "kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "kube-prometheus-stack"
    ]
    values = release.inputs["values"]
    for key in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[key]["enabled"] is False, key


# 14 ------------------------------------------------------------------------------------------
def test_14_aks_driver_mode_follows_nvidias_aks_guidance(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["gpuDriver"] = "aks"
    result = preview_config(tmp_path, "aksdriver", config)
    (release,) = [r for r in of_type(result, "kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "gpu-operator"]
    values = release.inputs["values"]
    assert "defaultRuntime" not in values.get("operator", {})
    assert values["operator"]["runtimeClass"] == "nvidia-container-runtime"
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    (pool,) = [p for p in of_type(result, "azure-native:containerservice:AgentPool") if p.inputs.get("nodeTaints")]
    assert pool.inputs["gpuProfile"] == {"driver": "Install"}


# 15 ------------------------------------------------------------------------------------------
def test_15_grafana_waits_for_its_secret_and_recreates_on_its_disk() -> None:
    result = preview("dev")
    kps = next(r for r in of_type(result, "kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "kube-prometheus-stack")
    secret = one(result, "kubernetes:core/v1:Secret", "slm-dev-monitoring-grafana-admin")
    assert secret.urn in waits_for(result, kps)
    assert kps.inputs["values"]["grafana"]["deploymentStrategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("stack", ["a-rather-long-stack-name-for-staging", "Team_Prod.v2"])
def test_15_names_are_sanitised_and_fit_azure_limits(tmp_path: Path, stack: str) -> None:
    result = preview_config(tmp_path, stack, stack_config("dev"))
    (vault,) = of_type(result, "azure-native:keyvault:Vault")
    name = vault.inputs["vaultName"]
    assert 3 <= len(name) <= 24 and name[0].isalpha() and "--" not in name
    (cluster,) = of_type(result, "azure-native:containerservice:ManagedCluster")
    prefix = cluster.inputs["dnsPrefix"]
    assert prefix == prefix.lower() and "_" not in prefix and "." not in prefix and len(prefix) <= 54
    for m in result.manifests():
        assert m["metadata"]["name"] == m["metadata"]["name"].lower() and "_" not in m["metadata"]["name"]


def test_15_a_stack_name_that_cannot_be_made_valid_is_refused() -> None:
    with pytest.raises(InputError, match="stack name"):
        plan_environment("___", stack_config("dev"))


@pytest.mark.parametrize("profile", ["MIG5g", "MIG6g"])
def test_15_mig_profiles_aks_rejects_are_refused(profile: str) -> None:
    config = stack_config("prod")
    config["gpuPools"][0]["migProfile"] = profile
    with pytest.raises(InputError, match="migProfile"):
        plan_environment("prod", config)


def test_15_a_pool_without_size_or_model_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["gpuPools"] = [*config["gpuPools"], {"name": "spare", "minCount": 0, "maxCount": 1}]
    with pytest.raises(InputError, match="vmSize"):
        plan_environment("dev", config)


# 16 ------------------------------------------------------------------------------------------
def test_16_preview_prints_what_the_runner_needs() -> None:
    result = run_cli("preview", "dev")
    assert result.returncode == 0, result.stderr
    assert "Role Based Access Control Administrator" in result.stdout
    assert "kubelogin" in result.stdout and "quota" in result.stdout.lower()


def test_4_an_existing_cluster_names_its_own_ingress_class() -> None:
    config = stack_config("staging")
    config["cluster"] = {"mode": "existing", "kubeconfig": "~/.kube/config"}
    config.pop("gpuPools")
    config["ingress"] = {"enabled": True, "host": "llm.internal"}
    with pytest.raises(InputError, match="className"):
        plan_environment("onprem", config)
    config["ingress"]["className"] = "nginx"
    assert plan_environment("onprem", config).spec.ingress.class_name == "nginx"


def test_2_admin_groups_come_from_config_and_must_be_object_ids(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["cluster"]["adminGroupObjectIds"] = ["platform-admins"]
    with pytest.raises(InputError, match="adminGroupObjectIds"):
        plan_environment("dev", config)
    group = "11111111-2222-3333-4444-555555555555"
    config["cluster"]["adminGroupObjectIds"] = [group]
    (cluster,) = of_type(preview_config(tmp_path, "admins", config), "azure-native:containerservice:ManagedCluster")
    assert cluster.inputs["aadProfile"]["adminGroupObjectIDs"] == [group]


def test_a_wide_range_holding_a_documentation_range_is_not_called_one() -> None:
    """10.0.0.0/8 plus 198.51.0.0/16 hold no documentation range themselves; 198.51.100.0/24 is one."""
    from slm_deploy.catalog.platform import load_aks_facts

    facts = load_aks_facts()
    assert facts.documentation_range("198.51.0.0/16") is None
    assert facts.documentation_range("198.51.100.0/25") == "198.51.100.0/24"
