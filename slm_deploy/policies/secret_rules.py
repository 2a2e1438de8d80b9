"""Secrets in any generated file: literals that checkov and detect-secrets do not catch
(Hugging Face tokens, list-form compose environment, Dockerfile ENV)."""

from __future__ import annotations

import re
from typing import Any

from slm_deploy.policies.common import REFERENCE_SUFFIXES
from slm_deploy.policies.model import Kind, Rule, Severity

HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
# NAME=value or NAME: value where NAME says secret and value is a literal, not a reference
# (a path, a ${VAR}, a {$VAR} placeholder, a $(command), a *_FILE/_PATH variable).
ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<name>[A-Za-z0-9_.-]*(?:password|passwd|api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|hf[_-]?token))
    ["']?\s*[:=]\s*["']?
    (?P<value>[^\s"',}]{8,})
    """
)
PLACEHOLDERS = ("${", "{$", "$(", "/", "<", "[", "{{")


def no_hf_tokens(doc: dict[str, Any]) -> list[str]:
    return [
        f"{doc['path']}:{n}: a Hugging Face token" for n, line in enumerate(doc["text"].splitlines(), 1) if HF_TOKEN.search(line)
    ]


def no_literal_credentials(doc: dict[str, Any]) -> list[str]:
    problems = []
    for n, line in enumerate(doc["text"].splitlines(), 1):
        for match in ASSIGNMENT.finditer(line):
            name, value = match.group("name"), match.group("value")
            if name.upper().endswith(REFERENCE_SUFFIXES) or value.startswith(PLACEHOLDERS):
                continue
            if value.lower() in ("true", "false", "null", "none", "required", "optional"):
                continue
            problems.append(f"{doc['path']}:{n}: {name} is set to a literal value")
    return problems


RULES = [
    Rule(
        "SLM-SECRET-001",
        "No Hugging Face tokens in files",
        Severity.CRITICAL,
        Kind.TEXT,
        "A committed or shipped hf_ token grants access to gated models and private repos until revoked; "
        "neither checkov nor detect-secrets recognises it.",
        "Revoke the token, remove it, and pass it as a secret file (secrets/hf_token, hfToken Pulumi secret).",
        no_hf_tokens,
    ),
    Rule(
        "SLM-SECRET-002",
        "No literal passwords or API keys",
        Severity.CRITICAL,
        Kind.TEXT,
        "Literal credentials in generated files travel with every copy of the bundle or manifest.",
        "Reference a secret file or a secret store instead of writing the value.",
        no_literal_credentials,
    ),
]
