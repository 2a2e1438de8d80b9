"""Every manifest against the Kubernetes OpenAPI schemas (strict) and the CRD schemas we ship."""

from __future__ import annotations

from slm_deploy.review.artifacts import resource_name, yaml_docs
from slm_deploy.review.model import Artifact, Sink

NAME = "kubernetes-validate"
ROLES: set[str] | None = {"manifest"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    from slm_deploy.k8s_validation import schema_dir, validate_manifest

    schemas = schema_dir()
    for art in artifacts:
        for manifest in yaml_docs(art.path):
            resource = resource_name(manifest)
            try:
                problems = validate_manifest(manifest, schemas=schemas)
            except (AttributeError, TypeError, KeyError, ValueError, RecursionError) as exc:
                problems = [f"cannot be validated ({exc.__class__.__name__}): malformed manifest"]
            for problem in problems:
                sink.report(art, "schema", "high", resource, problem)
