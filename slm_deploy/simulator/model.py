"""What the simulator works on: every resource a stack declares (Azure and Kubernetes, components
and Helm releases), with what the engine waits for before creating each, and the findings.

Built from the offline preview (`from_preview`) or from a CrossGuard stack validation
(`from_policy`), so `make test`, `slm-deploy review --stack` and `pulumi preview --policy-pack`
run the same checks on the same model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from slm_deploy.catalog.platform import ChartProfile, load_chart_profiles


@dataclass(frozen=True)
class SimResource:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None
    custom: bool
    dependencies: tuple[str, ...]
    provider: str | None
    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    deleted_with: str | None = None
    protect: bool = False

    @property
    def manifest(self) -> dict[str, Any] | None:
        if self.type.startswith("kubernetes:") and "apiVersion" in self.inputs and "kind" in self.inputs:
            return self.inputs
        return None


@dataclass(frozen=True, order=True)
class Finding:
    rule: str
    resource: str  # `type::name` of the resource the finding is about
    message: str


@dataclass
class Stack:
    resources: list[SimResource]
    # Whether deletedWith/retainOnDelete were seen (the offline preview); CrossGuard does not pass them.
    options_known: bool = True
    by_urn: dict[str, SimResource] = field(init=False)
    children: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_urn = {r.urn: r for r in self.resources}
        self.children = {}
        for r in self.resources:
            if r.parent and r.parent in self.by_urn and not self.by_urn[r.parent].custom:
                self.children.setdefault(r.parent, []).append(r.urn)

    def of_type(self, *types: str) -> list[SimResource]:
        return [r for r in self.resources if r.type in types]

    def manifests(self, *kinds: str) -> list[SimResource]:
        return [r for r in self.resources if r.manifest is not None and (not kinds or r.inputs["kind"] in kinds)]

    def releases(self) -> list[SimResource]:
        return self.of_type("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")

    @cached_property
    def cluster(self) -> SimResource | None:
        clusters = self.of_type("azure-native:containerservice:ManagedCluster")
        return clusters[0] if clusters else None

    def waits_for(self, resource: SimResource) -> set[str]:
        """Every URN created before `resource`: its dependencies, its ancestors' dependencies and its
        provider, transitively; depending on a component means waiting for all its children."""
        seen: set[str] = set()
        todo = [resource.urn]
        while todo:
            r = self.by_urn.get(todo.pop())
            if r is None:
                continue
            direct = [*r.dependencies, *([r.provider] if r.provider else [])]
            parent = r.parent
            while parent in self.by_urn:
                direct += self.by_urn[parent].dependencies
                parent = self.by_urn[parent].parent
            for dep in direct:
                for d in (dep, *self._descendants(dep)):
                    if d not in seen:
                        seen.add(d)
                        todo.append(d)
        return seen

    def _descendants(self, urn: str) -> list[str]:
        out = []
        for child in self.children.get(urn, []):
            out += [child, *self._descendants(child)]
        return out


def label(resource: SimResource) -> str:
    manifest = resource.manifest
    if manifest is not None:
        meta = manifest.get("metadata", {})
        ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
        return f"{manifest['kind']} {ns}{meta.get('name', resource.name)}"
    return f"{resource.type}::{resource.name}"


def chart_profile(release: SimResource) -> ChartProfile | None:
    """The profile of the release's pinned chart version (catalog/chart_profiles.yaml), or None."""
    return load_chart_profiles().get((str(release.inputs.get("chart")), str(release.inputs.get("version"))))


def dig(data: Any, path: str, default: Any = None) -> Any:
    """`a.b.c` in nested dicts (keys may contain '-'); `default` when any step is missing."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)$")
_MEM_FACTOR = {
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024 * 1024,
    "k": 1000 / 1048576,
    "M": 1e6 / 1048576,
    "G": 1e9 / 1048576,
    "T": 1e12 / 1048576,
    "": 1 / 1048576,
}


def cpu_millis(value: Any) -> int:
    match = _CPU.match(str(value))
    if not match:
        return 0
    number = float(match.group(1))
    return int(number if match.group(2) else number * 1000)


def memory_mib(value: Any) -> int:
    match = _MEM.match(str(value))
    return int(float(match.group(1)) * _MEM_FACTOR[match.group(2)]) if match else 0


def from_preview(result: Any) -> Stack:
    """A PreviewResult (slm_deploy.preview) -> the simulator's model."""
    return Stack(
        [
            SimResource(
                r.urn,
                r.type,
                r.name,
                r.inputs,
                r.parent,
                r.custom,
                tuple(r.dependencies),
                r.provider,
                tuple(r.ignore_changes),
                bool(getattr(r, "retain_on_delete", False)),
                getattr(r, "deleted_with", None),
                bool(getattr(r, "protect", False)),
            )
            for r in result.resources
        ]
    )


def _component(resource_type: str) -> bool:
    return resource_type.count(":") == 2 and resource_type.split(":", 1)[0] not in {
        "azure-native",
        "kubernetes",
        "random",
        "pulumi",
        "pulumi-python",
    }


def from_policy(resources: Iterable[Any]) -> Stack:
    """CrossGuard PolicyResources -> the simulator's model (props are the same camelCase inputs)."""
    out = []
    for r in resources:
        deps = {d.urn for d in r.dependencies or []}
        for group in (r.property_dependencies or {}).values():
            deps.update(d.urn for d in group)
        provider = getattr(r.provider, "urn", None) if r.provider else None
        parent = r.parent.urn if r.parent is not None else None
        out.append(
            SimResource(
                r.urn,
                r.resource_type,
                r.name,
                dict(r.props),
                parent,
                not _component(r.resource_type),
                tuple(sorted(deps)),
                provider,
                tuple(getattr(r.opts, "ignore_changes", None) or ()),
                bool(getattr(r.opts, "retain_on_delete", False)),
                getattr(getattr(r.opts, "deleted_with", None), "urn", None),
                bool(getattr(r.opts, "protect", False)),
            )
        )
    return Stack(out, options_known=False)
