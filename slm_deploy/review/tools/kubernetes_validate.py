"""Every manifest against the Kubernetes OpenAPI schemas (strict) and the CRD schemas we ship."""

from __future__ import annotations

from functools import cache

from slm_deploy.review.artifacts import resource_name, yaml_docs
from slm_deploy.review.model import Artifact, Sink

NAME = "kubernetes-validate"
ROLES: set[str] | None = {"manifest"}


@cache
def _parse_schemas_once() -> None:
    """kubernetes-validate 1.37.0 reads and parses the kind's schema and all of _definitions.json
    (megabytes) on every call (kubernetes_validate/utils.py:111-119, through schema_contents at
    :71), for every manifest and version: 90 % of this tool's time in a review of three stacks.
    The parsed schemas are only read, so each file is parsed once per process."""
    import kubernetes_validate.utils as library

    library.schema_contents = cache(library.schema_contents)


def run(artifacts: list[Artifact], sink: Sink) -> None:
    from slm_deploy.k8s_validation import schema_dir, validate_manifest

    _parse_schemas_once()
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
