"""A stack file (`Pulumi.<stack>.yaml`) -> the project's config -> a planned Environment.

One reader below the Pulumi program (stacks/), the offline preview, `image onnx` and `init`: each
of them reads stack files the same way, and none reaches into another for it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from slm_deploy.environment import Environment, EnvironmentSpec, plan_environment
from slm_deploy.errors import InputError
from slm_deploy.safeyaml import load, read_input

PROJECT = "slm-deploy"
# Pulumi's own rule for a stack name (pulumi/pulumi, pkg/backend/filestate/backend.go,
# validateStackName: `^[A-Za-z0-9_.-]{1,100}$`, no slashes). The name becomes a file name here.
STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# The project's config keys are the environment model's fields, as camelCase aliases.
STRUCTURED_KEYS = frozenset(str(field.alias) for field in EnvironmentSpec.model_fields.values())
SECRET_KEYS = {"hfToken"}
SECRET_PLACEHOLDER = "<secret from the stack's secrets provider>"


def check_stack_name(stack: str) -> None:
    if not STACK_NAME.fullmatch(stack):
        raise InputError(
            "arguments",
            "STACK",
            f"{stack[:120]!r} is not a Pulumi stack name (letters, digits, '-', '_', '.'; 1 to 100 characters)",
        )


def _check_namespace(key: str, source: str) -> None:
    """A key in a namespace that is a near miss of the project's would be ignored silently."""
    namespace, colon, _ = key.partition(":")
    if not colon or namespace == PROJECT:
        return
    if namespace.lower() == PROJECT or difflib.SequenceMatcher(None, namespace.lower(), PROJECT).ratio() >= 0.8:
        raise InputError(source, f"config.{key}", f"namespace {namespace!r} is not {PROJECT!r}: a misspelling would be ignored")


def load_stack_file(stack: str, root: Path) -> tuple[dict[str, Any], list[str], str]:
    """Pulumi.<stack>.yaml -> (config for the program, secret keys, source name)."""
    check_stack_name(stack)
    source = f"Pulumi.{stack}.yaml"
    path = root / source
    if not os.path.lexists(path):
        known = sorted(p.name.split(".")[1] for p in root.glob("Pulumi.*.yaml"))
        raise InputError(source, "", f"no such stack file (stacks: {', '.join(known)})")
    data = load(read_input(path, source), source) or {}
    if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
        raise InputError(source, "config", "expected a mapping of config keys")
    unknown = sorted(str(k) for k in set(data) - {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"})
    if unknown:
        raise InputError(source, unknown[0], "unknown top-level key")
    config: dict[str, Any] = {}
    secrets = []
    for key, value in (data.get("config") or {}).items():
        if not isinstance(key, str):
            raise InputError(source, f"config.{key}", "a config key must be a string")
        _check_namespace(key, source)
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
            value = SECRET_PLACEHOLDER
        try:
            config[key] = value if isinstance(value, str) else json.dumps(value, allow_nan=False)
        except (ValueError, TypeError, RecursionError):
            raise InputError(source, f"config.{key}", "not a value Pulumi config can hold") from None
    return config, secrets, source


def project_values(config: dict[str, str]) -> dict[str, object]:
    """The project's keys of a loaded stack file, decoded as Pulumi's `get_object` would."""
    values: dict[str, object] = {}
    for key, text in config.items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT:
            continue
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def read_config(stack: str, values: dict[str, Any], source: str) -> Environment:
    """Project config (`slm-deploy:*`, already decoded) -> a planned Environment; unknown keys fail."""
    config: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_KEYS:
            continue
        if key not in STRUCTURED_KEYS:
            known = ", ".join(sorted([*STRUCTURED_KEYS, *SECRET_KEYS]))
            raise InputError(source, f"{PROJECT}:{key}", f"unknown config key (known: {known})")
        config[key] = value
    return plan_environment(stack, config, source=source)
