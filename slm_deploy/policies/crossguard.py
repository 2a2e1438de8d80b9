"""The rules as a Pulumi CrossGuard policy pack: thin wrappers, no rule written twice.

Kubernetes resources arrive with their manifest as `props` (camelCase, apiVersion and kind);
Azure resources with their camelCase inputs. `policies/__main__.py` only calls PolicyPack with
`build_policies()`; tests call the same validate functions with ResourceValidationArgs made
from the resources the offline preview captured (importing __main__ would start the analyzer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import Severity as PolicySeverity

from slm_deploy.policies.model import Kind, Rule, Severity
from slm_deploy.policies.registry import rules_of
from slm_deploy.simulator.rules import SIM_RULES, SimRule

ENFORCEMENT = {
    Severity.CRITICAL: EnforcementLevel.MANDATORY,
    Severity.HIGH: EnforcementLevel.MANDATORY,
    Severity.MEDIUM: EnforcementLevel.ADVISORY,
    Severity.LOW: EnforcementLevel.ADVISORY,
}
SEVERITY = {
    Severity.CRITICAL: PolicySeverity.CRITICAL,
    Severity.HIGH: PolicySeverity.HIGH,
    Severity.MEDIUM: PolicySeverity.MEDIUM,
    Severity.LOW: PolicySeverity.LOW,
}


def is_manifest(props: Any) -> bool:
    return isinstance(props, dict) and "apiVersion" in props and "kind" in props


def _report(rule: Rule | SimRule, messages: Iterable[str], report_violation: ReportViolation) -> None:
    """Every adapter reports the same way: the rule's title, what is wrong, how to fix it."""
    for message in messages:
        report_violation(f"{rule.title}: {message}. Fix: {rule.fix}", None)


def resource_validator(rule: Rule) -> Any:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        props = dict(args.props)
        if rule.kind is Kind.K8S:
            if not args.resource_type.startswith("kubernetes:") or not is_manifest(props):
                return
            messages = rule(props)
        else:
            if not args.resource_type.startswith("azure-native:"):
                return
            messages = rule({"type": args.resource_type, "props": props})
        _report(rule, messages, report_violation)

    return validate


def stack_validator(rule: Rule) -> Any:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        manifests = [dict(r.props) for r in args.resources if r.resource_type.startswith("kubernetes:") and is_manifest(r.props)]
        _report(rule, rule(manifests), report_violation)

    return validate


def simulator_validator(rule: SimRule) -> Any:
    """One stack policy per simulator rule; the simulation itself runs once per stack."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        from slm_deploy.simulator import from_policy, simulate

        key = tuple(r.urn for r in args.resources)
        if _LAST_RUN.get("key") != key:
            _LAST_RUN.update(key=key, findings=simulate(from_policy(args.resources)))
        found = _LAST_RUN["findings"]
        _report(rule, [f"{f.resource}: {f.message}" for f in found if f.rule == rule.id], report_violation)

    return validate


_LAST_RUN: dict[str, Any] = {}


def _policy(
    kind: type[ResourceValidationPolicy] | type[StackValidationPolicy], rule: Rule | SimRule, validate: Any
) -> ResourceValidationPolicy | StackValidationPolicy:
    """The CrossGuard policy of one rule: its id as name, its severity as enforcement level."""
    return kind(
        name=rule.id.lower(),
        description=f"{rule.title}. {rule.rationale}",
        validate=validate,
        enforcement_level=ENFORCEMENT[rule.severity],
        severity=SEVERITY[rule.severity],
        remediation_steps=rule.fix,
    )


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [
        *(_policy(ResourceValidationPolicy, rule, resource_validator(rule)) for rule in rules_of(Kind.K8S, Kind.AZURE)),
        *(_policy(StackValidationPolicy, rule, simulator_validator(rule)) for rule in SIM_RULES),
        *(_policy(StackValidationPolicy, rule, stack_validator(rule)) for rule in rules_of(Kind.K8S_SET)),
    ]
