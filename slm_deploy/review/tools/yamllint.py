"""yamllint's default rules, every one of them: what we do not follow is a listed skip."""

from __future__ import annotations

from slm_deploy.review.model import Artifact, Sink

NAME = "yamllint"
ROLES: set[str] | None = {"compose", "manifest", "prometheus", "rules", "loki-rules", "yaml", "workflow"}


def run(artifacts: list[Artifact], sink: Sink) -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig("extends: default")
    for art in artifacts:
        if not art.parsed:  # the parse error is reported once, by the runner or our rules
            continue
        text = art.path.read_text(encoding="utf-8", errors="replace")
        for problem in linter.run(text, config):
            sink.report(art, f"yamllint:{problem.rule or 'syntax'}", problem.level, f"line {problem.line}", problem.desc)
