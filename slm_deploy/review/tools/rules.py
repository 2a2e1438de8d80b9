"""Our own rules (policies/): text rules on every file, structure rules on compose files,
Dockerfiles, manifests and Prometheus files, and set rules over the manifests of one deployment."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from slm_deploy.review.artifacts import YAML_ROLES, in_secrets_folder, resource_name, yaml_docs, yaml_problem
from slm_deploy.review.model import Artifact, Sink

NAME = "slm"
ROLES: set[str] | None = None


def run(artifacts: list[Artifact], sink: Sink) -> None:
    from slm_deploy.policies.dockerfile_rules import parse_dockerfile
    from slm_deploy.policies.model import Kind
    from slm_deploy.policies.registry import rules_of

    report = sink.report

    manifests_by_dir: dict[Path, list[tuple[Artifact, dict[str, Any]]]] = defaultdict(list)

    def apply(art: Artifact, rule: Any, data: Any, resource: str = "") -> None:
        # A rule meets shapes no valid file has (a string where a mapping belongs): that is a
        # finding about the file, never a traceback.
        try:
            messages = list(rule(data))
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):
            messages = [f"malformed input: {rule.id} cannot evaluate this {art.role}"]
        for message in messages:
            report(art, rule.id, rule.severity.value, resource, message)

    for art in artifacts:
        text = art.path.read_text(encoding="utf-8", errors="replace")
        if art.role in YAML_ROLES and yaml_problem(art.path):
            report(art, "yaml-parse", "high", "", yaml_problem(art.path))
        for rule in rules_of(Kind.TEXT):
            if rule.id.startswith("SLM-SECRET-") and in_secrets_folder(art):
                continue
            apply(art, rule, {"path": art.label, "text": text})
        if art.role == "dockerfile":
            instructions = parse_dockerfile(text)
            for rule in rules_of(Kind.DOCKERFILE):
                apply(art, rule, instructions)
        elif art.role == "compose":
            docs = yaml_docs(art.path)
            document = docs[0] if docs and isinstance(docs[0], dict) else {}
            services = document.get("services") or {}
            if not isinstance(services, dict):
                report(art, "compose-structure", "high", "services", "`services` must be a mapping of service names")
                services = {}
            for name, service in services.items():
                if not isinstance(service, dict):
                    report(art, "compose-structure", "high", str(name), "a service must be a mapping")
                    continue
                for rule in rules_of(Kind.COMPOSE):
                    apply(art, rule, {"name": name, "service": service, "document": document}, str(name))
            for rule in rules_of(Kind.COMPOSE_FILE):
                apply(art, rule, document)
        elif art.role == "manifest":
            for manifest in yaml_docs(art.path):
                resource = resource_name(manifest)
                if not isinstance(manifest.get("metadata", {}), dict):
                    report(art, "manifest-structure", "high", resource, "`metadata` must be a mapping")
                    continue
                manifests_by_dir[_deployment_root(art.path)].append((art, manifest))
                for rule in rules_of(Kind.K8S):
                    apply(art, rule, manifest, resource)
    for group in manifests_by_dir.values():
        manifests = [m for _, m in group]
        for rule in rules_of(Kind.K8S_SET):
            apply(group[0][0], rule, manifests)


def _deployment_root(path: Path) -> Path:
    """Manifests of one deployment share a directory tree (preview writes <out>/<namespace>/...)."""
    return path.parent.parent
