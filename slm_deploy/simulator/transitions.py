"""Transitions, not only states: what an `up` from one rendered state to the next would replace,
delete or be refused, and which resources would drift after a refresh because AKS or a controller
writes into them.

Facts (which fields force a replacement, which updates the API refuses, which resources hold data,
which charts' CRDs Helm never upgrades, what AKS writes) are catalog data with sources
(catalog/transitions.yaml); this module only compares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.simulator.model import Finding, SimResource, Stack, dig, label

DRIFT_RULE = "SLM-SIM-030"
TRANSITION_RULE = "SLM-SIM-031"
_MISSING = object()


@cache
def catalog() -> dict[str, Any]:
    text = resources.files("slm_deploy.catalog").joinpath("transitions.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@dataclass(frozen=True, order=True)
class Change:
    """One consequence of an `up` from the old state to the new one."""

    severity: int  # 0 refused or unsupported, 1 loses data, 2 replaces, 3 deletes, 4 creates, 5 updates (the report's order)
    action: str  # refused | unsupported | replace | delete | crds | create | update
    resource: str
    detail: str

    def line(self) -> str:
        return f"{self.action:8} {self.resource}: {self.detail}" if self.detail else f"{self.action:8} {self.resource}"


def _values(data: Any, path: str) -> list[tuple[str, Any]]:
    """Every (concrete path, value) `path` reaches; `*` walks every key or item."""
    out: list[tuple[str, Any]] = [("", data)]
    for key in path.split("."):
        step: list[tuple[str, Any]] = []
        for prefix, value in out:
            if key == "*" and isinstance(value, dict):
                step += [(f"{prefix}.{k}".lstrip("."), v) for k, v in value.items()]
            elif key == "*" and isinstance(value, list):
                step += [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                step.append((f"{prefix}.{key}".lstrip("."), value.get(key, _MISSING)))
            else:
                step.append((f"{prefix}.{key}".lstrip("."), _MISSING))
        out = step
    return out


def _ignored(path: str, ignore: tuple[str, ...]) -> bool:
    return any(path == i or path.startswith(f"{i}.") or path.startswith(f"{i}[") for i in ignore)


def _data_holding() -> dict[str, str]:
    return {entry["type"]: entry["what"] for entry in catalog()["data_holding"]}


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _replacing_paths(old: SimResource, new: SimResource) -> list[tuple[str, str]]:
    """(path, why) of every changed field that makes Pulumi replace `new` rather than update it."""
    facts = catalog()
    rules = [(p, r["why"]) for r in facts["replace_on"] if r["type"] == new.type for p in r["paths"]]
    if new.type.startswith("kubernetes:") and new.manifest is not None:
        rules += [(p, "a new name or namespace is a new object") for p in facts["kubernetes_identity"]["paths"]]
    out = []
    for path, why in rules:
        before = dict(_values(old.inputs, path))
        for concrete, value in _values(new.inputs, path):
            if _ignored(concrete, new.ignore_changes):
                continue
            if before.get(concrete, _MISSING) != value:
                out.append((f"{concrete}: {_show(before.get(concrete, _MISSING))} -> {_show(value)}", why))
    return out


def _refused(old: SimResource, new: SimResource) -> list[str]:
    out = []
    for rule in catalog()["refused"]:
        if rule["type"] != new.type:
            continue
        before, after = dig(old.inputs, rule["path"], _MISSING), dig(new.inputs, rule["path"], _MISSING)
        if _ignored(rule["path"], new.ignore_changes) or before == after:
            continue
        if "from" in rule and before == rule["from"]:
            out.append(f"{rule['path']}: {_show(before)} -> {_show(after)}: {rule['why']}")
        if rule.get("shrink") and _quantity(after) < _quantity(before):
            out.append(f"{rule['path']}: {_show(before)} -> {_show(after)}: {rule['why']}")
    if new.type == "azure-native:containerservice:ManagedCluster" and not _ignored("kubernetesVersion", new.ignore_changes):
        before, after = _minor(old.inputs.get("kubernetesVersion")), _minor(new.inputs.get("kubernetesVersion"))
        if before and after and after < before:
            out.append(f"kubernetesVersion: {before[0]}.{before[1]} -> {after[0]}.{after[1]}: AKS refuses a downgrade")
        elif before and after and after[1] - before[1] > 1:
            out.append(
                f"kubernetesVersion: {before[0]}.{before[1]} -> {after[0]}.{after[1]}: AKS upgrades one minor version "
                "at a time (https://learn.microsoft.com/azure/aks/upgrade-aks-cluster)"
            )
    return out


def _minor(version: Any) -> tuple[int, int] | None:
    parts = str(version or "").split(".")
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else None


def _quantity(value: Any) -> float:
    from slm_deploy.simulator.model import memory_mib

    return float(memory_mib(value)) if value is not _MISSING else 0.0


def _crd_upgrade(old: SimResource, new: SimResource) -> str | None:
    if new.type not in ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"):
        return None
    chart, before, after = new.inputs.get("chart"), old.inputs.get("version"), new.inputs.get("version")
    if before == after:
        return None
    crds = catalog()["helm_crds"]
    for entry in crds["charts"]:
        if entry["chart"] != chart:
            continue
        switch = entry["upgrade_values"]
        enabled = bool(switch) and dig(new.inputs.get("values") or {}, switch, entry.get("default", False)) is True
        needs = entry.get("requires_input")
        if enabled and (not needs or new.inputs.get(needs) is True):
            return None
        how = f"set {switch}" if switch else "apply the new CRDs before the upgrade"
        if enabled and needs:
            how = f"set {needs} on the release"
        return f"chart {chart} {before} -> {after}: {crds['why']}; {how}"
    return None


def _upgrade_path(old: SimResource, new: SimResource) -> str | None:
    """A chart upgrade that skips a release train its vendor supports stepping through
    (transitions.yaml chart_upgrade_paths), with the versions to go through."""
    if new.type not in ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"):
        return None
    chart, before, after = new.inputs.get("chart"), str(old.inputs.get("version")), str(new.inputs.get("version"))
    for entry in catalog()["chart_upgrade_paths"]:
        if entry["chart"] != chart:
            continue
        trains = [str(train) for train, _ in entry["trains"]]
        lasts = [str(last) for _, last in entry["trains"]]
        start, end = _train(trains, before), _train(trains, after)
        if start is None or end is None or end - start <= 1:
            return None
        steps = ", ".join(lasts[start + 1 : end])
        return (
            f"chart {chart} {before} -> {after}: {entry['rule']} ({entry['source']}); "
            f"upgrade through {steps} first (one `up` each), or uninstall the release and install {after}"
        )
    return None


def _train(trains: list[str], version: str) -> int | None:
    """The index of the release train `version` belongs to (v26.7 holds v26.7.0, not v26.70.0)."""
    for i, name in enumerate(trains):
        if version == name or version.startswith(name + "."):
            return i
    return None


def compare(old: Stack, new: Stack, retained: set[str] | None = None) -> list[Change]:
    """Every replacement, deletion, refusal and skipped CRD upgrade of an `up` from `old` to `new`;
    `retained`: URNs whose deletion keeps the object (retainOnDelete)."""
    retained = retained or set()
    data = _data_holding()
    changes: set[Change] = set()
    for urn, before in old.by_urn.items():
        after = new.by_urn.get(urn)
        where = label(after or before)
        if after is None:
            if not before.custom:
                continue  # a component has no state of its own; its children are listed
            if before.type in data and urn not in retained:
                changes.add(Change(1, "delete", where, f"loses data: {data[before.type]}"))
            else:
                changes.add(Change(3, "delete", where, ""))
            continue
        for reason in _refused(before, after):
            changes.add(Change(0, "refused", where, reason))
        replacing = _replacing_paths(before, after)
        if replacing:
            fields = "; ".join(path for path, _ in replacing)
            why = replacing[0][1]
            if after.type in data:
                changes.add(Change(1, "replace", where, f"loses data: {data[after.type]} ({fields}: {why})"))
            else:
                changes.add(Change(2, "replace", where, f"{fields}: {why}"))
        crds = _crd_upgrade(before, after)
        if crds:
            changes.add(Change(0, "crds", where, crds))
        path = _upgrade_path(before, after)
        if path:
            changes.add(Change(0, "unsupported", where, path))
        if not replacing and after.custom and before.inputs != after.inputs:
            changes.add(Change(5, "update", where, ""))
    for urn, after in new.by_urn.items():
        if urn not in old.by_urn and after.custom:
            changes.add(Change(4, "create", label(after), ""))
    return sorted(changes)


def _platform_state(stack: Stack, resource: SimResource) -> dict[str, Any]:
    """`resource`'s inputs as a refresh would read them back after AKS and controllers wrote."""
    state: dict[str, Any] = json.loads(json.dumps(resource.inputs))
    for write in catalog()["platform_writes"]:
        if write["type"] != resource.type:
            continue
        if "adds" in write and all(state.get(k) == v for k, v in (write.get("when") or {}).items()):
            for key, added in write["adds"].items():
                if isinstance(added, list):
                    state[key] = [*(state.get(key) or []), *(a for a in added if a not in (state.get(key) or []))]
                else:
                    state[key] = {**added, **(state.get(key) or {})}
        if write.get("reads_back") == "agentPoolProfiles":
            pools = [
                {"name": r.inputs.get("agentPoolName"), "vmSize": r.inputs.get("vmSize")}
                for r in stack.of_type(write["from_type"])
            ]
            state["agentPoolProfiles"] = [*(state.get("agentPoolProfiles") or []), *pools]
        if write.get("reads_back") == "count" and "count" in state:
            state["count"] = f"{state['count']} (whatever the autoscaler set)"
    return state


