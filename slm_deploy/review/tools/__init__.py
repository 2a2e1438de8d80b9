"""One adapter per validator. Each module has NAME, ROLES (the artifact roles it reads; None for
every file) and run(artifacts, sink); the registry below is the order they run and report in."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from slm_deploy.review.model import Artifact, Sink
from slm_deploy.review.tools import (
    actionlint,
    checkov,
    compose,
    detect_secrets,
    hadolint,
    kubernetes_validate,
    promtool,
    rules,
    yamllint,
    zizmor,
)

ADAPTERS: tuple[ModuleType, ...] = (
    rules,
    checkov,
    detect_secrets,
    hadolint,
    compose,
    kubernetes_validate,
    promtool,
    yamllint,
    actionlint,
    zizmor,
)
Runner = Callable[[list[Artifact], Sink], None]
TOOLS: dict[str, tuple[set[str] | None, Runner]] = {a.NAME: (a.ROLES, a.run) for a in ADAPTERS}
ADAPTERS_BY_NAME: dict[str, ModuleType] = {a.NAME: a for a in ADAPTERS}
# Tools that parse YAML: an artifact whose YAML did not parse is not given to them.
YAML_READERS = {"checkov", "compose", "kubernetes-validate", "promtool", "yamllint", "actionlint", "zizmor"}
