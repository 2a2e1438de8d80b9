"""What a rule is: an id, a title, a severity, why it matters, how to fix it, and a function over
the resource as data that returns what is wrong (an empty list when nothing is)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    K8S = "kubernetes"  # one manifest (dict)
    K8S_SET = "kubernetes-set"  # every manifest of a deployment (list of dicts)
    AZURE = "azure"  # {"type": Pulumi type token, "props": camelCase inputs}
    OUTPUTS = "outputs"  # {"outputs": {...}, "secret": [names]}
    COMPOSE = "compose"  # {"name": service, "service": {...}, "document": whole compose file}
    COMPOSE_FILE = "compose-file"  # the whole compose document
    DOCKERFILE = "dockerfile"  # [(INSTRUCTION, value), ...]
    TEXT = "text"  # {"path": ..., "text": ...}


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    kind: Kind
    rationale: str
    fix: str
    check: Callable[[Any], list[str]]

    def __call__(self, resource: Any) -> list[str]:
        return self.check(resource)


@dataclass(frozen=True)
class RuleMaker:
    """The rules of one module, of its kind unless a rule names another (`kind=`)."""

    kind: Kind

    def __call__(
        self, id_: str, title: str, severity: Severity, rationale: str, fix: str, check: Any, kind: Kind | None = None
    ) -> Rule:
        return Rule(id_, title, severity, kind or self.kind, rationale, fix, check)
