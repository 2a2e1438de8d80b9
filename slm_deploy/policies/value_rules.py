"""Generated files built from values: does every instruction still parse back to what was meant?

Outside values (a Hub revision, an Ollama tag, a model or file name) reach Dockerfiles inside
shell commands and JSON arrays. A value with a newline ends its instruction early (the rest
becomes an instruction of its own, `RUN ...`), a quote leaves the rest of the line unquoted, and
`$(...)` or a backtick runs a command at build time. Each leaves a trace this rule finds: a word
that is not an instruction, an unbalanced quote, a command substitution where generated files
never put one, or an exec-form array that is not JSON. Instruction words are Docker's
(moby/buildkit frontend/dockerfile/command/command.go).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from slm_deploy.policies.model import Kind, Rule, Severity

INSTRUCTIONS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
        "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR", "COMMENT",
    }
)  # fmt: skip
EXEC_FORM = frozenset({"CMD", "ENTRYPOINT", "RUN", "SHELL", "HEALTHCHECK"})
_FLAGS = re.compile(r"^(?:--[a-z-]+(?:=\S*)?\s+)*")


def command_substitution(text: str) -> bool:
    """True when TEXT runs a command on expansion: `$(` or a backtick outside single quotes."""
    single = double = False
    i = 0
    while i < len(text):
        c = text[i]
        if single:
            single = c != "'"
        elif c == "\\":
            i += 1
        elif c == "'" and not double:
            single = True
        elif c == '"':
            double = not double
        elif c == "`" or text.startswith("$(", i):
            return True
        i += 1
    return False


def _shell_words(text: str) -> str | None:
    """Why TEXT does not parse as shell words, or None."""
    try:
        shlex.split(text, posix=True)
    except ValueError as exc:
        return str(exc).lower()
    if command_substitution(text):
        return "a command substitution ($(...) or `...`)"
    return None


def values_parse_back(instructions: list[tuple[str, str]]) -> list[str]:
    problems = []
    for word, value in instructions:
        if word == "COMMENT":
            continue
        if word not in INSTRUCTIONS:
            problems.append(f"`{word[:40]}` is not a Dockerfile instruction: a value ended the line before it")
            continue
        body = value
        if word == "HEALTHCHECK":
            _, found, rest = value.partition("CMD ")
            if not found:
                continue
            body = rest
        if word == "RUN":
            body = _FLAGS.sub("", value, count=1)
        body = body.strip()
        if word in EXEC_FORM and body.startswith("["):
            try:
                array: Any = json.loads(body)
            except ValueError:
                problems.append(f"{word} {body[:60]}: the exec-form array is not JSON")
                continue
            if not isinstance(array, list) or not all(isinstance(a, str) for a in array):
                problems.append(f"{word} {body[:60]}: the exec-form array is not a list of strings")
            continue
        why = _shell_words(body)
        if why:
            problems.append(f"{word} {body[:60]}: does not parse back ({why})")
    return problems


RULES = [
    Rule(
        "SLM-DOCKER-008",
        "Values written into the Dockerfile parse back",
        Severity.CRITICAL,
        Kind.DOCKERFILE,
        "A revision, tag or file name with a newline, quote or $(...) that reaches a Dockerfile ends its "
        "instruction early or runs a command at build time, on the machine that builds the image.",
        "Regenerate with slm-deploy, which refuses such values; never paste remote metadata into a Dockerfile by hand.",
        values_parse_back,
    )
]
