"""Every credential-format detector detect-secrets ships, on every file, line by line."""

from __future__ import annotations

from functools import cache
from typing import Any

from slm_deploy.review.artifacts import in_secrets_folder
from slm_deploy.review.model import Artifact, Sink

NAME = "detect-secrets"
ROLES: set[str] | None = None


@cache
def _secret_detectors() -> list[Any]:
    """Every credential-format detector detect-secrets ships (checkov runs only some of them:
    not GitHub, Discord or SendGrid). The entropy and keyword heuristics are left to checkov's
    combinator and SLM-SECRET-002, which already run."""
    import importlib
    import pkgutil

    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    found = {}
    for module_info in pkgutil.iter_modules(plugins.__path__):
        module = importlib.import_module(f"{plugins.__name__}.{module_info.name}")
        for value in vars(module).values():
            detector = isinstance(value, type) and issubclass(value, RegexBasedDetector) and value is not RegexBasedDetector
            if detector and getattr(value, "secret_type", None) and value.__module__ == module.__name__:
                found[value.__name__] = value
    return [found[name]() for name in sorted(found)]


def run(artifacts: list[Artifact], sink: Sink) -> None:
    """The maintained detectors on every file, line by line; the value found is never reported,
    only its kind and line. Files in a secrets/ folder hold secrets by design and are left out."""
    detectors = _secret_detectors()
    verdicts: dict[str, list[str]] = {}
    for art in artifacts:
        if in_secrets_folder(art):
            continue
        text = art.path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            kinds = verdicts.get(line)
            if kinds is None:  # the same lines recur across files (a verdict depends on the line alone)
                kinds = sorted({d.secret_type for d in detectors if next(iter(d.analyze_string(line)), None) is not None})
                verdicts[line] = kinds
            for kind in kinds:
                sink.report(art, "detect-secrets", "critical", f"line {number}", kind)
