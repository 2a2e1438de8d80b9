"""Jinja2 for the text outputs: sandboxed, StrictUndefined, templates compiled once.

Values from outside (Hub repos and revisions, Ollama tags, file names, image references) reach
Dockerfiles and shell scripts. They are checked against their documented shapes where they come
in (slm_deploy/resolve/); the filters here are the last guard, at the point of writing: `word`
passes only what needs no quoting in any of those languages, `shquote` and `dquote` quote for
the shell and refuse control characters (a newline ends a Dockerfile instruction whatever the
quoting). A value that fails is an error, never an altered file. SLM-DOCKER-008 checks the result.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from slm_deploy.errors import InputError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
# Characters no Dockerfile, POSIX shell, YAML plain scalar or Modelfile treats specially inside a word.
WORD = re.compile(r"[A-Za-z0-9_./:@+=,%~-]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def word(value: Any) -> str:
    text = str(value)
    if not WORD.fullmatch(text):
        raise InputError(
            "generated file", "value", f"{text[:80]!r} cannot be written unquoted (letters, digits and ._./:@+=,%~- only)"
        )
    return text


def _printable(value: Any) -> str:
    text = str(value)
    if CONTROL.search(text):
        raise InputError("generated file", "value", f"{text[:80]!r} holds a control character (a newline ends the line)")
    return text


def shquote(value: Any) -> str:
    return shlex.quote(_printable(value))


def dquote(value: Any) -> str:
    return '"' + _printable(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    env.filters["shquote"] = shquote
    env.filters["dquote"] = dquote
    env.filters["word"] = word
    return env


def render(name: str, **values: Any) -> str:
    """Render templates/NAME.jinja; a missing value is an error, never an empty string."""
    return environment().get_template(f"{name}.jinja").render(**values)
