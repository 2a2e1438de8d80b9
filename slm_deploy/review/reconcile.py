"""Matching what a tool reports with the files it was given, by resolved path (issue 22: checkov
names a file `/k8s/deploy.yaml` when given `k8s/deploy.yaml`, and every finding on it was
dropped). A tool is always given `tool_path(artifact)`; what it reports is looked up by real path,
and the adapter learns which given files the tool said nothing about."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from slm_deploy.review.model import Artifact


def tool_path(path: Path) -> str:
    """Absolute, with every directory resolved (links and `..` as the kernel reads them) but the
    file's own name kept: tools choose what a file is by its name (Dockerfile, *.yaml)."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    return os.path.join(os.path.realpath(absolute.parent), absolute.name)


class PathIndex:
    def __init__(self, artifacts: Iterable[Artifact]) -> None:
        self.given: dict[str, Artifact] = {}
        for art in artifacts:
            self.given.setdefault(os.path.realpath(tool_path(art.path)), art)
        self.heard: set[str] = set()

    def find(self, *reported: str | None) -> Artifact | None:
        """The given file a tool's path names (the first spelling that matches), marked as heard."""
        for name in reported:
            if not name:
                continue
            real = os.path.realpath(name)
            art = self.given.get(real)
            if art is not None:
                self.heard.add(real)
                return art
        return None

    def silent(self) -> list[Artifact]:
        """Given files the tool never named."""
        return [art for real, art in self.given.items() if real not in self.heard]
