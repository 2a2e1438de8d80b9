"""Review under hostile input: never "clean" about what it did not read, never a traceback,
never a secret value printed, never a link followed out of the reviewed tree (issue 10, 1-3, 17)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slm_deploy.review import TEXT_LIMIT, review
from tests.conftest import ROOT, run_cli

BAD_COMPOSE = "services:\n  app:\n    image: nginx:latest\n"
AWS_ID = "AKIAZ7QW3RT5YUP8KXLM"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Nb3KLmQ"
GITHUB = "ghp_4fT9kLm2QwErTyUiOp1AsDfGhJkLzXcVbN3q"
SLACK = "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/abcdefghijklmnopqrstuvwx"


def _not_reviewed(report: object) -> dict[str, str]:
    return {f.file: f.message for f in report.findings if f.rule == "not-reviewed"}  # type: ignore[attr-defined]


def test_a_file_too_large_to_review_is_listed_and_the_review_is_not_clean(tmp_path: Path) -> None:
    big = tmp_path / "compose.yaml"
    big.write_text(BAD_COMPOSE + "#" * (TEXT_LIMIT + 10) + "\n")
    result = run_cli("review", str(tmp_path), "--tool", "slm", "--json")
    assert result.returncode == 1, result.stdout
    data = json.loads(result.stdout)
    assert data["clean"] is False
    [item] = [f for f in data["findings"] if f["rule"] == "not-reviewed"]
    assert item["file"].endswith("compose.yaml") and "too large" in item["message"]


def test_a_fifo_given_as_the_path_is_not_reviewed_and_not_clean(tmp_path: Path) -> None:
    fifo = tmp_path / "compose.yaml"
    os.mkfifo(fifo)
    result = run_cli("review", str(fifo), "--tool", "slm")
    assert result.returncode == 1
    assert "not-reviewed" in result.stdout and "FIFO" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_fifo_inside_the_tree_is_listed(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text((ROOT / "tests/fixtures/policies/base/compose.yaml").read_text())
    os.mkfifo(tmp_path / "pipe.yaml")
    report = review(paths=[tmp_path], tools=["slm"])
    assert "FIFO" in _not_reviewed(report)[f"{tmp_path}/pipe.yaml"]
    assert not report.clean


def test_reviewing_nothing_is_not_clean(tmp_path: Path) -> None:
    report = review(paths=[tmp_path], tools=["slm"])
    assert not report.clean
    assert [f.rule for f in report.findings] == ["nothing-reviewed"]


def test_a_compose_file_under_secrets_is_still_reviewed_and_secret_values_are_not_printed(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "compose.yaml").write_text(BAD_COMPOSE)
    (tmp_path / "secrets" / "api_key").write_text("sk-live-0123456789abcdefXYZ\n")
    result = run_cli("review", str(tmp_path), "--tool", "slm", "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 1
    assert any(f["rule"] == "SLM-COMPOSE-001" and f["file"].endswith("secrets/compose.yaml") for f in data["findings"])
    assert not any(f["file"].endswith("api_key") for f in data["findings"])  # a secret file holds a secret by design
    assert "0123456789abcdef" not in result.stdout + result.stderr


def test_a_symlink_leaving_the_tree_is_not_followed_and_is_reported(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow.yaml").write_text("password: hunter2hunter2\nhf: hf_" + "a" * 34 + "\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "compose.yaml").write_text((ROOT / "tests/fixtures/policies/base/compose.yaml").read_text())
    (tree / "shadow.yaml").symlink_to(outside / "shadow.yaml")
    (tree / "etc").symlink_to(outside)
    report = review(paths=[tree], tools=["slm"])
    problems = _not_reviewed(report)
    assert "leaves the reviewed tree" in problems[f"{tree}/shadow.yaml"]
    assert "leaves the reviewed tree" in problems[f"{tree}/etc"]
    assert not any(f.rule.startswith("SLM-SECRET") for f in report.findings)  # its content was never read


def test_credentials_of_well_known_services_are_found_without_printing_them(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    environment:\n"
        f"      - AWS_ACCESS_KEY_ID={AWS_ID}\n"
        f"      - aws_secret_access_key='{AWS_SECRET}'\n"
        f"      - GH={GITHUB}\n"
        f"      - HOOK={SLACK}\n"
    )
    result = run_cli("review", str(tmp_path), "--tool", "detect-secrets", "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 1
    kinds = {f["message"] for f in data["findings"]}
    assert {"AWS Access Key", "GitHub Token", "Slack Token"} <= kinds, kinds
    lines = {f["resource"] for f in data["findings"]}
    assert {"line 4", "line 6", "line 7"} <= lines
    for value in (AWS_ID, AWS_SECRET, GITHUB, SLACK):
        assert value not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("compose.yaml", "services:\n  - app\n  - db\n"),
        ("compose.yaml", "services: just-a-string\n"),
        ("compose.yaml", "services:\n  app: 3\n"),
        ("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: a-string\nspec: also-a-string\n"),
        ("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: 7\n"),
        ("compose.yaml", "services: [\n"),
        (
            "bomb.yaml",
            "a: &a [x,x,x,x,x,x,x,x,x]\n"
            + "".join(f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
        ),
    ],
)
def test_malformed_files_give_findings_not_tracebacks(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    result = run_cli("review", str(tmp_path), "--tool", "slm", "--tool", "kubernetes-validate", "--tool", "yamllint", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["findings"]


def test_binary_files_are_listed_not_decoded(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_bytes(b"services:\n  app:\n    image: \xff\xfe\x00x\n")
    result = run_cli("review", str(tmp_path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    [item] = [f for f in data["findings"] if f["rule"] == "not-reviewed"]
    assert "not UTF-8" in item["message"]


def test_an_unwritable_sarif_path_is_one_error_line(tmp_path: Path) -> None:
    target = ROOT / "tests/fixtures/policies/base/compose.yaml"
    result = run_cli("review", str(target), "--tool", "slm", "--sarif", str(tmp_path / "no" / "such" / "dir" / "x.sarif"))
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert "x.sarif" in result.stderr


def test_every_tool_meets_malformed_files_without_a_traceback(tmp_path: Path) -> None:
    files = {
        "a/compose.yaml": "services:\n  - app\n",
        "b/compose.yaml": "services: text\n",
        "c/pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata: a-string\nspec: also\n",
        "d/pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: 7\n",
        "e/Dockerfile": "FROM\nUSER\nRUN\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    result = run_cli("review", str(tmp_path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    assert {f["file"].removeprefix(str(tmp_path) + "/") for f in findings} >= set(files)
    assert any(f["rule"] == "checkov-not-run" and f["file"].endswith("c/pod.yaml") for f in findings)


def test_an_alias_bomb_is_not_handed_to_any_tool(tmp_path: Path) -> None:
    """checkov and the compose binary expand aliases: before, this review never finished."""
    import subprocess
    import sys

    bomb = "services:\n  a: &a {x: [1,1,1,1,1,1,1,1,1]}\n" + "".join(
        f"  {c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefghi", "bcdefghij", strict=True)
    )
    (tmp_path / "compose.yaml").write_text(bomb)
    result = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "review", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,  # a guard against the old hang, not a measurement
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [item] = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == "not-reviewed"]
    assert "aliases are expanded" in item["message"]


def test_checkov_parser_tables_are_cached_only_where_no_one_else_may_write(tmp_path: Path) -> None:
    """checkov's HCL parser (python-hcl2 through Lark) built its tables on every review, in the
    review's own temporary folder; they are now kept in the user's cache folder. Lark reads them
    back with pickle, so a folder others may write to is never read: a planted file runs nothing."""
    import pickle
    import stat
    import subprocess
    import sys

    cache = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()
    (work / "Dockerfile").write_text("FROM scratch\nUSER 10001\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}

    def review_it() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "slm_deploy.cli", "review", str(work), "--tool", "checkov", "--json"]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    first = review_it()
    assert first.returncode in (0, 1) and "Traceback" not in first.stderr, first.stderr[-2000:]
    folder = cache / "slm-deploy" / "lark"
    [tables] = list(folder.iterdir())
    assert tables.name.startswith(".lark_cache_") and stat.S_IMODE(folder.stat().st_mode) == 0o700

    class Planted:  # unpickling it makes a folder: the proof that the file was read
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.mkdir, (str(tmp_path / "unpickled"),)

    tables.write_bytes(b"planted\n" + pickle.dumps(Planted()))
    folder.chmod(0o777)
    second = review_it()
    assert not (tmp_path / "unpickled").exists()
    assert second.returncode == first.returncode and json.loads(second.stdout) == json.loads(first.stdout)
    folder.chmod(0o700)  # this user's own again: the file is read (so the check above could fail)
    review_it()
    assert (tmp_path / "unpickled").is_dir()


def test_checkov_parser_cache_makes_nothing_in_a_home_that_is_not_this_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as root with a user's HOME (sudo keeps it), the cache folder was made there first and
    refused after: root's folders in the user's home, where the user's own reviews could then not
    make theirs. Now nothing is made under a folder that is not this user's."""
    from slm_deploy.review.tools import checkov

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(checkov.os, "geteuid", lambda: os.stat(cache).st_uid + 1)  # someone else's
    assert checkov.held_parser_cache() is None
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    held = checkov.held_parser_cache()  # this user's own: made, 0700, and held
    assert held is not None
    os.close(held)
    assert oct((cache / "slm-deploy" / "lark").stat().st_mode & 0o777) == oct(0o700)
