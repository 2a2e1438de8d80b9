"""Security review: every validator and policy over generated artifacts, in one process.

Sources: directories of artifacts, stacks (through the offline preview) and fleets (bundled into
a temporary directory). Tools (review/tools/, one adapter each): our rules (policies/), checkov
(built-in kubernetes, dockerfile and secrets checks plus our custom checks), detect-secrets,
hadolint, the Docker Compose binary's `config -q`, kubernetes-validate strict + CRD schemas,
promtool, yamllint, and for GitHub Actions workflows actionlint and zizmor. Every adapter
reconciles what its tool reports with the files it was given (review/reconcile.py): nothing a
tool says is dropped. Files with the same content are checked once (review/dedup.py). Skips live
in policies/skips.yaml (check, scope, reason) and are reported, never dropped.
"""

from slm_deploy.review.command import review_command
from slm_deploy.review.dedup import fleet_key
from slm_deploy.review.model import TEXT_LIMIT, Artifact, Finding, ReviewReport, Skip, ToolMissing, ToolSummary, load_skips
from slm_deploy.review.runner import review
from slm_deploy.review.sarif import sarif
from slm_deploy.review.tools import TOOLS

__all__ = [
    "TEXT_LIMIT",
    "TOOLS",
    "Artifact",
    "Finding",
    "ReviewReport",
    "Skip",
    "ToolMissing",
    "ToolSummary",
    "fleet_key",
    "load_skips",
    "review",
    "review_command",
    "sarif",
]
