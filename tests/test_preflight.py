"""`slm-deploy preflight STACK` against a fake Azure Resource Manager on 127.0.0.1 (tests/fake_arm.py),
through the real Azure SDK clients (issue 23 item 6, AKS-16)."""

from __future__ import annotations

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
from tests.fake_arm import SUBSCRIPTION, Arm, FakeCredential, agent_pool, cluster, role, serve, sku, usage
from tests.test_gateway_live import free_port

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
    per_pool = [
        _VCPUS[n.vm_size] * (n.nodes + _surge(n)) for n in preflight.pool_needs(target.env) if _FAMILY.get(n.vm_size) == A100
    ]
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
    assert line.startswith("PROBLEM  quota lowPriorityCores: needs 8 vCPUs")  # NC8as_T4_v3 x (maxCount 1, GPU pools no surge)


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
    closed = free_port()
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


def _surge(need: Any) -> int:
    """Nodes a pool adds while upgrading: GPU pools none (maxSurge 0), others AKS's default."""
    return int(preflight.facts()["upgrade_surge_nodes"]) if need.surge is None else int(need.surge)


def _a100_need(stack: str) -> int:
    target = preflight.load_target(stack, ROOT, SUBSCRIPTION)
    return sum(
        _VCPUS[n.vm_size] * (n.nodes + _surge(n)) for n in preflight.pool_needs(target.env) if _FAMILY.get(n.vm_size) == A100
    )


def _with_cluster(arm: Arm, stack: str, dns_prefix: str, version: str = "") -> Arm:
    """`arm` with one AKS cluster in the stack's region running one a100 node (24 vCPUs, counted in
    the A100 family's usage) plus the system and platform pools."""
    target = preflight.load_target(stack, ROOT, SUBSCRIPTION)
    spec = target.env.spec.cluster
    found = cluster(
        f"{dns_prefix}-aks1b2c3d4e",
        f"{dns_prefix}-rg5f6a7b8c",
        target.location,
        dns_prefix,
        version or f"{spec.kubernetes_version}.3",
    )
    arm.clusters = [found]
    arm.pools = {
        found["name"]: [
            agent_pool(found, "system", spec.system_vm_size, spec.system_node_count),
            agent_pool(found, "platform", spec.platform_vm_size, spec.platform_min_count),
            agent_pool(found, "a100", "Standard_NC24ads_A100_v4", 1),
        ]
    }
    return arm


def _quota_exactly_the_need_with_one_a100_node_running(stack: str) -> Arm:
    need = _a100_need(stack)
    arm = healthy(stack)
    arm.usages = [u if u["name"]["value"] != A100 else usage(A100, 24, need) for u in arm.usages]
    return arm


def test_the_stacks_own_running_nodes_are_not_counted_twice(fake: Any) -> None:
    """From the second `up` on, the stack's own nodes are in the subscription's usage already: a quota
    sized exactly to the stack passes while its own a100 node runs, and fails when another cluster's
    node uses the same 24 vCPUs."""
    need = _a100_need("prod")
    base = preflight.load_target("prod", ROOT, SUBSCRIPTION).env.base_name
    with fake(_with_cluster(_quota_exactly_the_need_with_one_a100_node_running("prod"), "prod", base)) as arm:
        checks = run("prod", arm)
    assert problems(checks) == []
    (line,) = [c.line() for c in checks if c.subject == f"quota {A100}"]
    assert f"needs {need} vCPUs" in line and f"{need} free" in line and "24 of them by this stack's cluster" in line, line
    assert {method for method, _ in arm.requests} == {"GET"}

    with fake(_with_cluster(_quota_exactly_the_need_with_one_a100_node_running("prod"), "prod", "other-team")) as arm:
        (line,) = problems(run("prod", arm))
    assert line.startswith(f"PROBLEM  quota {A100}: needs {need} vCPUs") and f"{need - 24} free (24 used of {need})" in line


def test_stopped_pools_and_spot_pools_count_where_azure_counts_them(fake: Any) -> None:
    """A stopped pool's nodes are deallocated (not in the usage); a spot pool's nodes use the spot
    total, not the family's: neither is added back to the A100 family."""
    base = preflight.load_target("prod", ROOT, SUBSCRIPTION).env.base_name
    arm = _with_cluster(_quota_exactly_the_need_with_one_a100_node_running("prod"), "prod", base)
    (owner,) = arm.clusters
    arm.pools[owner["name"]][-1] = agent_pool(owner, "a100", "Standard_NC24ads_A100_v4", 1, running=False)
    with fake(arm) as arm:
        (line,) = problems(run("prod", arm))
    assert line.startswith(f"PROBLEM  quota {A100}:")


