"""`slm-deploy preflight STACK` against a fake Azure Resource Manager on 127.0.0.1 (tests/fake_arm.py),
through the real Azure SDK clients (issue 23 item 6, AKS-16)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("azure.mgmt.compute", reason="the [azure] extra is not installed")

from slm_deploy import preflight
from slm_deploy.cli import main
from tests.conftest import ROOT, need_binary
from tests.fake_arm import SUBSCRIPTION, Arm, FakeCredential, role, serve, sku, usage

A100 = "standardNCADSA100v4Family"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


def _region(stack: str, root: Path = ROOT) -> tuple[str, dict[str, int]]:
    target = preflight.load_target(stack, root, SUBSCRIPTION)
    sizes = {n.vm_size for n in preflight.pool_needs(target.env)}
    return target.location, {s: _VCPUS[s] for s in sizes}


_VCPUS = {
    "Standard_D4ds_v5": 4,
    "Standard_D8ds_v5": 8,
    "Standard_D2ds_v5": 2,
    "Standard_D16ds_v5": 16,
    "Standard_NC8as_T4_v3": 8,
    "Standard_NC8ads_A10_v4": 8,
    "Standard_NC24ads_A100_v4": 24,
    "Standard_NC48ads_A100_v4": 48,
}
_FAMILY = {
    "Standard_NC8as_T4_v3": "standardNCASv3_T4Family",
    "Standard_NC8ads_A10_v4": "StandardNCADSA10v4Family",
    "Standard_NC24ads_A100_v4": A100,
    "Standard_NC48ads_A100_v4": A100,
}


def healthy(stack: str, free: int = 10_000, root: Path = ROOT) -> Arm:
    """A subscription where the stack (of the project in `root`) fits."""
    location, sizes = _region(stack, root)
    families = {_FAMILY.get(s, "standardDDSv5Family") for s in sizes}
    version = str(preflight.load_target(stack, root, SUBSCRIPTION).env.spec.cluster.kubernetes_version)
    return Arm(
        skus=[sku(s, _FAMILY.get(s, "standardDDSv5Family"), v, location) for s, v in sorted(sizes.items())]
        + [sku("Standard_A1", "standardA0_A7Family", 1, location)],
        usages=[usage(f, 0, free) for f in sorted(families)] + [usage("cores", 0, free), usage("lowPriorityCores", 0, free)],
        versions=[
            {
                "version": version,
                "isPreview": False,
                "capabilities": {"supportPlan": ["KubernetesOfficial"]},
                "patchVersions": {f"{version}.3": {"upgrades": []}},
            },
            {"version": "9.99", "isPreview": True, "capabilities": {"supportPlan": ["KubernetesOfficial"]}, "patchVersions": {}},
        ],
        roles=[role(CONTRIBUTOR), role(OWNER)],
    )


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Any]:
    need_binary("openssl")

    def start(arm: Arm) -> Any:
        return serve(arm, tmp_path)

    yield start


def run(stack: str, arm: Arm) -> list[preflight.Check]:
    target = preflight.load_target(stack, ROOT, SUBSCRIPTION)
    return preflight.run_preflight(target, FakeCredential(), base_url=arm.url, verify=arm.ca)


def problems(checks: list[preflight.Check]) -> list[str]:
    return [c.line() for c in checks if not c.ok]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_a_subscription_with_room_passes_and_nothing_is_written(stack: str, fake: Any) -> None:
    with fake(healthy(stack)) as arm:
        checks = run(stack, arm)
    assert problems(checks) == []
    assert {c.subject.split()[0] for c in checks} >= {"VM", "quota", "Kubernetes", "deployer"}
    assert {method for method, _ in arm.requests} == {"GET"}


def test_two_a100_sizes_share_one_family_quota(fake: Any) -> None:
    """AKS-16: prod's a100 (NC24ads) and a100x2 (NC48ads) pools both draw on the NCADS_A100_v4 family;
    a limit that holds either pool alone, surge included, fails for the two together."""
    target = preflight.load_target("prod", ROOT, SUBSCRIPTION)
    surge = int(preflight.facts()["upgrade_surge_nodes"])
    per_pool = [_VCPUS[n.vm_size] * (n.nodes + surge) for n in preflight.pool_needs(target.env) if _FAMILY.get(n.vm_size) == A100]
    assert len(per_pool) == 2
    arm = healthy("prod")
    arm.usages = [u if u["name"]["value"] != A100 else usage(A100, 0, max(per_pool)) for u in arm.usages]
    with fake(arm) as arm:
        checks = run("prod", arm)
    (line,) = problems(checks)
    assert line.startswith(f"PROBLEM  quota {A100}: needs {sum(per_pool)} vCPUs") and f"{max(per_pool)} free" in line


def test_the_regional_total_and_restricted_sizes_and_versions_and_roles(fake: Any) -> None:
    arm = healthy("staging")
    location, _ = _region("staging")
    arm.usages = [u if u["name"]["value"] != "cores" else usage("cores", 95, 100) for u in arm.usages]
    arm.skus = [
        sku(s["name"], s["family"], 8, location, restricted="NotAvailableForSubscription") if "A10" in s["name"] else s
        for s in arm.skus
    ]
    arm.versions = [v for v in arm.versions if v["isPreview"]]
    arm.roles = [role(CONTRIBUTOR)]
    with fake(arm) as arm:
        found = problems(run("staging", arm))
    assert any(line.startswith("PROBLEM  quota cores: needs") and "5 free (95 used of 100)" in line for line in found), found
    assert any(
        "VM size Standard_NC8ads_A10_v4: restricted in" in line and "NotAvailableForSubscription" in line for line in found
    )
    assert any(line.startswith("PROBLEM  Kubernetes ") and "not offered in" in line for line in found), found
    assert any("needs Owner or Role Based Access Control Administrator or User Access Administrator" in line for line in found)


def test_spot_pools_count_against_the_spot_quota(fake: Any) -> None:
    arm = healthy("dev")
    arm.usages = [u if u["name"]["value"] != "lowPriorityCores" else usage("lowPriorityCores", 0, 3) for u in arm.usages]
    with fake(arm) as arm:
        (line,) = problems(run("dev", arm))
    assert line.startswith("PROBLEM  quota lowPriorityCores: needs 16 vCPUs")  # NC8as_T4_v3 x (maxCount 1 + surge 1)


def test_the_command_prints_each_check_and_exits_1_on_a_problem(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "default_credential", FakeCredential)
    arm = healthy("dev")
    arm.roles = []
    with fake(arm) as arm:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca)
        args = ["preflight", "dev", "--project", str(ROOT), "--subscription", SUBSCRIPTION, "--arm-endpoint", arm.url]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "PROBLEM  deployer roles: needs Owner or Contributor" in result.output
    assert result.output.splitlines()[-1].endswith("2 problem(s)")


def test_errors_are_one_line(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "default_credential", FakeCredential)
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    missing = CliRunner().invoke(main, ["preflight", "dev", "--project", str(ROOT)])
    assert missing.exit_code == 2 and missing.output.strip().count("\n") == 0
    assert "--subscription: required" in missing.output
    with fake(healthy("dev")) as arm:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca)
        other = "00000000-1111-2222-3333-444444444444"
        args = ["preflight", "dev", "--project", str(ROOT), "--subscription", other, "--arm-endpoint", arm.url]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: Azure Resource Manager: subscription {other}: ") and result.output.count("\n") == 1


def test_without_credentials_stderr_is_one_error_line(tmp_path: Path) -> None:
    """azure-identity logs a 13-line warning listing every credential it tried before it raises;
    the command's answer is its one `error:` line. No Azure variables, no az CLI session (an empty
    HOME), and managed identity pointed at a closed port on 127.0.0.1 instead of the IMDS address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SLM_EXAMPLE_STACKS": "1",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{closed}",
    }
    args = [
        "preflight",
        "dev",
        "--project",
        str(ROOT),
        "--subscription",
        SUBSCRIPTION,
        "--arm-endpoint",
        f"https://127.0.0.1:{closed}",
    ]
    result = subprocess.run([sys.executable, "-m", "slm_deploy.cli", *args], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: Azure Resource Manager: credentials: ")
