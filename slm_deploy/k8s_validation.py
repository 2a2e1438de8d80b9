"""Offline validation of Kubernetes manifests: kubernetes-validate (strict) for built-in kinds,
the CRD JSON schemas shipped in the package (schemas/crds, or $SLM_SCHEMA_DIR) for custom resources."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_VERSIONS = ("1.31.0", "1.33.0")
PACKAGED_SCHEMAS = Path(__file__).resolve().parent / "schemas"


def schema_dir() -> Path | None:
    env = os.environ.get("SLM_SCHEMA_DIR")
    for candidate in ([Path(env)] if env else []) + [PACKAGED_SCHEMAS]:
        if (candidate / "crds").is_dir():
            return candidate
    return None


@cache
def _crd_validator(path: Path) -> Any:
    from jsonschema.validators import validator_for

    schema = json.loads(path.read_text(encoding="utf-8"))
    # Some CRD schemas carry Go regexes (inline flags mid-pattern) that fail a metaschema check;
    # validate instances without checking the schema itself.
    return validator_for(schema)(schema)


def crd_schema(manifest: dict[str, Any], schemas: Path | None) -> Path | None:
    api_version = str(manifest.get("apiVersion", ""))
    if "/" not in api_version or schemas is None:
        return None
    group, version = api_version.split("/", 1)
    path = schemas / "crds" / group / f"{str(manifest.get('kind', '')).lower()}_{version}.json"
    return path if path.is_file() else None


def is_builtin(manifest: dict[str, Any]) -> bool:
    group = str(manifest.get("apiVersion", "")).rpartition("/")[0]
    return (
        group == ""
        or (group.endswith(".k8s.io") and not group.startswith("secrets-store"))
        or group in {"apps", "batch", "policy", "autoscaling"}
    )


def validate_manifest(
    manifest: dict[str, Any], versions: tuple[str, ...] = DEFAULT_VERSIONS, schemas: Path | None = None
) -> list[str]:
    """Problems with one manifest, as messages; an empty list means valid."""
    import kubernetes_validate

    schemas = schemas if schemas is not None else schema_dir()
    crd = crd_schema(manifest, schemas)
    if crd is not None:
        errors = sorted(_crd_validator(crd).iter_errors(manifest), key=lambda e: list(e.path))
        return [f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}" for e in errors]
    if not is_builtin(manifest):
        return [f"no schema for {manifest.get('apiVersion')}/{manifest.get('kind')} (no CRD schema found)"]
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "<root>"
            problems.append(f"Kubernetes {version}: {path}: {exc.message}")
    return problems