def test_an_existing_cluster_upgraded_past_the_pinned_minor_is_a_warning(fake: Any) -> None:
    """The pinned minor left the region, but the stack's cluster runs a newer one already (auto-upgrade):
    a warning naming what runs, not a failure. Another cluster's version changes nothing."""
    target = preflight.load_target("prod", ROOT, SUBSCRIPTION)
    pinned = str(target.env.spec.cluster.kubernetes_version)
    major, minor = (int(x) for x in pinned.split(".")[:2])
    newer = f"{major}.{minor + 1}"
    arm = healthy("prod")
    arm.versions = [
        {**v, "version": newer, "patchVersions": {f"{newer}.2": {"upgrades": []}}} for v in arm.versions if not v["isPreview"]
    ]
    with fake(_with_cluster(arm, "prod", target.env.base_name, version=f"{newer}.2")) as arm:
        checks = run("prod", arm)
    assert problems(checks) == []
    (line,) = [c.line() for c in checks if c.subject.startswith("Kubernetes")]
    assert line.startswith(f"warning  Kubernetes {pinned}: not offered in") and f"runs {newer}.2" in line, line

    with fake(_with_cluster(healthy("prod"), "prod", "other-team", version=f"{newer}.2")) as other:
        other.versions = arm.versions
        (line,) = problems(run("prod", other))
    assert line.startswith(f"PROBLEM  Kubernetes {pinned}: not offered in")


def test_two_clusters_with_the_stacks_dns_prefix_are_not_guessed_between(fake: Any) -> None:
    base = preflight.load_target("prod", ROOT, SUBSCRIPTION).env.base_name
    arm = _with_cluster(_quota_exactly_the_need_with_one_a100_node_running("prod"), "prod", base)
    (owner,) = arm.clusters
    twin = {**owner, "id": owner["id"].replace("rg5f6a7b8c", "rg0d9e8f7a"), "name": f"{base}-aks9f8e7d6c"}
    arm.clusters.append(twin)
    arm.pools[twin["name"]] = arm.pools[owner["name"]]
    with fake(arm) as arm:
        checks = run("prod", arm)
    (line,) = problems(checks)
    assert line.startswith(f"PROBLEM  quota {A100}:")
    assert any(
        c.line().startswith(f"warning  existing cluster: 2 clusters in {owner['location']} have the DNS prefix {base}")
        for c in checks
    )


def test_the_stacks_own_spot_node_is_added_back_to_the_spot_total(fake: Any) -> None:
    """dev's spot t4 pool needs 8 spot vCPUs (NC8as_T4_v3 x maxCount 1; a GPU pool upgrades without
    surge); with a spot limit of exactly 8 and its own spot node (8 vCPUs) running, it fits; the same
    8 vCPUs held by another cluster do not."""
    target = preflight.load_target("dev", ROOT, SUBSCRIPTION)
    spec = target.env.spec.cluster
    (spot,) = [n for n in preflight.pool_needs(target.env) if n.spot]

    def subscription(dns_prefix: str) -> Arm:
        arm = healthy("dev")
        arm.usages = [u if u["name"]["value"] != "lowPriorityCores" else usage("lowPriorityCores", 8, 8) for u in arm.usages]
        found = cluster(
            f"{dns_prefix}-aks1b2c3d4e", f"{dns_prefix}-rg5f6a7b8c", target.location, dns_prefix, f"{spec.kubernetes_version}.3"
        )
        arm.clusters = [found]
        arm.pools = {found["name"]: [agent_pool(found, spot.pool, spot.vm_size, 1, spot=True)]}
        return arm

    with fake(subscription(target.env.base_name)) as arm:
        assert problems(run("dev", arm)) == []
    with fake(subscription("other-team")) as arm:
        (line,) = problems(run("dev", arm))
    assert line.startswith("PROBLEM  quota lowPriorityCores: needs 8 vCPUs") and "0 free (8 used of 8)" in line
