"""Outside review B4: the deployer's cluster-admin role assignment took its principal from
getClientConfig, i.e. whoever runs the program. The PR preview runs as the preview identity, so
every preview diff showed `deployer-admin ~principalId` (and the propagation wait after it). The
deployer's object id now comes from the stack config; CI must set it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy import preview as preview_module
from slm_deploy.environment import plan_environment
from slm_deploy.preview import PreviewResult, run_preview
from tests.conftest import ROOT

ADMIN_ROLE = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"  # AKS RBAC Cluster Admin (catalog/aks.yaml)
DEPLOYER = "11111111-2222-3333-4444-555555555555"


def dev_config() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in data["config"].items() if k.startswith("slm-deploy:")}


def preview_as(object_id: str, config: dict[str, Any], folder: Path, monkeypatch: pytest.MonkeyPatch) -> PreviewResult:
    """The offline preview with getClientConfig answering for the principal `object_id`."""
    make_mocks = preview_module._mocks

    def mocks() -> Any:
        inner = make_mocks()
        call = inner.call

        def as_principal(args: Any) -> Any:
            outputs, failures = call(args)
            if args.token == "azure-native:authorization:getClientConfig":
                outputs = {**outputs, "objectId": object_id}
            return outputs, failures

        inner.call = as_principal
        return inner

    monkeypatch.setattr(preview_module, "_mocks", mocks)
    folder.mkdir(exist_ok=True)
    data = {"config": {"azure-native:location": "westeurope", **{f"slm-deploy:{k}": v for k, v in config.items()}}}
    (folder / "Pulumi.dev.yaml").write_text(yaml.safe_dump(data))
    return run_preview("dev", folder)


def admin_principals(result: PreviewResult) -> list[str]:
    return [
        r.inputs["principalId"]
        for r in result.resources
        if r.type == "azure-native:authorization:RoleAssignment" and r.inputs["roleDefinitionId"].endswith(ADMIN_ROLE)
    ]


def test_a_preview_by_another_identity_keeps_the_deployers_role_assignment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dev_config()
    config["cluster"] = {**config["cluster"], "deployerObjectId": DEPLOYER}
    deploy = preview_as("aaaaaaaa-0000-0000-0000-00000000d001", config, tmp_path / "up", monkeypatch)
    pr = preview_as("bbbbbbbb-0000-0000-0000-0000000000f2", config, tmp_path / "pr", monkeypatch)
    assert admin_principals(deploy) == admin_principals(pr) == [DEPLOYER]


def test_without_the_setting_a_workstation_deploys_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = "cccccccc-0000-0000-0000-0000000000e3"
    assert admin_principals(preview_as(me, dev_config(), tmp_path / "ws", monkeypatch)) == [me]


def test_ci_refuses_to_run_without_the_deployers_object_id() -> None:
    """In GitHub Actions the program runs as the preview identity on pull requests: without the
    setting, the deployer would be whoever runs it. One clear line names the key to set."""
    from slm_deploy.stacks.entry import ci_problem

    env = plan_environment("dev", dev_config()).spec
    problem = ci_problem(env, {"GITHUB_ACTIONS": "true"}, "Pulumi.dev.yaml")
    assert problem is not None and "slm-deploy:cluster.deployerObjectId" in problem and "\n" not in problem
    assert ci_problem(env, {}, "Pulumi.dev.yaml") is None  # a workstation: the principal running it
    config = dev_config()
    config["cluster"] = {**config["cluster"], "deployerObjectId": DEPLOYER}
    assert ci_problem(plan_environment("dev", config).spec, {"GITHUB_ACTIONS": "true"}, "Pulumi.dev.yaml") is None


def test_a_bad_object_id_is_one_clear_error() -> None:
    from slm_deploy.errors import InputError

    config = dev_config()
    config["cluster"] = {**config["cluster"], "deployerObjectId": "my-app"}
    with pytest.raises(InputError, match="deployerObjectId"):
        plan_environment("dev", config)


# Review of 2026-12-06, AKS-04: pulumi-azure-native sends principalType User when it is unset, and
# ARM refuses that for the service principal CI deploys as (UnmatchedPrincipalType).
def admin_types(result: PreviewResult) -> list[str | None]:
    return [
        r.inputs.get("principalType")
        for r in result.resources
        if r.type == "azure-native:authorization:RoleAssignment" and r.inputs["roleDefinitionId"].endswith(ADMIN_ROLE)
    ]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [({}, "ServicePrincipal"), ({"deployerPrincipalType": "User"}, "User"), ({"deployerPrincipalType": "Group"}, "Group")],
)
def test_a_configured_deployer_is_assigned_as_its_principal_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: dict[str, str], expected: str
) -> None:
    config = dev_config()
    config["cluster"] = {**config["cluster"], "deployerObjectId": DEPLOYER, **setting}
    assert admin_types(preview_as(DEPLOYER, config, tmp_path / "ci", monkeypatch)) == [expected]


def test_a_workstation_deployer_is_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = "cccccccc-0000-0000-0000-0000000000e3"
    assert admin_types(preview_as(me, dev_config(), tmp_path / "ws", monkeypatch)) == ["User"]


def test_a_principal_type_without_an_object_id_is_refused() -> None:
    from slm_deploy.errors import InputError

    config = dev_config()
    config["cluster"] = {**config["cluster"], "deployerPrincipalType": "ServicePrincipal"}
    with pytest.raises(InputError, match="deployerPrincipalType describes deployerObjectId"):
        plan_environment("dev", config)
