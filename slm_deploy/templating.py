"""Jinja2 for the text outputs: sandboxed, StrictUndefined, templates compiled once."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@cache
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = shlex.quote
    env.filters["dquote"] = lambda value: '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return env


def render(name: str, **values: Any) -> str:
    """Render templates/NAME.jinja; a missing value is an error, never an empty string."""
    return environment().get_template(f"{name}.jinja").render(**values)
