"""The deployment simulator: zero findings on every shipped stack (and an existing cluster), and
each seeded breakage, one per check, caught with the right rule id."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.preview import PreviewResult, run_preview
from slm_deploy.simulator import SIM_RULES, Finding, Stack, from_preview, simulate
from slm_deploy.simulator.autoscaling import scalers
from slm_deploy.simulator.autoscaling import simulate as run_trace
from slm_deploy.simulator.model import SimResource
from tests.conftest import ROOT, run_cli

_CACHE: dict[str, PreviewResult] = {}


def preview(stack: str) -> PreviewResult:
    if stack not in _CACHE:
        _CACHE[stack] = run_preview(stack, ROOT)
    return _CACHE[stack]


def model(stack: str) -> Stack:
    return from_preview(preview(stack))


def existing_stack(tmp_path: Path) -> Stack:
    data = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    config = data["config"]
    config["slm-deploy:cluster"] = {"mode": "existing", "kubeconfig": "~/.kube/config", "context": "gpu-cluster"}
    config.pop("slm-deploy:gpuPools")
    (tmp_path / "Pulumi.onprem.yaml").write_text(yaml.safe_dump(data))
    return from_preview(run_preview("onprem", tmp_path))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_work_together(stack: str) -> None:
    assert simulate(model(stack)) == []


def test_an_existing_cluster_stack_works_together(tmp_path: Path) -> None:
    stack = existing_stack(tmp_path)
    assert stack.cluster is None and stack.manifests("ScaledObject")
    assert simulate(stack) == []


# Seeded breakage ------------------------------------------------------------------------------


def mutate(stack: Stack, match: Callable[[SimResource], bool], change: Callable[[SimResource], SimResource | None]) -> Stack:
    out = []
    hit = False
    for r in stack.resources:
        if match(r):
            hit = True
            r = change(replace(r, inputs=copy.deepcopy(r.inputs)))
            if r is None:
                continue
        out.append(r)
    assert hit, "the seed matched nothing"
    return Stack(out)


def with_inputs(path: str, value: Any) -> Callable[[SimResource], SimResource]:
    def change(r: SimResource) -> SimResource:
        *head, last = path.split(".")
        target = r.inputs
        for key in head:
            target = target.setdefault(key, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
        return r

    return change


DELETE = object()
CLUSTER = "azure-native:containerservice:ManagedCluster"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"


def is_type(type_: str, name: str | None = None) -> Callable[[SimResource], bool]:
    return lambda r: r.type == type_ and (name is None or r.name == name)


def is_manifest(kind: str, name: str | None = None) -> Callable[[SimResource], bool]:
    return lambda r: (
        r.manifest is not None and r.inputs["kind"] == kind and (name is None or r.inputs["metadata"]["name"] == name)
    )


def release(chart: str) -> Callable[[SimResource], bool]:
    return lambda r: r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == chart


def drop(_: SimResource) -> None:
    return None


def no_dependencies(r: SimResource) -> SimResource:
    return replace(r, dependencies=(), parent=None)


def without_rbac(r: SimResource) -> SimResource:
    return replace(r, dependencies=tuple(d for d in r.dependencies if "RoleAssignment" not in d and "dynamic" not in d))


def threshold(value: str) -> Callable[[SimResource], SimResource]:
    def change(r: SimResource) -> SimResource:
        r.inputs["spec"]["triggers"][0]["metadata"]["threshold"] = value
        return r

    return change


def without_env(name: str) -> Callable[[SimResource], SimResource]:
    def change(r: SimResource) -> SimResource:
        for container in r.inputs["spec"]["template"]["spec"]["containers"]:
            container["env"] = [e for e in container["env"] if e["name"] != name]
        return r

    return change


def first_trigger_only(r: SimResource) -> SimResource:
    r.inputs["spec"]["triggers"] = r.inputs["spec"]["triggers"][:1]
    return r


def old_queue_query(r: SimResource) -> SimResource:
    trigger = r.inputs["spec"]["triggers"][0]["metadata"]
    trigger["query"] = 'sum(vllm:num_requests_waiting{namespace="slm",model_name="x"})'
    trigger["threshold"] = "5"
    return r


SEEDS: dict[str, tuple[str, str, Callable[[Stack], Stack]]] = {
    # scheduling: the item 1 (no untainted pool), and more replicas than the pool holds
    "no platform pool": (
        "prod",
        "SLM-SIM-001",
        lambda s: mutate(s, is_type("azure-native:containerservice:AgentPool", "slm-prod-platform-pool"), drop),
    ),
    "pool too small for the replicas": (
        "prod",
        "SLM-SIM-001",
        lambda s: mutate(
            s, is_type("azure-native:containerservice:AgentPool", "slm-prod-a100x2-pool"), with_inputs("maxCount", 1)
        ),
    ),
    "server without its GPU toleration": (
        "dev",
        "SLM-SIM-001",
        lambda s: mutate(s, is_manifest("Deployment", "phi4mini"), with_inputs("spec.template.spec.tolerations", [])),
    ),
    "kube-prometheus-stack pinned to a nodeSelector no pool has": (
        "dev",
        "SLM-SIM-001",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.grafana.nodeSelector", {"pool": "nowhere"})),
    ),
    "GPU daemon sets without the spot toleration": (
        "dev",
        "SLM-SIM-002",
        lambda s: mutate(
            s,
            release("gpu-operator"),
            with_inputs("values.daemonsets.tolerations", [{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        ),
    ),
    # ordering: item 7 (a CR that does not wait for its CRD) and item 4 (a class nothing installs)
    "PrometheusRule races its CRD": ("prod", "SLM-SIM-003", lambda s: mutate(s, is_manifest("PrometheusRule"), no_dependencies)),
    "ServiceMonitor without monitoring": ("prod", "SLM-SIM-004", lambda s: mutate(s, release("kube-prometheus-stack"), drop)),
    "Ingress class nginx": (
        "prod",
        "SLM-SIM-004",
        lambda s: mutate(s, is_manifest("Ingress"), with_inputs("spec.ingressClassName", "nginx")),
    ),
    "TLS secret nothing creates": (
        "prod",
        "SLM-SIM-004",
        lambda s: mutate(s, is_manifest("Ingress"), with_inputs("metadata.annotations", DELETE)),
    ),
    "storage class AKS lacks": (
        "dev",
        "SLM-SIM-004",
        lambda s: mutate(s, is_manifest("PersistentVolumeClaim"), with_inputs("spec.storageClassName", "nfs-client")),
    ),
    # reachability and identity: items 3, 6, 2, 11
    "private API server": (
        "prod",
        "SLM-SIM-005",
        lambda s: mutate(
            s,
            is_type("azure-native:containerservice:ManagedCluster"),
            with_inputs("apiServerAccessProfile.enablePrivateCluster", True),
        ),
    ),
    "documentation range": (
        "dev",
        "SLM-SIM-005",
        lambda s: mutate(
            s,
            is_type("azure-native:containerservice:ManagedCluster"),
            with_inputs("apiServerAccessProfile.authorizedIPRanges", ["203.0.113.0/24"]),
        ),
    ),
    "no role for the deployer": (
        "dev",
        "SLM-SIM-006",
        lambda s: mutate(s, lambda r: r.type == "azure-native:authorization:RoleAssignment" and "deployer" in r.name, drop),
    ),
    "provider does not wait for the role": (
        "dev",
        "SLM-SIM-006",
        lambda s: mutate(s, is_type("pulumi:providers:kubernetes"), without_rbac),
    ),
    "no federated credential": (
        "dev",
        "SLM-SIM-007",
        lambda s: mutate(s, is_type("azure-native:managedidentity:FederatedIdentityCredential"), drop),
    ),
    "workloads do not wait for the vault chain": (
        "dev",
        "SLM-SIM-007",
        lambda s: mutate(
            s, lambda r: r.type.startswith("slm:k8s:") and "Server" in r.type, lambda r: replace(r, dependencies=())
        ),
    ),
    # the user's onnx image on example.azurecr.io (review of onnx on Kubernetes, item 1)
    "onnx image without AcrPull for the kubelet identity": (
        "staging",
        "SLM-SIM-017",
        lambda s: mutate(s, lambda r: r.type == "azure-native:authorization:RoleAssignment" and "acrpull" in r.name, drop),
    ),
    "onnx server starts before its AcrPull assignment": (
        "staging",
        "SLM-SIM-017",
        lambda s: mutate(
            s,
            lambda r: r.type == "slm:k8s:OnnxServer",
            lambda r: replace(r, dependencies=tuple(d for d in r.dependencies if "acrpull" not in d)),
        ),
    ),
    # a surge pod on a CPU pool whose nodes each hold one server (review of onnx on Kubernetes, item 2)
    "onnx server rolling out with the default surge": (
        "staging",
        "SLM-SIM-018",
        lambda s: mutate(s, is_manifest("Deployment", "phi4cpu"), with_inputs("spec.strategy", {"type": "RollingUpdate"})),
    ),
    # autoscaling: the queue-only query this issue replaced
    "queue-only KEDA query": (
        "prod",
        "SLM-SIM-008",
        lambda s: mutate(s, is_manifest("ScaledObject", "phi4mini"), old_queue_query),
    ),
    "scale to zero with nothing to wake it": (
        "dev",
        "SLM-SIM-008",
        lambda s: mutate(s, is_manifest("ScaledObject", "phi4mini"), lambda r: first_trigger_only(r)),
    ),
    "threshold no burst reaches": (
        "prod",
        "SLM-SIM-008",
        lambda s: mutate(s, is_manifest("ScaledObject", "qwen3-8b"), threshold("1000")),
    ),
    # platform facts: items 8, 9, 15, 14
    "GRID size with the operator driver": (
        "staging",
        "SLM-SIM-009",
        lambda s: mutate(
            s,
            is_type("azure-native:containerservice:AgentPool", "slm-staging-a10-pool"),
            with_inputs("vmSize", "Standard_NV36ads_A10_v5"),
        ),
    ),
    "128 GB ephemeral OS disk on NC24ads A100": (
        "prod",
        "SLM-SIM-010",
        lambda s: mutate(
            s, is_type("azure-native:containerservice:AgentPool", "slm-prod-a100-pool"), with_inputs("osDiskSizeGB", 128)
        ),
    ),
    "Key Vault name over 24 characters": (
        "dev",
        "SLM-SIM-011",
        lambda s: mutate(s, is_type("azure-native:keyvault:Vault"), with_inputs("vaultName", "slm-a-rather-long-stack-name-kv")),
    ),
    "dnsPrefix from an unsanitised stack name": (
        "dev",
        "SLM-SIM-011",
        lambda s: mutate(
            s, is_type("azure-native:containerservice:ManagedCluster"), with_inputs("dnsPrefix", "slm-Team_Prod.v2")
        ),
    ),
    "kube-prometheus-stack scraping kube-proxy on AKS": (
        "dev",
        "SLM-SIM-012",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.kubeProxy", DELETE)),
    ),
    "stable channel with a managed kubernetesVersion": (
        "prod",
        "SLM-SIM-013",
        lambda s: mutate(
            s,
            is_type("azure-native:containerservice:ManagedCluster"),
            lambda r: replace(r, ignore_changes=tuple(i for i in r.ignore_changes if i != "kubernetesVersion")),
        ),
    ),
    "vLLM as uid 10001 without USER": (
        "dev",
        "SLM-SIM-014",
        lambda s: mutate(s, is_manifest("Deployment", "phi4mini"), without_env("USER")),
    ),
    "Grafana on its disk with RollingUpdate": (
        "dev",
        "SLM-SIM-001",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.grafana.deploymentStrategy", DELETE)),
    ),
    "release before its Grafana admin Secret": (
        "dev",
        "SLM-SIM-003",
        lambda s: mutate(
            s,
            release("kube-prometheus-stack"),
            lambda r: replace(r, dependencies=tuple(d for d in r.dependencies if "Secret" not in d)),
        ),
    ),
    "Grafana by tag only": (
        "dev",
        "SLM-SIM-015",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.grafana.image.sha", DELETE)),
    ),
    "kube-state-metrics digest without its algorithm (the chart prints tag@sha)": (
        "dev",
        "SLM-SIM-015",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.kube-state-metrics.image.sha", "0" * 64)),
    ),
    "GPU Operator image with a bare digest for version (its template prints image:version)": (
        "dev",
        "SLM-SIM-015",
        lambda s: mutate(s, release("gpu-operator"), with_inputs("values.operator.version", "sha256:" + "0" * 64)),
    ),
    "Grafana's init-chown container back on (busybox as root, CHOWN)": (
        "dev",
        "SLM-SIM-016",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.grafana.initChownData.enabled", True)),
    ),
    "Grafana's init-chown container by the chart default": (
        "prod",
        "SLM-SIM-016",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.grafana.initChownData", DELETE)),
    ),
    # refresh drift (AKS-11): the spot pool without the taint AKS writes into it
    "spot pool without AKS's spot taint": (
        "dev",
        "SLM-SIM-030",
        lambda s: mutate(
            s,
            lambda r: r.type == "azure-native:containerservice:AgentPool" and r.inputs.get("scaleSetPriority") == "Spot",
            with_inputs("nodeTaints", ["nvidia.com/gpu=present:NoSchedule"]),
        ),
    ),
    "operator.defaultRuntime": (
        "dev",
        "SLM-SIM-012",
        lambda s: mutate(s, release("gpu-operator"), with_inputs("values.operator.defaultRuntime", "containerd")),
    ),
    # review of 2026-12-06: time (AKS-02, AKS-14, AKS-15)
    "Kubernetes 1.33 after its end of life (July 2026)": (
        "dev",
        "SLM-SIM-019",
        lambda s: mutate(s, is_type(CLUSTER), with_inputs("kubernetesVersion", "1.33")),
    ),
    "LTS plan on the Standard tier": (
        "prod",
        "SLM-SIM-019",
        lambda s: mutate(s, is_type(CLUSTER), with_inputs("supportPlan", "AKSLongTermSupport")),
    ),
    "Container Insights on the retired legacy auth": (
        "staging",
        "SLM-SIM-019",
        lambda s: mutate(s, is_type(CLUSTER), with_inputs("addonProfiles.omsagent.config.useAADAuth", DELETE)),
    ),
    # identity and reach (AKS-03, AKS-04, AKS-05, AKS-08)
    "system-assigned control-plane identity on our own subnet": (
        "dev",
        "SLM-SIM-020",
        lambda s: mutate(s, is_type(CLUSTER), with_inputs("identity", {"type": "SystemAssigned"})),
    ),
    "no Network Contributor on the node subnet": (
        "staging",
        "SLM-SIM-020",
        lambda s: mutate(s, lambda r: r.type == ASSIGNMENT and r.name.endswith("control-plane-subnet"), drop),
    ),
    "service principal deployer without principalType": (
        "prod",
        "SLM-SIM-020",
        lambda s: mutate(
            mutate(s, is_type(CLUSTER), with_inputs("tags.slm-deploy-deployer-type", "ServicePrincipal")),
            lambda r: r.type == ASSIGNMENT and r.name.endswith("deployer-admin"),
            with_inputs("principalType", DELETE),
        ),
    ),
    "destroy deletes secrets through the vault's firewall": (
        "dev",
        "SLM-SIM-020",
        lambda s: mutate(
            s, is_type("azure-native:keyvault:Secret"), lambda r: replace(r, deleted_with=None, retain_on_delete=False)
        ),
    ),
    "GitHub-hosted runner behind authorized ranges": (
        "dev",
        "SLM-SIM-005",
        lambda s: mutate(s, is_type(CLUSTER), with_inputs("tags.slm-deploy-runner", "github-hosted")),
    ),
    # chart upgrades that leave their CRDs behind (AKS-10)
    "kube-prometheus-stack without its CRD upgrade job": (
        "dev",
        "SLM-SIM-012",
        lambda s: mutate(s, release("kube-prometheus-stack"), with_inputs("values.crds", DELETE)),
    ),
    "gpu-operator upgrade with OpenAPI validation": (
        "dev",
        "SLM-SIM-012",
        lambda s: mutate(s, release("gpu-operator"), with_inputs("disableOpenapiValidation", DELETE)),
    ),
    # placeholders (AKS-06), judged without SLM_EXAMPLE_STACKS
    "example registry and all-zero subscription": (
        "staging",
        "SLM-SIM-021",
        lambda s: s,
    ),
}


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_each_seeded_breakage_is_caught_with_its_rule(seed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stack_name, rule, breakage = SEEDS[seed]
    stack = model(stack_name)  # rendered as the example it is
    if rule == "SLM-SIM-021":  # its example values, judged as a user's stack would be
        monkeypatch.delenv("SLM_EXAMPLE_STACKS", raising=False)
    findings = simulate(breakage(stack))
    assert findings, seed
    assert {f.rule for f in findings} == {rule}, findings


def test_every_rule_has_a_seed() -> None:
    # rules over two states (check "transitions") are seeded in tests/test_transitions.py
    assert {rule for _, rule, _ in SEEDS.values()} == {r.id for r in SIM_RULES if r.check != "transitions"}


def test_a_finding_names_the_pod_the_pools_and_the_reason() -> None:
    stack = SEEDS["no platform pool"][2](model("prod"))
    gateway = [f for f in simulate(stack) if f.resource == "Deployment slm/slm-prod-gateway"]
    assert gateway == [
        Finding(
            "SLM-SIM-001",
            "Deployment slm/slm-prod-gateway",
            "fits no node pool (a100: taint nvidia.com/gpu=present:NoSchedule not tolerated; "
            "a100x2: taint nvidia.com/gpu=present:NoSchedule not tolerated; "
            "system: taint CriticalAddonsOnly=true:NoSchedule not tolerated)",
        )
    ]


def test_autoscaling_follows_a_burst_and_comes_back() -> None:
    facts = load_aks_facts()
    (scaler,) = [s for s in scalers(model("prod"), facts) if s.resource.inputs["metadata"]["name"] == "phi4mini"]
    trace = run_trace(scaler, facts)
    replicas = {phase: [r for p, _, _, r, _ in trace if p == phase] for phase in ("burst", "sustained")}
    assert max(replicas["burst"]) == scaler.max_replicas == 4
    assert trace[0][3] == 1 and trace[-1][3] == 1  # min 1, back to it after the load
    assert len(set(replicas["sustained"][len(replicas["sustained"]) // 2 :])) == 1  # steady, no flapping


def test_review_reports_simulator_findings_for_a_broken_stack(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    data["config"]["slm-deploy:gpuPools"][0]["maxCount"] = 1  # two models x two replicas on one GPU node
    (tmp_path / "Pulumi.cramped.yaml").write_text(yaml.safe_dump(data))
    result = run_cli("review", "--stack", "cramped", "--project", str(tmp_path), "--tool", "slm", "--json")
    assert result.returncode == 1, result.stderr
    assert "SLM-SIM-001" in result.stdout


def test_several_breakages_at_once_are_each_reported() -> None:
    """prod as it shipped before issue 11 in three respects: private API server, a 128 GB
    ephemeral disk on NC24ads A100 v4, no untainted pool."""
    stack = model("prod")
    for _, _, breakage in (
        SEEDS["private API server"],
        SEEDS["128 GB ephemeral OS disk on NC24ads A100"],
        SEEDS["no platform pool"],
    ):
        stack = breakage(stack)
    assert {f.rule for f in simulate(stack)} == {"SLM-SIM-001", "SLM-SIM-005", "SLM-SIM-010"}


def test_dev_wakes_from_zero_through_the_gateway() -> None:
    facts = load_aks_facts()
    (scaler,) = scalers(model("dev"), facts)
    assert {t.metric for t in scaler.triggers} == {"inflight", "gateway"}
    trace = run_trace(scaler, facts)
    assert trace[0][3] == 0 and max(r for p, _, _, r, _ in trace if p == "burst") == 1 and trace[-1][3] == 0


def test_scale_to_zero_among_several_models_is_refused() -> None:
    from slm_deploy.environment import plan_environment
    from slm_deploy.errors import InputError

    config = {
        k.split(":", 1)[1]: v
        for k, v in yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"].items()
        if k.startswith("slm-deploy:")
    }
    config["models"][0]["autoscaling"]["minReplicas"] = 0
    with pytest.raises(InputError, match="gateway's only one"):
        plan_environment("prod", config)


def test_a_minor_within_90_days_of_its_end_of_life_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = model("dev")  # Kubernetes 1.36: end of life 2027-06-30 (catalog/aks.yaml)
    monkeypatch.setenv("SLM_TODAY", "2027-03-31")
    assert simulate(stack) == []
    monkeypatch.setenv("SLM_TODAY", "2027-04-01")
    assert simulate(stack) == [
        Finding(
            "SLM-SIM-019",
            "azure-native:containerservice:ManagedCluster::slm-dev-aks",
            "Kubernetes 1.36 reaches its end of life on 2027-06-30 (90 days): AKS then force-upgrades the cluster and "
            "the pinned version becomes a downgrade; move to a newer minor",
        )
    ]


def test_placeholders_name_the_resource_and_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = model("staging")
    monkeypatch.delenv("SLM_EXAMPLE_STACKS", raising=False)
    found = {f.resource: f.message for f in simulate(stack)}
    assert found["azure-native:containerservice:ManagedCluster::slm-staging-aks"] == (
        "apiServerAccessProfile.authorizedIPRanges[0]: 1.2.3.4/32 is an example value"
    )
    assert found["Deployment slm/phi4cpu"].endswith("example.azurecr.io is an example value")
