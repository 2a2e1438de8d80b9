"""checkov: its built-in kubernetes, dockerfile and secrets checks plus our custom checks
(policies/checkov_checks), run in a child process of its own (checkov forks workers; see
review/process.py) and reconciled with the files it was given by resolved path."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from slm_deploy.review.artifacts import in_secrets_folder, yaml_docs
from slm_deploy.review.model import CHECKS_DIR, Artifact, Sink
from slm_deploy.review.process import ChildFailed, Isolated
from slm_deploy.review.reconcile import PathIndex, tool_path

NAME = "checkov"
ROLES: set[str] | None = None
# Frameworks that record a passed or failed check for every file they read (for kubernetes,
# every file holding a kind it has checks for): a file they were given and never named was not
# reviewed. The secrets framework names only files with secrets.
ANSWERS_FOR_EVERY_FILE = {"kubernetes", "dockerfile", "yaml"}

Failed = tuple[str, str, str, str, str, str]  # abs path, path, check id, severity, resource, check name
Scan = tuple[str, list[Failed], list[str], str, list[str]]  # framework, failed, paths named, crash, kinds checked


def held_parser_cache() -> int | None:
    """A descriptor of the folder where checkov's HCL parser keeps its tables between reviews, or
    None (not cached); the caller closes it.

    Importing checkov imports python-hcl2, whose parser class builds Lark LALR tables at import
    time with `cache=True` (hcl2/parser.py: `Lark(grammar=..., parser="lalr", cache=True)`): the
    tables go to `tempfile.gettempdir()/.lark_cache_<user>_<sha256>_<python>.tmp` and are read back
    with pickle (lark/lark.py, 1.3.1: `cache_fn = tempfile.gettempdir() + ...`, `pickle.load(f)`).
    A review points tempfile at its own folder, removed at its end, so every review built them
    again: 0.5-1.0 s of CPU (2026-12-07). Nor may they go to the shared /tmp: anyone can put a
    file by that name there first, and it is unpickled.

    So: $XDG_CACHE_HOME/slm-deploy/lark (~/.cache when XDG_CACHE_HOME is unset or relative, as the
    XDG spec says), held open: Lark is given /proc/self/fd/N, so what counts is the folder itself,
    checked on the descriptor (this user's, no one else may write to it), and no one can swap a
    folder on the path between the check and Lark's open. Nothing is made under a folder that is
    not this user's (a HOME kept by sudo)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        base = os.path.join(home, ".cache") if os.path.isabs(home) and home != "/" else ""
    if not base or os.path.dirname(base) == base:  # nor the root folder
        return None
    try:
        anchor = base if os.path.isdir(base) else os.path.dirname(base)
        if os.stat(anchor).st_uid != os.geteuid():
            return None
        ours = os.path.join(base, "slm-deploy")
        os.makedirs(ours, mode=0o700, exist_ok=True)
        if os.lstat(ours).st_uid != os.geteuid():  # someone else's slm-deploy: make nothing in it
            return None
        folder = os.path.join(ours, "lark")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not os.path.isdir(f"/proc/self/fd/{fd}"):
        os.close(fd)
        return None
    return fd


def _load() -> None:
    """checkov's runners imported: seconds of a review's time (issue 24), done in a child forked
    before the review previews or bundles anything, so that both cores work."""
    logging.disable(logging.WARNING)  # checkov logs every parse at WARNING on some files
    os.environ.setdefault("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
    review_temporary = tempfile.tempdir
    cache = held_parser_cache()
    if cache is not None:  # only while hcl2's parser is made: checkov keeps gettempdir() from import
        tempfile.tempdir = f"/proc/self/fd/{cache}"
    try:
        import hcl2  # noqa: F401  (checkov's HCL parser: its class body builds the tables)
    except ImportError:
        pass  # checkov's own import says what is missing
    finally:
        tempfile.tempdir = review_temporary
        if cache is not None:
            os.close(cache)
    import checkov.dockerfile.runner
    import checkov.kubernetes.runner
    import checkov.runner_filter
    import checkov.secrets.runner
    import checkov.yaml_doc.runner  # noqa: F401


def prepare() -> Isolated[list[Scan]]:
    """A child that imports checkov now and scans what start() later hands it."""
    return Isolated.warmed(_load, _scan)


def _scan(plans: list[tuple[str, list[str], bool]]) -> list[Scan]:
    """In the child: checkov's runners, answered as plain data."""
    _load()  # done already in a warmed child
    from checkov.dockerfile.runner import Runner as DockerfileRunner
    from checkov.kubernetes.runner import Runner as KubernetesRunner
    from checkov.runner_filter import RunnerFilter
    from checkov.secrets.runner import Runner as SecretsRunner
    from checkov.yaml_doc.runner import Runner as YamlRunner

    runners: dict[str, Any] = {
        "kubernetes": KubernetesRunner,
        "dockerfile": DockerfileRunner,
        "yaml": YamlRunner,
        "secrets": SecretsRunner,
    }
    answers: list[Scan] = []
    for framework, files, custom in plans:
        try:
            result = runners[framework]().run(
                root_folder=None,
                files=files,
                external_checks_dir=[str(CHECKS_DIR)] if custom else None,
                runner_filter=RunnerFilter(framework=[framework], show_progress_bar=False),
            )
        except Exception as exc:  # a checkov crash on hostile input is a finding, not a traceback
            answers.append((framework, [], [], exc.__class__.__name__, []))
            continue
        failed = [
            (
                str(item.file_abs_path or ""),
                str(item.file_path or ""),
                str(item.check_id),
                str(item.severity or ""),
                str(item.resource),
                str(item.check_name),
            )
            for item in result.failed_checks
        ]
        named = {
            str(item.file_abs_path or item.file_path)
            for checks in (result.passed_checks, result.failed_checks, result.skipped_checks)
            for item in checks
        }
        kinds: list[str] = []
        if framework == "kubernetes":  # kinds with at least one check (ours are registered by now)
            from checkov.kubernetes.checks.resource.registry import registry

            kinds = sorted(kind for kind, checks in registry.checks.items() if checks)
        answers.append((framework, failed, sorted(named), "", kinds))
    return answers


def _sane_manifest(manifest: Any) -> bool:
    return isinstance(manifest, dict) and all(isinstance(manifest.get(k, {}), dict) for k in ("metadata", "spec"))


class Pending:
    """A checkov run under way in its own process group; finish() waits and reports."""

    def __init__(
        self,
        sink: Sink,
        plans: list[tuple[str, list[str], bool]],
        indexes: dict[str, PathIndex],
        warm: Isolated[list[Scan]] | None = None,
    ) -> None:
        self.sink, self.plans, self.indexes = sink, plans, indexes
        self.job: Isolated[list[Scan]] | None = None
        if plans:
            self.job = warm.send(plans) if warm is not None else Isolated(_scan, plans)
        elif warm is not None:
            warm.cancel()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def finish(self) -> None:
        if self.job is None:
            return
        sink, indexes = self.sink, self.indexes
        try:
            answers = self.job.result()
        except ChildFailed as exc:
            for framework, _, _ in self.plans:
                for art in indexes[framework].given.values():
                    sink.report(art, "checkov-not-run", "high", "", f"checkov's {framework} runner failed ({exc})")
            return
        for framework, failed, named, crash, kinds in answers:
            index = indexes[framework]
            if crash:
                for art in index.given.values():
                    sink.report(art, "checkov-not-run", "high", "", f"checkov's {framework} runner failed ({crash})")
                continue
            for abs_path, path, check_id, severity, resource, check_name in failed:
                found = index.find(abs_path, path)
                level = "high" if check_id.startswith("SLM-") else (severity or "medium").lower()
                if found is None:
                    sink.lost(abs_path or path, f"checkov {framework} {check_id} ({level}) on {resource}: {check_name}")
                    continue
                sink.report(found, check_id, level, resource, check_name)
            for name in named:
                index.find(name)
            if framework in ANSWERS_FOR_EVERY_FILE:
                for art in index.silent():
                    if framework == "kubernetes" and not any(m.get("kind") in kinds for m in yaml_docs(art.path)):
                        continue  # checkov has no check for any kind in it (NetworkPolicy, PVC, CRDs)
                    sink.not_reviewed(art, f"checkov's {framework} runner was given this file and reported nothing on it")


def start(artifacts: list[Artifact], sink: Sink, warm: Isolated[list[Scan]] | None = None) -> Pending:
    """Start checkov on its own cores while the other tools run (in `warm`, prepare()'s child,
    when there is one)."""
    selections: list[tuple[str, list[Artifact], bool]] = [
        ("kubernetes", [a for a in artifacts if a.role == "manifest" and a.parsed], True),
        ("dockerfile", [a for a in artifacts if a.role == "dockerfile"], True),
        ("yaml", [a for a in artifacts if a.role == "compose" and a.parsed], True),
        ("secrets", [a for a in artifacts if not in_secrets_folder(a)], False),
    ]
    plans: list[tuple[str, list[str], bool]] = []
    indexes: dict[str, PathIndex] = {}
    for framework, selected, custom in selections:
        if framework == "kubernetes":  # checkov's kubernetes runner fails outright on these shapes
            malformed = [a for a in selected if not all(_sane_manifest(m) for m in yaml_docs(a.path))]
            for bad in malformed:
                why = "malformed manifest (metadata or spec not a mapping): checkov cannot read it"
                sink.report(bad, "checkov-not-run", "high", "", why)
            selected = [a for a in selected if a not in malformed]
        if selected:
            plans.append((framework, [tool_path(a.path) for a in selected], custom))
            indexes[framework] = PathIndex(selected)
    return Pending(sink, plans, indexes, warm)


def run(artifacts: list[Artifact], sink: Sink) -> None:
    start(artifacts, sink).finish()
