"""Dockerfile rules over parsed instructions: [(INSTRUCTION, value), ...] in file order."""

from __future__ import annotations

import re

from slm_deploy.policies.common import REFERENCE_SUFFIXES, SECRET_NAME, unlocked, unpinned
from slm_deploy.policies.model import Kind, RuleMaker, Severity


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Instructions with line continuations joined; a comment is ("COMMENT", its text after #), as
    checkov's parser gives it, so parser directives (`# syntax=...`) reach the rules."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line.startswith("#"):
            instructions.append(("COMMENT", line[1:].strip()))
            continue
        if not pending and not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full or full.startswith("#"):
            continue
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _from_images(instructions: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """(image, stage alias) for each FROM, flags (--platform=...) removed."""
    images = []
    for word, value in instructions:
        if word != "FROM":
            continue
        parts = [p for p in value.split() if not p.startswith("--")]
        alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        images.append((parts[0] if parts else "", alias))
    return images


def pinned_base(instructions: list[tuple[str, str]]) -> list[str]:
    stages: set[str] = set()
    problems = []
    for image, alias in _from_images(instructions):
        if image not in stages and image != "scratch" and (unpinned(image) or "$" in image):
            problems.append(f"FROM {image} is not pinned to a version")
        if alias:
            stages.add(alias)
    return problems


def locked_base(instructions: list[tuple[str, str]]) -> list[str]:
    stages: set[str] = set()
    problems = []
    for image, alias in _from_images(instructions):
        if image not in stages and image != "scratch" and unlocked(image):
            problems.append(f"FROM {image} has no digest")
        if alias:
            stages.add(alias)
    return problems


def locked_frontend(instructions: list[tuple[str, str]]) -> list[str]:
    """The `# syntax=IMAGE` parser directive (leading comments only, as BuildKit reads them) makes
    BuildKit pull IMAGE as the Dockerfile frontend on every build: a tag there is as movable as an
    unlocked FROM, and an air-gapped box cannot pull it at all."""
    problems = []
    for word, value in instructions:
        if word != "COMMENT":
            break
        key, _, image = value.partition("=")
        if key.strip().lower() == "syntax" and unlocked(image.strip()):
            problems.append(f"# syntax={image.strip()} pulls that frontend image by tag on every build")
    return problems


def non_root_user(instructions: list[tuple[str, str]]) -> list[str]:
    last_from = max((i for i, (w, _) in enumerate(instructions) if w == "FROM"), default=-1)
    users = [v for w, v in instructions[last_from + 1 :] if w == "USER"]
    if not users:
        return ["the final stage sets no USER: the container runs as root"]
    if users[-1].split(":")[0] in ("0", "root"):
        return [f"the final USER is {users[-1]}"]
    return []


def healthcheck(instructions: list[tuple[str, str]]) -> list[str]:
    checks = [v for w, v in instructions if w == "HEALTHCHECK"]
    if not checks or checks[-1].upper().startswith("NONE"):
        return ["no HEALTHCHECK"]
    return []


def no_add_urls(instructions: list[tuple[str, str]]) -> list[str]:
    return [
        f"ADD fetches {v.split()[-2] if len(v.split()) > 1 else v} from the network"
        for w, v in instructions
        if w == "ADD" and re.search(r"\b(https?|ftp)://", v)
    ]


def no_secret_env(instructions: list[tuple[str, str]]) -> list[str]:
    problems = []
    for word, value in instructions:
        if word not in ("ENV", "ARG"):
            continue
        for name, assigned in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\S+))?", value):
            if SECRET_NAME.search(name) and not name.upper().endswith(REFERENCE_SUFFIXES):
                problems.append(f"{word} {name} puts a secret into the image or its history")
            elif assigned and re.search(r"\bhf_[A-Za-z0-9]{20,}", assigned):
                problems.append(f"{word} {name} holds a Hugging Face token")
    return problems


_d = RuleMaker(Kind.DOCKERFILE)


RULES = [
    _d(
        "SLM-DOCKER-001",
        "Pinned base images",
        Severity.HIGH,
        "An unpinned base changes the image under a reviewed Dockerfile.",
        "FROM repository:version (or @sha256:digest); stage names may be reused.",
        pinned_base,
    ),
    _d(
        "SLM-DOCKER-002",
        "Non-root USER in the final stage",
        Severity.HIGH,
        "Images that run as root make every container escape a root escape.",
        "Add USER 10001:10001 (a numeric, non-root id) to the final stage.",
        non_root_user,
    ),
    _d(
        "SLM-DOCKER-003",
        "HEALTHCHECK",
        Severity.LOW,
        "Without a healthcheck Docker cannot tell a hung server from a healthy one.",
        "Add HEALTHCHECK CMD with a start period that covers loading the model.",
        healthcheck,
    ),
    _d(
        "SLM-DOCKER-004",
        "No ADD of URLs",
        Severity.MEDIUM,
        "ADD <url> downloads without verification and leaves no trace of what was fetched.",
        "Download in a build stage with curl --fail and copy the result; verify a checksum where one exists.",
        no_add_urls,
    ),
    _d(
        "SLM-DOCKER-005",
        "No secrets in ENV or ARG",
        Severity.CRITICAL,
        "ENV and ARG values are stored in the image config and its history, readable by anyone who pulls it.",
        "Use a BuildKit secret mount (RUN --mount=type=secret,id=...) at build time and files at run time.",
        no_secret_env,
    ),
    _d(
        "SLM-DOCKER-006",
        "Base images locked to a digest",
        Severity.MEDIUM,
        "A tag can be moved on the registry: the same Dockerfile then builds on different bits.",
        "Run `slm-deploy lock` and regenerate without --allow-unlocked: FROM repository:tag@sha256:...",
        locked_base,
    ),
    _d(
        "SLM-DOCKER-007",
        "No frontend pulled by tag",
        Severity.MEDIUM,
        "`# syntax=` names an image BuildKit pulls before it reads the file: a tag can be moved, and a box "
        "without registry access cannot build. The engine's built-in frontend reads RUN --mount and COPY --chown.",
        "Drop the `# syntax=` line, or lock the frontend to a digest (docker/dockerfile:1.x@sha256:...).",
        locked_frontend,
    ),
]