def refresh_drift(stack: Stack) -> list[tuple[SimResource, str]]:
    """(resource, path) for every input a refresh would read back differently and the next `up`
    would therefore try to change (AKS-11, AKS-12)."""
    out = []
    for resource in stack.resources:
        state = _platform_state(stack, resource)
        for key in sorted(set(state) | set(resource.inputs)):
            if state.get(key) != resource.inputs.get(key) and not _ignored(key, resource.ignore_changes):
                out.append((resource, key))
    return out


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    """SLM-SIM-030: no diff on the `up` after a refresh."""
    del facts
    return [
        Finding(
            DRIFT_RULE,
            label(r),
            f"a refresh reads back {key} as AKS wrote it; every later `up` shows a diff (declare it or ignore_changes)",
        )
        for r, key in refresh_drift(stack)
    ]


def transition_findings(old: Stack, new: Stack, retained: set[str] | None = None) -> list[Finding]:
    """SLM-SIM-031: what would be refused, unsupported, lose data or skip CRDs on the way from `old` to `new`."""
    return [
        Finding(TRANSITION_RULE, change.resource, f"{change.action}: {change.detail}")
        for change in compare(old, new, retained)
        if change.severity <= 1 or change.action == "crds"
    ]


# The previous state -----------------------------------------------------------------------------


def stack_from_state(document: Any, source: str) -> tuple[Stack, set[str]]:
    from slm_deploy.errors import InputError

    if not isinstance(document, dict) or not isinstance(document.get("resources"), list):
        raise InputError(source, "resources", "not a preview state (expected a list of resources)")
    out, retained = [], set()
    for i, r in enumerate(document["resources"]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("urn", "type", "name")):
            raise InputError(source, f"resources[{i}]", "expected urn, type and name")
        inputs = r.get("inputs")
        out.append(
            SimResource(
                r["urn"],
                r["type"],
                r["name"],
                inputs if isinstance(inputs, dict) else {},
                r.get("parent"),
                bool(r.get("custom", True)),
                (),
                None,
                tuple(str(i) for i in r.get("ignore_changes") or ()),
            )
        )
        if r.get("retain_on_delete"):
            retained.add(r["urn"])
    return Stack(out), retained
