"""What a review is made of: artifacts in, findings out, skips that set findings aside."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slm_deploy.errors import InputError

POLICIES = Path(__file__).resolve().parents[1] / "policies"
SKIPS_FILE = POLICIES / "skips.yaml"
CHECKS_DIR = POLICIES / "checkov_checks"
TEXT_LIMIT = 2_000_000


@dataclass(frozen=True)
class Finding:
    tool: str
    rule: str
    severity: str
    file: str
    resource: str
    message: str


@dataclass(frozen=True)
class Skip:
    check: str
    scope: str
    reason: str

    def matches(self, finding: Finding) -> bool:
        return self.check == finding.rule and fnmatch.fnmatch(finding.file, self.scope)


@dataclass
class ToolSummary:
    checked: int = 0
    findings: int = 0
    skipped: int = 0
    not_run: str = ""  # why the tool did not run (not installed, and how to install it)


@dataclass
class ReviewReport:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[tuple[Finding, Skip]] = field(default_factory=list)
    tools: dict[str, ToolSummary] = field(default_factory=lambda: defaultdict(ToolSummary))
    files: int = 0
    distinct: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def not_run(self) -> dict[str, str]:
        """Tools that were asked for but could not run: a clean report with these is not a full review."""
        return {tool: s.not_run for tool, s in sorted(self.tools.items()) if s.not_run}


@dataclass
class Artifact:
    path: Path  # on disk
    label: str  # how reports name it
    key: str  # content key: files with the same key are checked once
    role: str  # compose, dockerfile, manifest, prometheus, rules, loki-rules, workflow, yaml, text
    parsed: bool = True  # False when YAML-shaped but unparsable: only line-based tools get it


Reporter = Callable[[Artifact, str, str, str, str], None]  # artifact, rule, severity, resource, message
NotReviewed = Callable[[str, str], None]  # label, why it was not reviewed


class Sink:
    """Where an adapter puts what its tool said. `report` is a finding on a file the adapter was
    given; `lost` is tool output that maps to none of them (a path the tool invented or rewrote),
    which becomes a `not-reviewed` finding instead of vanishing (issue 22)."""

    def __init__(self, report: Reporter, lost: Callable[[str, str], None]) -> None:
        self.report = report
        self.lost = lost

    def not_reviewed(self, art: Artifact, why: str) -> None:
        self.report(art, "not-reviewed", "high", "", why)


class ToolMissing(Exception):
    """A validator's program is not installed. Raised before the tool has looked at anything."""

    def __init__(self, program: str, install: str) -> None:
        super().__init__(f"{program} is not installed (install: {install})")
        self.program = program
        self.install = install


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [Skip(str(s["check"]), str(s["scope"]), str(s["reason"])) for s in data.get("skips", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(str(path), "skips", f"unreadable skip file ({exc.__class__.__name__})") from None
