"""Every rule has a passing and a failing fixture, caught directly, through checkov (custom
checks) and through the CrossGuard pack's validate path, wherever that adapter applies."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.policies.dockerfile_rules import parse_dockerfile
from slm_deploy.policies.model import Kind, Rule
from slm_deploy.policies.registry import BY_ID, RULES
from tests.conftest import REQUIRE_TOOLS, ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "policies"
CHECKOV_KINDS = {Kind.K8S, Kind.DOCKERFILE, Kind.COMPOSE, Kind.COMPOSE_FILE}
CROSSGUARD_KINDS = {Kind.K8S, Kind.K8S_SET, Kind.AZURE}


def _path(spec: Any) -> list[Any]:
    if isinstance(spec, list):
        return spec
    parts: list[Any] = []
    for piece in spec.split("."):
        name, *indexes = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts += [int(i) for i in indexes]
    return parts


def _apply(data: Any, patch: dict[str, Any]) -> Any:
    if "replace" in patch:
        old, new = patch["replace"]
        assert old in data, old
        return data.replace(old, new)
    *head, last = _path(patch["path"])
    target = data
    for key in head:
        target = target[key]
    if patch.get("delete"):
        del target[last]
    else:
        target[last] = patch["value"]
    return data


def fixture(rule_id: str) -> tuple[str, Any, Any]:
    spec = yaml.safe_load((FIXTURES / "rules" / f"{rule_id}.yaml").read_text())
    base_path = FIXTURES / "base" / spec["base"]
    text = base_path.read_text()
    base: Any = text if spec["base"] in ("Dockerfile", "text.txt") else yaml.safe_load(text)
    failing = copy.deepcopy(base)
    for patch in spec["fail"]:
        failing = _apply(failing, patch)
    return spec["base"], base, failing


def as_resource(rule: Rule, data: Any, name: str) -> Any:
    if rule.kind is Kind.DOCKERFILE:
        return parse_dockerfile(data)
    if rule.kind is Kind.TEXT:
        return {"path": name, "text": data}
    return data


def verdict(rule: Rule, data: Any, name: str) -> list[str]:
    if rule.kind is Kind.COMPOSE:
        return [m for svc, body in data["services"].items() for m in rule({"name": svc, "service": body, "document": data})]
    return rule(as_resource(rule, data, name))


def test_rule_ids_are_unique_and_every_rule_has_fixtures() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert {p.stem for p in (FIXTURES / "rules").glob("*.yaml")} == set(ids)
    for rule in RULES:
        assert rule.title and rule.rationale and rule.fix and rule.severity


@pytest.mark.parametrize("rule_id", sorted(BY_ID))
def test_rule_passes_its_passing_fixture_and_catches_its_failing_one(rule_id: str) -> None:
    rule = BY_ID[rule_id]
    name, passing, failing = fixture(rule_id)
    assert verdict(rule, passing, name) == []
    assert verdict(rule, failing, name), "the failing fixture was not caught"


def _write(tmp_path: Path, rule: Rule, data: Any) -> Path:
    if rule.kind is Kind.DOCKERFILE:
        path = tmp_path / "Dockerfile"
        path.write_text(data)
    else:
        path = tmp_path / ("compose.yaml" if rule.kind in (Kind.COMPOSE, Kind.COMPOSE_FILE) else "manifest.yaml")
        path.write_text(yaml.safe_dump(data))
    return path


def _checkov_failed(rule: Rule, path: Path) -> set[str]:
    logging.disable(logging.WARNING)
    from checkov.dockerfile.runner import Runner as DockerfileRunner
    from checkov.kubernetes.runner import Runner as KubernetesRunner
    from checkov.runner_filter import RunnerFilter
    from checkov.yaml_doc.runner import Runner as YamlRunner

    framework, runner = {
        Kind.K8S: ("kubernetes", KubernetesRunner),
        Kind.DOCKERFILE: ("dockerfile", DockerfileRunner),
        Kind.COMPOSE: ("yaml", YamlRunner),
        Kind.COMPOSE_FILE: ("yaml", YamlRunner),
    }[rule.kind]
    report = runner().run(
        root_folder=None,
        files=[str(path)],
        external_checks_dir=[str(ROOT / "slm_deploy" / "policies" / "checkov_checks")],
        runner_filter=RunnerFilter(framework=[framework]),
    )
    passed = {c.check_id for c in report.passed_checks if c.check_id == rule.id}
    failed = {c.check_id for c in report.failed_checks if c.check_id == rule.id}
    assert rule.id in passed | failed, f"checkov did not run {rule.id}"
    return failed


@pytest.mark.parametrize("rule_id", sorted(r.id for r in RULES if r.kind in CHECKOV_KINDS))
def test_checkov_custom_check_wraps_the_rule(rule_id: str, tmp_path: Path) -> None:
    rule = BY_ID[rule_id]
    _, passing, failing = fixture(rule_id)
    (tmp_path / "pass").mkdir()
    (tmp_path / "fail").mkdir()
    assert rule.id not in _checkov_failed(rule, _write(tmp_path / "pass", rule, passing))
    assert rule.id in _checkov_failed(rule, _write(tmp_path / "fail", rule, failing))


def _crossguard_violations(rule: Rule, data: Any) -> list[str]:
    from pulumi_policy import (
        PolicyCustomTimeouts,
        PolicyResource,
        PolicyResourceOptions,
        ResourceValidationArgs,
        StackValidationArgs,
    )

    from slm_deploy.policies.crossguard import build_policies

    policy = next(p for p in build_policies() if p.name == rule.id.lower())
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    violations: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        violations.append(message)

    if rule.kind is Kind.K8S_SET:
        resources = [
            PolicyResource(f"kubernetes:core/v1:{m['kind']}", m, f"urn:{i}", m["metadata"]["name"], opts, None, None, [], {})
            for i, m in enumerate(data)
        ]
        policy.validate(StackValidationArgs(resources), report)
    elif rule.kind is Kind.K8S:
        args = ResourceValidationArgs(f"kubernetes:x/v1:{data['kind']}", data, "urn:x", "x", opts, None)
        policy.validate(args, report)
    else:
        args = ResourceValidationArgs(data["type"], data["props"], "urn:x", "x", opts, None)
        policy.validate(args, report)
    return violations


@pytest.mark.parametrize("rule_id", sorted(r.id for r in RULES if r.kind in CROSSGUARD_KINDS))
def test_crossguard_policy_wraps_the_rule(rule_id: str) -> None:
    rule = BY_ID[rule_id]
    _, passing, failing = fixture(rule_id)
    assert _crossguard_violations(rule, passing) == []
    assert _crossguard_violations(rule, failing)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_crossguard_pack_passes_every_stack_on_the_analyzer_path(stack: str) -> None:
    """The resources captured from the offline preview, through the pack's validate functions."""
    from pulumi_policy import (
        PolicyCustomTimeouts,
        PolicyProviderResource,
        PolicyResource,
        PolicyResourceOptions,
        ResourceValidationArgs,
        ResourceValidationPolicy,
        StackValidationArgs,
    )

    from slm_deploy.policies.crossguard import build_policies
    from slm_deploy.preview import run_preview

    result = run_preview(stack, ROOT)
    violations: list[str] = []
    report = lambda message, urn=None: violations.append(message)  # noqa: E731
    resources = []
    for r in result.resources:
        opts = PolicyResourceOptions(False, list(r.ignore_changes), None, [], PolicyCustomTimeouts(0, 0, 0), [], r.parent)
        resources.append(PolicyResource(r.type, r.inputs, r.urn, r.name, opts, None, None, [], {}))
    # What the engine gives stack policies: parents, dependencies and providers as resources (the
    # deployment simulator's ordering and access checks read them).
    by_urn = {res.urn: res for res in resources}
    for r, res in zip(result.resources, resources, strict=True):
        res.parent = by_urn.get(r.parent) if r.parent else None
        res.dependencies = [by_urn[d] for d in r.dependencies if d in by_urn]
        if r.provider in by_urn:
            provider = by_urn[r.provider]
            res.provider = PolicyProviderResource(provider.resource_type, provider.props, provider.urn, provider.name)
    for policy in build_policies():
        if isinstance(policy, ResourceValidationPolicy):
            for res in resources:
                policy.validate(ResourceValidationArgs(res.resource_type, res.props, res.urn, res.name, res.opts, None), report)
        else:
            policy.validate(StackValidationArgs(resources), report)
    assert violations == []
    assert len(resources) > 40


