"""Each review adapter's contract (issue 22): whatever way a file is named (relative, absolute,
through `..`, through a symbolic link, with a space) and from whatever working directory, the
same hostile files give the same findings, and nothing a tool reports is dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_deploy.review import TOOLS, Finding, review
from tests.conftest import need

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:latest
          securityContext:
            privileged: true
          unknownField: 1
"""
COMPOSE = """\
services:
  app:
    image: nginx:latest
    privileged: true
    network_mode: host
    restart: sometimes
    bogus_key: 1
"""
DOCKERFILE = "FROM nginx:latest\nUSER root\nADD http://example.com/x.tar.gz /x\nRUN apt-get install curl\n"
RULES = "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: rate(x[5m]\n"
WORKFLOW = """\
on: pull_request_target
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""
SECRET = "aws_access_key_id = AKIAZ7QW3RT5YUP8KXLM\n"
FILES = {
    "k8s/deploy.yaml": MANIFEST,
    "edge/compose.yaml": COMPOSE,
    "image/Dockerfile": DOCKERFILE,
    "prometheus/rules.yml": RULES,
    ".github/workflows/ci.yml": WORKFLOW,
    "notes/creds.txt": SECRET,
}
NEEDS = {"promtool": "promtool"}


@pytest.fixture(scope="module")
def spellings(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """(working directory, path as given) pairs that all name the same folder of hostile files."""
    top = tmp_path_factory.mktemp("contract")
    real = top / "base" / "hostile files"
    for rel, text in FILES.items():
        (real / rel).parent.mkdir(parents=True, exist_ok=True)
        (real / rel).write_text(text)
    (top / "base" / "elsewhere").mkdir()
    (top / "linked").symlink_to(real)
    (top / "sub").mkdir()
    return [
        (top / "base", "hostile files"),  # relative: before issue 22, every checkov finding was lost
        (top / "sub", str(real)),
        (top / "base" / "elsewhere", "../hostile files"),
        (top, "linked"),
        (top / "sub", "../base/./elsewhere/../hostile files"),
    ]


def _findings(cwd: Path, given: str, tool: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    monkeypatch.chdir(cwd)
    report = review(paths=[Path(given)], tools=[tool])
    assert not report.not_run, report.not_run
    found = [(f, "") for f in report.findings] + [(f, s.check) for f, s in report.skipped]
    return sorted((*_relative(f, str(Path(given))), skipped) for f, skipped in found)


def _relative(finding: Finding, given: str) -> tuple[str, ...]:
    assert finding.file.startswith(given + "/"), finding
    return (finding.tool, finding.rule, finding.severity, finding.file[len(given) + 1 :], finding.resource, finding.message)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_spelling_of_a_path_gives_the_same_findings(
    tool: str, spellings: list[tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    if tool in NEEDS:
        need(bool(__import__("shutil").which(NEEDS[tool])), f"{NEEDS[tool]} is not installed (CI installs it with apt-get)")
    results = [_findings(cwd, given, tool, monkeypatch) for cwd, given in spellings]
    first = results[0]
    assert [f for f in first if f[0] == tool], f"{tool} found nothing in the hostile files"
    assert not [f for f in first if f[1] == "not-reviewed"], first
    for (cwd, given), found in zip(spellings[1:], results[1:], strict=True):
        assert found == first, f"{given!r} from {cwd} differs from {spellings[0][1]!r}"


def test_checkov_names_every_file_it_was_given(spellings: list[tuple[Path, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, given = spellings[0]
    found = _findings(cwd, given, "checkov", monkeypatch)
    files = {f[3] for f in found if f[0] == "checkov" and f[1].startswith("CKV")}
    assert {"k8s/deploy.yaml", "image/Dockerfile", "notes/creds.txt"} <= files, files


def test_a_finding_on_a_file_the_tool_was_not_given_is_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """checkov answering about a path it was not given (as it did for relative paths) gives a
    not-reviewed finding for that path and one for the file it then said nothing about."""
    from slm_deploy.review.tools import checkov

    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    monkeypatch.chdir(tmp_path)
    answer = [("dockerfile", [("/Dockerfile", "/Dockerfile", "CKV_DOCKER_7", "", "x", "latest tag")], ["/Dockerfile"], "", [])]

    class Answered:
        def __init__(self, *_args: object) -> None:
            pass

        def send(self, *_args: object) -> Answered:
            return self

        def result(self) -> object:
            return answer

        def cancel(self) -> None:
            pass

    monkeypatch.setattr(checkov, "Isolated", Answered)
    monkeypatch.setattr(checkov, "prepare", lambda: Answered())
    report = review(paths=[Path("Dockerfile")], tools=["checkov"])
    lost = {(f.file, f.rule) for f in report.findings}
    assert ("/Dockerfile", "not-reviewed") in lost
    assert ("Dockerfile", "not-reviewed") in lost
    assert any("CKV_DOCKER_7" in f.message for f in report.findings)
