"""Transitions, not only states (issue 23 item 4): each example stack against variants (another
model, another GPU size, logs off and on, a chart upgrade, a Kubernetes upgrade, destroy), refresh
drift (AKS-11, AKS-12), and `slm-deploy preview STACK --from PREVIOUS`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.preview import previous_state
from slm_deploy.simulator import Stack, simulate
from slm_deploy.simulator.model import SimResource
from slm_deploy.simulator.transitions import Change, compare, transition_findings
from tests.conftest import ROOT, run_cli
from tests.test_simulator import model

STACKS = ("dev", "staging", "prod")
OTHER_SIZE = {
    "Standard_NC8as_T4_v3": "Standard_NC16as_T4_v3",
    "Standard_NC8ads_A10_v4": "Standard_NC16ads_A10_v4",
    "Standard_NC24ads_A100_v4": "Standard_NC48ads_A100_v4",
}
_VARIANTS: dict[tuple[str, str], tuple[Stack, set[str]]] = {}


def _config(stack: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()))


def _variant(stack: str, name: str, change: Callable[[dict[str, Any]], None], tmp: Path) -> Stack:
    """The shipped stack file with `change` applied, rendered as the same stack."""
    if (stack, name) not in _VARIANTS:
        data = _config(stack)
        change(data["config"])
        path = tmp / f"{stack}-{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        _VARIANTS[(stack, name)] = previous_state(path, stack, ROOT)
    return _VARIANTS[(stack, name)][0]


def _actions(changes: list[Change], action: str) -> list[Change]:
    return [c for c in changes if c.action == action]


@pytest.mark.parametrize("stack", STACKS)
def test_another_gpu_size_replaces_the_pool(stack: str, tmp_path: Path) -> None:
    def bigger(config: dict[str, Any]) -> None:
        pool = config["slm-deploy:gpuPools"][0]
        pool["vmSize"] = OTHER_SIZE[pool["vmSize"]]

    new = _variant(stack, "gpu", bigger, tmp_path)
    changes = compare(model(stack), new)
    replaced = [c for c in _actions(changes, "replace") if "AgentPool" in c.resource]
    assert len(replaced) == 1 and "vmSize" in replaced[0].detail, changes
    assert not _actions(changes, "refused")


def _claims(stack: Stack) -> dict[str, int]:
    from slm_deploy.simulator.model import memory_mib

    return {
        r.urn: memory_mib(r.inputs["spec"]["resources"]["requests"]["storage"])
        for r in stack.of_type("kubernetes:core/v1:PersistentVolumeClaim")
    }


@pytest.mark.parametrize("stack", STACKS)
def test_another_model_shrinking_the_weights_volume_is_refused(stack: str, tmp_path: Path) -> None:
    """Both directions of a model change: a smaller weights volume is an update Kubernetes refuses
    (claims only grow), a larger one is an in-place expansion; nothing is replaced or lost."""

    def other(config: dict[str, Any]) -> None:
        config["slm-deploy:models"][0]["model"] = "qwen3-1.7b"

    shipped, variant = model(stack), _variant(stack, "model", other, tmp_path)
    for old, new in ((shipped, variant), (variant, shipped)):
        changes = compare(old, new)
        before, after = _claims(old), _claims(new)
        shrinking = {urn for urn in before if urn in after and after[urn] < before[urn]}
        refused = [c for c in _actions(changes, "refused") if "a claim cannot shrink" in c.detail]
        assert len(refused) == len(shrinking), changes
        assert not [c for c in changes if c.action in ("replace", "delete") and c.severity <= 1], changes
        assert any(c.action in ("update", "replace") for c in changes)


@pytest.mark.parametrize("stack", STACKS)
def test_logs_off_and_on_again(stack: str, tmp_path: Path) -> None:
    def off(config: dict[str, Any]) -> None:
        config["slm-deploy:logs"] = {"enabled": False}

    shipped = model(stack)
    without = _variant(stack, "nologs", off, tmp_path)
    going = compare(shipped, without, {r.urn for r in shipped.resources if r.urn in _retained(stack)})
    deleted = _actions(going, "delete")
    if (_config(stack)["config"].get("slm-deploy:logs") or {}).get("enabled"):
        assert any("loki" in c.resource for c in deleted), going
    assert not [c for c in going if c.severity <= 1 and "logs" in c.resource], going  # the logs namespace is retained
    coming = compare(without, shipped)
    assert not _actions(coming, "refused") and not [c for c in coming if c.severity <= 1], coming


def _retained(stack: str) -> set[str]:
    from tests.test_simulator import preview

    return {r.urn for r in preview(stack).resources if r.retain_on_delete}


def _bump(stack: Stack, chart: str, values: dict[str, Any] | None) -> Stack:
    out = []
    for r in stack.resources:
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == chart:
            inputs = copy.deepcopy(r.inputs)
            inputs["version"] = f"{inputs['version']}-next"
            if values is not None:
                inputs["values"] = {**(inputs.get("values") or {}), **values}
            r = replace(r, inputs=inputs)
        out.append(r)
    return Stack(out)


@pytest.mark.parametrize("stack", STACKS)
def test_a_chart_upgrade_names_the_crds_helm_skips(stack: str) -> None:
    old = model(stack)
    upgraded = compare(old, _bump(old, "kube-prometheus-stack", {"crds": {"upgradeJob": {"enabled": False}}}))
    (crds,) = _actions(upgraded, "crds")
    assert "kube-prometheus-stack" in crds.detail and "crds.upgradeJob.enabled" in crds.detail
    with_job = compare(old, _bump(old, "kube-prometheus-stack", {"crds": {"upgradeJob": {"enabled": True}}}))
    assert not _actions(with_job, "crds")


def test_a_gpu_operator_upgrade_needs_openapi_validation_off() -> None:
    """AKS-10's second half: the chart's CRD upgrade hook runs only if Helm skips OpenAPI validation."""
    old = model("dev")
    bumped = Stack(
        [
            replace(r, inputs={**r.inputs, "disableOpenapiValidation": False}) if r.inputs.get("chart") == "gpu-operator" else r
            for r in _bump(old, "gpu-operator", None).resources
        ]
    )
    (crds,) = _actions(compare(old, bumped), "crds")
    assert "set disableOpenapiValidation on the release" in crds.detail
    off = Stack(
        [
            replace(r, inputs={**r.inputs, "disableOpenapiValidation": True}) if r.inputs.get("chart") == "gpu-operator" else r
            for r in bumped.resources
        ]
    )
    assert not _actions(compare(old, off), "crds")


def _at_version(stack: Stack, chart: str, version: str) -> Stack:
    return Stack(
        [replace(r, inputs={**r.inputs, "version": version}) if r.inputs.get("chart") == chart else r for r in stack.resources]
    )


def test_a_gpu_operator_upgrade_that_skips_a_major_is_unsupported() -> None:
    """Review of the 26.7.0 move: NVIDIA supports upgrades only within a major or to the next one
    (life-cycle-policy.rst), so a cluster running 25.3.4 (what the last release shipped) must step
    through 25.10 and 26.3; the next train is fine."""
    shipped = model("dev")
    (release,) = [r for r in shipped.releases() if r.inputs.get("chart") == "gpu-operator"]
    assert release.inputs["version"] == "v26.7.0"
    going = compare(_at_version(shipped, "gpu-operator", "v25.3.4"), shipped)
    (unsupported,) = _actions(going, "unsupported")
    assert "v25.3.4 -> v26.7.0" in unsupported.detail and "upgrade through v25.10.1, v26.3.3 first" in unsupported.detail
    assert "life-cycle-policy.rst" in unsupported.detail
    old = _at_version(shipped, "gpu-operator", "v25.3.4")
    assert any(f.message.startswith("unsupported: chart gpu-operator") for f in transition_findings(old, shipped))
    assert not _actions(compare(_at_version(shipped, "gpu-operator", "v26.3.3"), shipped), "unsupported")
    assert not _actions(compare(_at_version(shipped, "gpu-operator", "v26.7.0"), shipped), "unsupported")


def _minor(version: str, step: int) -> str:
    major, minor = version.split(".")[:2]
    return f"{major}.{int(minor) + step}"


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_upgrades_go_one_minor_at_a_time(stack: str, tmp_path: Path) -> None:
    # From the newest minor whose +2 the AKS calendar still knows (the shipped stacks sit on the
    # newest supported minors, so +2 of theirs is not creatable at all).
    version = "1.35"
    (cluster,) = model(stack).of_type("azure-native:containerservice:ManagedCluster")
    channel_owns_version = "kubernetesVersion" in cluster.ignore_changes

    def base(config: dict[str, Any]) -> None:
        config["slm-deploy:cluster"]["kubernetesVersion"] = version

    start = _variant(stack, "k8s-base", base, tmp_path)
    for step in (1, 2):

        def upgrade(config: dict[str, Any], step: int = step) -> None:
            config["slm-deploy:cluster"]["kubernetesVersion"] = _minor(version, step)

        changes = compare(start, _variant(stack, f"k8s+{step}", upgrade, tmp_path))
        refused = [c for c in _actions(changes, "refused") if "kubernetesVersion" in c.detail]
        assert bool(refused) == (step == 2 and not channel_owns_version), changes
        back = [c for c in _actions(compare(_variant(stack, f"k8s+{step}", upgrade, tmp_path), start), "refused")]
        assert bool(back) == (not channel_owns_version), "a downgrade is refused"


@pytest.mark.parametrize("stack", STACKS)
def test_destroy_names_what_holds_data(stack: str) -> None:
    changes = compare(model(stack), Stack([]), _retained(stack))
    lost = {c.resource for c in changes if c.severity == 1}
    assert "azure-native:containerservice:ManagedCluster::" + f"slm-{stack}-aks" in lost
    assert any(r.startswith("azure-native:keyvault:Vault::") for r in lost)
    assert any(r.startswith("PersistentVolumeClaim ") for r in lost)
    assert not any(r == "Namespace logs" for r in lost)  # retained on delete
    findings = transition_findings(model(stack), Stack([]), _retained(stack))
    assert findings and {f.rule for f in findings} == {"SLM-SIM-031"}


# Refresh drift ---------------------------------------------------------------------------------


def _edit(stack: Stack, match: Callable[[SimResource], bool], change: Callable[[SimResource], SimResource]) -> Stack:
    hits = [r for r in stack.resources if match(r)]
    assert hits
    return Stack([change(replace(r, inputs=copy.deepcopy(r.inputs))) if match(r) else r for r in stack.resources])


def test_spot_pool_declares_what_aks_writes() -> None:
    """AKS-11: dev's spot t4 pool carries AKS's spot taint and label itself, so a refresh shows no drift."""
    stack = model("dev")
    (pool,) = [r for r in stack.of_type("azure-native:containerservice:AgentPool") if r.inputs.get("scaleSetPriority") == "Spot"]
    assert "kubernetes.azure.com/scalesetpriority=spot:NoSchedule" in pool.inputs["nodeTaints"]
    assert pool.inputs["nodeLabels"]["kubernetes.azure.com/scalesetpriority"] == "spot"

    def undeclared(r: SimResource) -> SimResource:
        r.inputs["nodeTaints"] = [t for t in r.inputs["nodeTaints"] if "scalesetpriority" not in t]
        r.inputs["nodeLabels"].pop("kubernetes.azure.com/scalesetpriority")
        return r

    broken = _edit(stack, lambda r: r.urn == pool.urn, undeclared)
    drift = {f.message.split(" as ")[0] for f in simulate(broken) if f.rule == "SLM-SIM-030"}
    assert drift == {"a refresh reads back nodeTaints", "a refresh reads back nodeLabels"}


@pytest.mark.parametrize("stack", STACKS)
def test_the_cluster_ignores_the_pools_a_refresh_reads_back(stack: str) -> None:
    """AKS-12: a GET of the cluster lists every pool in agentPoolProfiles."""
    (cluster,) = model(stack).of_type("azure-native:containerservice:ManagedCluster")
    assert "agentPoolProfiles" in cluster.ignore_changes
    broken = _edit(
        model(stack),
        lambda r: r.urn == cluster.urn,
        lambda r: replace(r, ignore_changes=tuple(i for i in r.ignore_changes if i != "agentPoolProfiles")),
    )
    assert [f.resource for f in simulate(broken) if f.rule == "SLM-SIM-030"] == [f"{cluster.type}::{cluster.name}"]


# The command -----------------------------------------------------------------------------------


def test_preview_from_a_previous_out_folder_and_a_stack_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_cli("preview", "dev", "--out", str(out), "--project", str(ROOT))
    assert first.returncode == 0, first.stderr
    same = run_cli("preview", "dev", "--from", str(out), "--project", str(ROOT))
    assert same.returncode == 0, same.stderr
    assert f"from {out}: no replacement, deletion or refusal" in same.stdout

    data = _config("dev")
    data["config"]["slm-deploy:cluster"]["kubernetesVersion"] = _minor(
        str(data["config"]["slm-deploy:cluster"]["kubernetesVersion"]), 1
    )
    newer = tmp_path / "Pulumi.dev.newer.yaml"
    newer.write_text(yaml.safe_dump(data))
    down = run_cli("preview", "dev", "--from", str(newer), "--project", str(ROOT))
    assert down.returncode == 1, down.stderr
    assert "refused  azure-native:containerservice:ManagedCluster::slm-dev-aks: kubernetesVersion" in down.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "--from: no such file or folder"),
        (lambda p: p, "--from: not a folder written by `slm-deploy preview --out`"),
        (lambda p: (p / "bad.yaml", (p / "bad.yaml").write_text("config: 3\n"))[0], "config: expected a mapping"),
    ],
)
def test_preview_from_errors_are_one_line(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    result = run_cli("preview", "dev", "--from", str(make(tmp_path)), "--project", str(ROOT), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "o").exists()  # nothing half written