def test_review_of_everything_we_generate_is_clean(tmp_path: Path) -> None:
    from slm_deploy.review import load_skips, review, sarif

    report = review(stacks=["dev", "staging", "prod"], fleets=[ROOT / "examples" / "fleet.yaml"], project=ROOT)
    assert report.findings == [], "\n".join(f"{f.tool} {f.rule} {f.file} {f.resource}: {f.message}" for f in report.findings)
    for tool in ("slm", "checkov", "detect-secrets", "hadolint", "compose", "kubernetes-validate", "promtool", "yamllint"):
        if tool in report.not_run and not REQUIRE_TOOLS:  # Debian's validators are optional (README)
            assert report.not_run[tool].startswith("not installed"), report.not_run
            continue
        assert report.tools[tool].checked > 0, tool
    for _, skip in report.skipped:
        assert len(skip.reason) > 30
    assert {s.check for s in load_skips()} >= {s.check for _, s in report.skipped}
    assert report.distinct < report.files
    document = sarif(report)
    assert document["version"] == "2.1.0"
    assert all("suppressions" in r for run in document["runs"] for r in run["results"])


def test_naive_artifacts_are_caught_by_checkov_builtins_and_our_rules() -> None:
    from slm_deploy.review import review

    report = review(paths=[ROOT / "tests" / "fixtures" / "naive"], tools=["slm", "checkov", "hadolint"])
    found = {(f.tool, f.rule) for f in report.findings}
    expected_ours = {
        "SLM-COMPOSE-001",
        "SLM-COMPOSE-005",
        "SLM-COMPOSE-006",
        "SLM-COMPOSE-009",
        "SLM-COMPOSE-010",
        "SLM-COMPOSE-011",
        "SLM-K8S-001",
        "SLM-K8S-009",
        "SLM-K8S-014",
        "SLM-DOCKER-001",
        "SLM-DOCKER-002",
        "SLM-DOCKER-004",
        "SLM-DOCKER-005",
        "SLM-DOCKER-006",
        "SLM-DOCKER-007",
        "SLM-SECRET-001",
    }
    assert expected_ours <= {rule for tool, rule in found if tool == "slm"}
    assert ("checkov", "SLM-DOCKER-007") in found, "the checkov check sees the parser directive as the review does"
    builtin = {rule for tool, rule in found if tool == "checkov" and rule.startswith("CKV")}
    assert {"CKV_K8S_14", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_DOCKER_2", "CKV_DOCKER_3"} <= builtin
    assert {rule for tool, rule in found if tool == "checkov" and rule.startswith("SLM-")}  # our custom checks too
    assert {rule for tool, rule in found if tool == "hadolint"}  # DL3007 latest, DL3020 ADD


def test_review_cli_exit_codes_and_sarif(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    sarif_file = tmp_path / "out.sarif"
    dirty = run_cli("review", str(ROOT / "tests" / "fixtures" / "naive"), "--tool", "slm", "--sarif", str(sarif_file))
    assert dirty.returncode == 1
    assert "SLM-COMPOSE-010" in dirty.stdout
    document = json.loads(sarif_file.read_text())
    results = [r for run in document["runs"] for r in run["results"]]
    assert results and all({"ruleId", "level", "message", "locations"} <= set(r) for r in results)
    clean = run_cli("review", str(ROOT / "tests" / "fixtures" / "policies" / "base" / "compose.yaml"), "--tool", "slm", "--json")
    assert clean.returncode == 0, clean.stdout
    assert json.loads(clean.stdout)["clean"] is True
    bad = run_cli("review", "--tool", "nope", str(ROOT))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
