"""What `pulumi up` runs (through stacks/__main__.py): config -> Environment -> resources."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from slm_deploy.environment import ClusterMode, EnvironmentSpec, refuse_placeholders
from slm_deploy.errors import InputError
from slm_deploy.stackfile import PROJECT, SECRET_KEYS, read_config
from slm_deploy.stacks.images import pin_model_images
from slm_deploy.stacks.program import build
from slm_deploy.supply.lock import example_notice, locked_catalog


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def project_config() -> dict[str, Any]:
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{PROJECT}:"
    return {k[len(prefix) :]: _decode(v) for k, v in sorted(values.items()) if k.startswith(prefix)}


def ci_problem(spec: EnvironmentSpec, environ: Mapping[str, str], source: str) -> str | None:
    """What a stack file lacks to run in GitHub Actions, where pull requests preview as another
    identity than the one that deploys: the deployer's object id (else whoever runs the program)."""
    if environ.get("GITHUB_ACTIONS") != "true" or spec.cluster.mode is not ClusterMode.AKS or spec.cluster.deployer_object_id:
        return None
    return (
        f"{source}: {PROJECT}:cluster.deployerObjectId: required in CI: the object id of the identity that runs "
        f"`pulumi up` for this stack (`pulumi config set --path '{PROJECT}:cluster.deployerObjectId' OBJECT_ID`); "
        "without it the cluster admin would be whoever runs the program, the preview identity on pull requests"
    )


def main(project_dir: Path | None = None, offline: bool = False) -> None:
    """PROJECT_DIR holds Pulumi.yaml and the images.lock.yaml that pins the images (default: the
    current folder, as under `pulumi up`). OFFLINE: `slm-deploy preview` under mocks, which may
    render the packaged example lock; a real update refuses it (its digests are not on the registries)."""
    stack = pulumi.get_stack()
    folder = project_dir or Path.cwd()
    try:
        values = project_config()
        env = read_config(stack, values, f"Pulumi.{stack}.yaml")
        catalog = pin_model_images(locked_catalog(folder), env, folder)
        notice = None if offline else example_notice(folder)
    except InputError as exc:
        # One clear line in `pulumi up` output instead of a Python traceback.
        raise pulumi.RunError(str(exc)) from None
    problem = None if offline else ci_problem(env.spec, os.environ, f"Pulumi.{stack}.yaml")
    if problem:
        raise pulumi.RunError(problem)
    if notice and pulumi.runtime.is_dry_run():
        pulumi.log.warn(notice)
    elif notice:
        raise pulumi.RunError(
            f"{notice.removeprefix('note: ')}; refusing to deploy images that do not exist: "
            f"run `slm-deploy lock` in {folder} and commit images.lock.yaml"
        )
    if not offline and not pulumi.runtime.is_dry_run():
        # A real update never runs example values, whatever SLM_EXAMPLE_STACKS says.
        try:
            refuse_placeholders({k: v for k, v in values.items() if k not in SECRET_KEYS}, f"Pulumi.{stack}.yaml")
        except InputError as exc:
            raise pulumi.RunError(str(exc)) from None
    build(env, pulumi.Config(PROJECT).get_secret("hfToken"), catalog=catalog)
