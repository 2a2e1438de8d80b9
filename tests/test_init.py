"""`slm-deploy init`: the scaffolded repository for three typical choices runs its README's offline
commands (review with actionlint and zizmor included: zero findings; preview; bundle; verify)
from a folder outside this repository, as a user with the installed package would."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from slm_deploy.scaffold_ci import pinned_actions
from tests.conftest import ROOT, need, need_binary

CHOICES = {
    "defaults": [],
    "ollama-a10": [
        "--runtime",
        "ollama",
        "--model",
        "qwen3-4b",
        "--vm-size",
        "Standard_NC8ads_A10_v4",
        "--stack",
        "dev",
        "--stack",
        "prod",
    ],
    "qwen-a100": [
        "--model",
        "Qwen/Qwen3-8B",
        "--vm-size",
        "Standard_NC24ads_A100_v4",
        "--context",
        "16384",
        "--location",
        "swedencentral",
        "--api-range",
        "20.61.0.0/16",
        "--stack",
        "test",
        "--stack",
        "qa",
        "--stack",
        "live",
        "--edge-gpu",
        "l40s",
    ],
    # docs/day2.md's example: a GRID (vGPU) size, which needs AKS's drivers.
    "ollama-grid": ["--runtime", "ollama", "--model", "qwen3-4b", "--vm-size", "Standard_NV36ads_A10_v5", "--stack", "dev"],
    # Your own build of the server image, on a CPU pool.
    "onnx": ["--runtime", "onnx", "--image", "example.azurecr.io/slm-onnx:1", "--stack", "dev", "--stack", "prod"],
}
# What the scaffold README's offline block runs: onnx builds its image's context first and reviews
# the stacks as files until that image is pushed and locked (its README says so).
OFFLINE = ["plan", "review", "preview", "bundle", "verify"]
OFFLINE_ONNX = ["plan", "image", "review", "preview", "bundle", "verify"]


# A range a user would give (documentation ranges are refused, and there is no default).
RUNNER_RANGE = "20.61.0.0/16"
GIT_URL = "https://github.com/example/slm-deploy.git"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Where CI installs slm-deploy from: the checkout these tests run is a local path no runner can install.
PACKAGE = f"slm-deploy @ git+{GIT_URL}@{COMMIT}"


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m slm_deploy.cli` from a folder outside the repository, stdin not a terminal."""
    if args[:1] == ("init",) and "--api-range" not in args:
        args = (*args, "--api-range", RUNNER_RANGE)
    if args[:1] == ("init",) and "--package" not in args:  # this checkout is not installable on a runner
        args = (*args, "--package", PACKAGE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=timeout,
    )


def readme_offline_commands(readme: str) -> list[str]:
    block = readme.split("<!-- offline:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def workflow_tools() -> None:
    for tool in ("actionlint", "zizmor"):
        need((Path(sys.executable).parent / tool).is_file(), f"{tool} is not installed next to {sys.executable}")
    need_binary("promtool")
    need_binary("shellcheck")  # actionlint checks `run:` scripts with it when it is on PATH


@pytest.mark.tools
@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_scaffold_readme_commands_run_offline_and_review_is_clean(choice: str, tmp_path: Path) -> None:
    workflow_tools()
    repo = tmp_path / "deploy"
    made = cli("init", str(repo), *CHOICES[choice], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    commands = readme_offline_commands((repo / "README.md").read_text())
    assert [c.split()[1] for c in commands] == (OFFLINE_ONNX if choice == "onnx" else OFFLINE)
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "slm-deploy"
        out = cli(*argv[1:], cwd=repo, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
        if argv[1] == "review":
            assert "clean: zero findings" in out.stdout
            for tool in ("actionlint", "zizmor"):  # both workflows went through both linters
                assert re.search(rf"│ {tool}\s+│ 2\s+│ 0\s+│ 0\s+│", out.stdout), out.stdout
            sarif = json.loads((repo / "review.sarif").read_text())
            assert all(not run["results"] for run in sarif["runs"] if run["tool"]["driver"]["name"] in ("actionlint", "zizmor"))
    assert (repo / "out" / "manifests").is_dir() and (repo / "out" / "bundles" / "edge-0001.tar.gz").is_file()


@pytest.mark.tools
def test_review_reports_what_actionlint_and_zizmor_find(tmp_path: Path) -> None:
    workflow_tools()
    repo = tmp_path / "deploy"
    assert cli("init", str(repo), cwd=tmp_path).returncode == 0
    workflow = repo / ".github" / "workflows" / "pull-request.yml"
    text = workflow.read_text()
    text = text.replace("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.4", 1)  # a runner label that does not exist
    text = re.sub(r"actions/setup-python@[0-9a-f]{40}", "actions/setup-python@v7", text, count=1)  # a movable tag
    text = text.replace("run: python -m pip install -r requirements.txt", 'run: echo "${{ github.event.pull_request.title }}"', 1)
    text = text.replace('slm-deploy verify "$box"', "slm-deploy verify $box", 1)  # unquoted: shellcheck SC2086
    workflow.write_text(text)
    out = cli("review", ".github", "--tool", "actionlint", "--tool", "zizmor", "--json", cwd=repo)
    assert out.returncode == 1, out.stderr
    rules = {(f["tool"], f["rule"], f["file"]) for f in json.loads(out.stdout)["findings"]}
    label = ".github/workflows/pull-request.yml"
    assert ("actionlint", "actionlint:runner-label", label) in rules
    assert ("actionlint", "actionlint:shellcheck", label) in rules
    assert ("zizmor", "zizmor:unpinned-uses", label) in rules
    assert ("zizmor", "zizmor:template-injection", label) in rules
    assert not any(f.endswith("deploy.yml") for _, _, f in rules)


def test_every_action_is_pinned_to_a_commit_of_the_catalog(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "r"), cwd=tmp_path).returncode == 0
    actions, _ = pinned_actions()
    known = {a.ref: a.tag for a in actions.values()}
    uses = []
    for workflow in sorted((tmp_path / "r" / ".github" / "workflows").glob("*.yml")):
        for line in workflow.read_text().splitlines():
            if "uses:" in line:
                match = re.fullmatch(r"\s+(?:- )?uses: (\S+@[0-9a-f]{40})  # (v[\d.]+)", line)
                assert match, line
                assert known[match[1]] == match[2]
                uses.append(match[1])
    assert {u.split("@")[0] for u in uses} == {a.uses for a in actions.values()}


def test_workflows_deploy_in_order_behind_environments_with_oidc(tmp_path: Path) -> None:
    assert (
        cli("init", str(tmp_path / "r"), "--stack", "dev", "--stack", "staging", "--stack", "prod", cwd=tmp_path).returncode == 0
    )
    deploy = yaml.safe_load((tmp_path / "r" / ".github" / "workflows" / "deploy.yml").read_text())
    pr = yaml.safe_load((tmp_path / "r" / ".github" / "workflows" / "pull-request.yml").read_text())
    assert deploy["on"] == {"push": {"branches": ["main"]}} and pr["on"] == {"pull_request": {"branches": ["main"]}}
    assert deploy["permissions"] == {} and pr["permissions"] == {}
    jobs = deploy["jobs"]
    assert [(n, j.get("environment"), j["needs"]) for n, j in jobs.items() if n != "bundles"] == [
        ("up-dev", "dev", "bundles"),
        ("up-staging", "staging", "up-dev"),
        ("up-prod", "prod", "up-staging"),
    ]
    for name in ("up-dev", "up-staging", "up-prod"):
        steps = jobs[name]["steps"]
        up_step = next(s for s in steps if s.get("id") == "up")
        env = up_step["env"]  # OIDC (tests/test_init_ci.py): no client secret, no creds
        assert env["ARM_USE_OIDC"] == "true" and "ARM_CLIENT_SECRET" not in env
        assert jobs[name]["permissions"] == {"contents": "read", "id-token": "write"}
        up = up_step["with"]
        assert up["command"] == "up" and up["policyPacks"] == "policies" and up["stack-name"] == name[3:]
    assert "secrets." not in (tmp_path / "r" / ".github" / "workflows" / "deploy.yml").read_text()
    publish = jobs["bundles"]["steps"][-1]
    assert publish["uses"].startswith("actions/upload-artifact@") and publish["with"]["path"] == "out/bundles"
    assert "sha256sum ./*.tar.gz ./*/MANIFEST.json | tee SHA256SUMS" in jobs["bundles"]["steps"][-2]["run"]
    preview = pr["jobs"]["preview"]
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"]
    assert preview["steps"][-1]["with"] | {"stack-name": None} == {
        "command": "preview",
        "stack-name": None,
        "cloud-url": "${{ vars.PULUMI_BACKEND_URL }}",
        "pulumi-version": pinned_actions()[1],
        "policyPacks": "policies",
        "diff": True,
        "comment-on-pr": True,
    }
    review = next(s for s in pr["jobs"]["review"]["steps"] if s.get("name", "").startswith("Review"))
    assert "--sarif review.sarif" in review["run"]
    assert pr["jobs"]["review"]["steps"][-1]["with"]["sarif_file"] == "review.sarif"


def test_scaffold_is_byte_identical_and_wires_the_installed_program(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert cli("init", str(tmp_path / name), cwd=tmp_path).returncode == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    repo = tmp_path / "a"
    assert "from slm_deploy.stacks.entry import main" in (repo / "__main__.py").read_text()
    assert "from slm_deploy.policies.crossguard import build_policies" in (repo / "policies" / "__main__.py").read_text()
    assert yaml.safe_load((repo / "policies" / "PulumiPolicy.yaml").read_text())["runtime"]["options"]["virtualenv"] == "../.venv"
    assert PACKAGE in (repo / "requirements.txt").read_text().splitlines()
    schema = json.loads((ROOT / "slm_deploy" / "schemas" / "pulumi" / "project.json").read_text())
    import jsonschema

    project = yaml.safe_load((repo / "Pulumi.yaml").read_text())
    jsonschema.validate(project, schema)
    assert project["name"] == "slm-deploy" and "main" not in project  # Pulumi runs __main__.py from the folder
    assert {k: v["default"] for k, v in project["config"].items()} == {
        "namespace": "slm",
        "gpuDriver": "operator",
        "gatewayReplicas": 2,
    }
    assert all(v["description"] for v in project["config"].values())


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    assert cli("init", str(repo), cwd=tmp_path).returncode == 0
    fleet = repo / "fleet.yaml"
    fleet.write_text("# mine\n")
    again = cli("init", str(repo), cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.startswith(f"error: {repo}/") and "(use --force)" in again.stderr and again.stderr.count("\n") == 1
    assert fleet.read_text() == "# mine\n"
    forced = cli("init", str(repo), "--force", cwd=tmp_path)
    assert forced.returncode == 0 and fleet.read_text().startswith("# Written by `slm-deploy init`")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stack", "Prod!"], "error: arguments: stacks: Value error, stack name 'Prod!'"),
        (["--api-range", "0.0.0.0/0"], "lets every address reach the API server"),
        # A documentation range: refused by the check of the stack file init would write, before any is written.
        (["--api-range", "203.0.113.0/24"], "203.0.113.0/24 is in the documentation range 203.0.113.0/24"),
        (["--model", "qwen3-32b", "--context", "40960"], "does not fit"),
        (["--vm-size", "Standard_NC999_nope"], "Standard_NC999_nope"),
        (
            ["--model", "qwen3-8b", "--vm-size", "Standard_NC24ads_A100_v4", "--context", "16384", "--edge-gpu", "rtx-4090"],
            "fleet.yaml (as init would write it; nothing written): boxes[0].serving: box edge-0001: qwen3-8b does not fit",
        ),
    ],
)
def test_bad_choices_are_one_error_line_and_write_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    out = cli("init", str(tmp_path / "r"), *args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert message.removeprefix("error: arguments: stacks: Value error, ") in out.stderr
    assert not (tmp_path / "r").exists()


def test_prompts_for_choices_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_deploy import cli, cli_ops

    monkeypatch.setattr(cli_ops, "_interactive", lambda: True)
    result = CliRunner().invoke(
        cli.main,
        ["init", str(tmp_path / "r"), "--package", PACKAGE],
        input="qwen3-4b\nollama\n\nnortheurope\n20.61.0.0/16, 20.62.0.0/16\n",
    )
    assert result.exit_code == 0, result.output
    assert "model [phi-4-mini-instruct]:" in result.output and "vm size [Standard_NC8as_T4_v3]:" in result.output
    dev = yaml.safe_load((tmp_path / "r" / "Pulumi.dev.yaml").read_text())["config"]
    assert dev["azure-native:location"] == "northeurope"
    assert dev["slm-deploy:models"][0]["model"] == "qwen3-4b" and dev["slm-deploy:models"][0]["runtime"] == "ollama"
    assert dev["slm-deploy:cluster"]["apiServer"]["authorizedIpRanges"] == ["20.61.0.0/16", "20.62.0.0/16"]


def test_init_without_api_ranges_is_refused_not_guessed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", "init", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: arguments: --api-range: required"), result.stderr
    assert not (tmp_path / "repo").exists()


# The scaffold's requirements.txt must name an slm-deploy that pip can install on a fresh CI runner.
# slm-deploy is not published on a public index, so a bare `slm-deploy==VERSION` only resolves where
# the user's own index carries it; otherwise every job of the scaffolded workflows fails at
# `pip install -r requirements.txt` (and an unrelated project of that name could be installed).
LOCAL_INSTALLS = [
    {"url": "file:///tmp/rw/slm_deploy-0.1.0-py3-none-any.whl", "archive_info": {}},
    {"url": "file:///work/main", "dir_info": {"editable": True}},
]


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (None, "slm-deploy=={v}"),  # installed from an index: that index has this version
        (
            {"url": GIT_URL, "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"}},
            f"slm-deploy @ git+{GIT_URL}@{COMMIT}",
        ),
        (
            {"url": GIT_URL, "vcs_info": {"vcs": "git", "commit_id": COMMIT}, "subdirectory": "py"},
            f"slm-deploy @ git+{GIT_URL}@{COMMIT}#subdirectory=py",
        ),
        (
            {
                "url": "https://files.example.org/slm_deploy-0.1.0-py3-none-any.whl",
                "archive_info": {"hashes": {"sha256": "ab" * 32}},
            },
            "slm-deploy @ https://files.example.org/slm_deploy-0.1.0-py3-none-any.whl#sha256=" + "ab" * 32,
        ),
    ],
)
def test_requirement_installs_the_slm_deploy_that_wrote_the_scaffold(direct_url: dict | None, expected: str) -> None:
    from slm_deploy import __version__
    from slm_deploy.scaffold_ci import requirement_from_direct_url

    assert requirement_from_direct_url(direct_url) == expected.format(v=__version__)


@pytest.mark.parametrize("direct_url", LOCAL_INSTALLS)
def test_init_from_a_local_install_needs_package_and_writes_nothing(
    direct_url: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from a local folder or wheel file, no runner can install this slm-deploy, and a bare
    `slm-deploy==VERSION` would install whatever an index serves under that name, in jobs that hold
    id-token: write. init wrote that pin with a note; now it refuses: one line, exit 2, no file."""
    from slm_deploy import cli as cli_module
    from slm_deploy import scaffold_ci

    monkeypatch.setattr(scaffold_ci, "installed_requirement", lambda: scaffold_ci.requirement_from_direct_url(direct_url))
    result = CliRunner().invoke(cli_module.main, ["init", str(tmp_path / "r"), "--api-range", RUNNER_RANGE])
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert result.stderr.startswith("error: arguments: --package: required") and result.stderr.count("\n") == 1
    assert direct_url["url"] in result.stderr
    assert "git+https://" in result.stderr and "#sha256=" in result.stderr  # a commit or a hash, never a bare name
    with_package = CliRunner().invoke(
        cli_module.main, ["init", str(tmp_path / "r"), "--api-range", RUNNER_RANGE, "--package", PACKAGE]
    )
    assert with_package.exit_code == 0, with_package.output
    assert PACKAGE in (tmp_path / "r" / "requirements.txt").read_text().splitlines()


def test_package_option_names_where_ci_installs_slm_deploy_from(tmp_path: Path) -> None:
    spec = f"slm-deploy @ git+{GIT_URL}@{COMMIT}"
    done = cli("init", str(tmp_path / "repo"), "--package", spec, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert spec in (tmp_path / "repo" / "requirements.txt").read_text().splitlines()
    assert "note:" not in done.stderr
    bad = cli("init", str(tmp_path / "other"), "--package", "requests==2.0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: arguments: package:"), bad.stderr
    assert not (tmp_path / "other").exists()


def test_the_ci_review_runs_every_validator_and_can_upload_its_sarif(tmp_path: Path) -> None:
    """The PR review must never pass as INCOMPLETE: promtool is not a pip package (Debian/Ubuntu
    `prometheus`), so the job installs it and asks for every tool (--require-tools, exit 2 when one
    is missing). upload-sarif reads the workflow run, which a private repository's token may only do
    with `actions: read` (github/codeql-action README, "actions: read ... only required for
    workflows in private repositories")."""
    assert cli("init", str(tmp_path / "r"), cwd=tmp_path).returncode == 0
    pr = yaml.safe_load((tmp_path / "r" / ".github" / "workflows" / "pull-request.yml").read_text())
    job = pr["jobs"]["review"]
    assert job["permissions"] == {"contents": "read", "security-events": "write", "actions": "read"}
    names = [s.get("name", "") for s in job["steps"]]
    review = next(s for s in job["steps"] if s.get("name", "").startswith("Review"))
    assert "--require-tools" in review["run"].split()
    install = next(s for s in job["steps"] if "promtool" in s.get("name", ""))
    assert "apt-get install" in install["run"] and " prometheus" in install["run"]
    assert names.index(install["name"]) < names.index(review["name"])


def test_the_scaffold_pins_real_digests_before_anything_deploys(tmp_path: Path) -> None:
    """A new repository has no images.lock.yaml, so it is pinned by the packaged example lock, whose
    digests are not on the real registries. Its README says to run `slm-deploy lock` and commit the
    file, and every pull request runs `slm-deploy lock --check`, which fails while the lock is missing
    (and when a tag has moved)."""
    assert cli("init", str(tmp_path / "r"), cwd=tmp_path).returncode == 0
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "slm-deploy lock" in readme and "images.lock.yaml" in readme
    assert "slm-deploy lock" not in readme.split("<!-- offline:", 1)[1].split("```", 2)[1]  # needs internet
    pr = yaml.safe_load((tmp_path / "r" / ".github" / "workflows" / "pull-request.yml").read_text())
    runs = {name: [s.get("run", "") for s in job["steps"]] for name, job in pr["jobs"].items()}
    assert any("slm-deploy lock --check" in r for r in runs.get("lock", [])), runs.keys()
    assert pr["jobs"]["lock"]["permissions"] == {"contents": "read"}


def test_the_scaffold_installs_with_the_pins_slm_deploy_was_tested_with(tmp_path: Path) -> None:
    """requirements.txt named slm-deploy alone: every CI run resolved the newest pulumi, providers and
    checkov that the ranges allow, so the `pulumi up` on main could run other provider versions than
    the preview reviewed on the pull request, and a Pulumi SDK newer than the pinned CLI."""
    assert cli("init", str(tmp_path / "r"), cwd=tmp_path).returncode == 0
    repo = tmp_path / "r"
    lines = [ln for ln in (repo / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "-c constraints.txt"
    pins = dict(ln.split("==", 1) for ln in (repo / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#"))
    tested = dict(ln.split("==", 1) for ln in (ROOT / "constraints.txt").read_text().splitlines() if "==" in ln)
    assert pins == tested
    assert pins["pulumi"] == pinned_actions()[1]  # the SDK of the CLI the workflows install


@pytest.mark.parametrize("package", [PACKAGE.replace("example", "OWNER"), f"slm-deploy @ git+{GIT_URL}@FULL_COMMIT_SHA"])
def test_a_package_with_a_placeholder_is_refused_before_anything_is_written(package: str, tmp_path: Path) -> None:
    """requirements.txt gets the line, and the scaffold README's first command installs it: a
    placeholder from the docs (OWNER, FULL_COMMIT_SHA) would make that command fail."""
    out = cli("init", str(tmp_path / "r"), "--package", package, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: arguments: package: ") and "is a placeholder" in out.stderr
    assert not (tmp_path / "r").exists()


def test_prompts_ask_for_the_package_a_local_install_cannot_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This checkout is a local install: init on a terminal asks where CI installs slm-deploy from,
    instead of ending its questions with a `--package` error."""
    from slm_deploy import cli as cli_module
    from slm_deploy import cli_ops, scaffold_ci

    monkeypatch.setattr(cli_ops, "_interactive", lambda: True)  # init lives in cli_ops
    monkeypatch.setattr(scaffold_ci, "installed_requirement", lambda: scaffold_ci.requirement_from_direct_url(LOCAL_INSTALLS[0]))
    result = CliRunner().invoke(cli_module.main, ["init", str(tmp_path / "r")], input=f"\n\n\n\n{RUNNER_RANGE}\n{PACKAGE}\n")
    assert result.exit_code == 0, result.output
    assert "requirements.txt line CI installs slm-deploy with" in result.output
    assert PACKAGE in (tmp_path / "r" / "requirements.txt").read_text().splitlines()


def test_prompts_for_runtime_onnx_ask_for_its_image_and_a_cpu_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_deploy import cli as cli_module
    from slm_deploy import cli_ops

    monkeypatch.setattr(cli_ops, "_interactive", lambda: True)  # init lives in cli_ops
    result = CliRunner().invoke(
        cli_module.main,
        ["init", str(tmp_path / "r"), "--package", PACKAGE],
        input=f"\nonnx\n\nexample.azurecr.io/slm-onnx:1\n\n{RUNNER_RANGE}\n",
    )
    assert result.exit_code == 0, result.output
    assert "vm size [Standard_D8ds_v5]:" in result.output and "image your onnx server build is pushed to" in result.output
    dev = yaml.safe_load((tmp_path / "r" / "Pulumi.dev.yaml").read_text())["config"]
    assert dev["slm-deploy:cpuPools"][0]["vmSize"] == "Standard_D8ds_v5" and "slm-deploy:gpuPools" not in dev
    assert dev["slm-deploy:models"][0] | {"autoscaling": None} == {
        "name": "phi-4-mini-instruct",
        "pool": "cpu",
        "model": "phi-4-mini-instruct",
        "runtime": "onnx",
        "context": 8192,
        "image": "example.azurecr.io/slm-onnx:1",
        "autoscaling": None,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "onnx"], "runtime onnx serves your own build of its server image"),
        (["--image", "example.azurecr.io/x:1"], "--image is for runtime onnx only"),
        (["--vm-size", "Standard_NV36ads_A10_v5", "--gpu-driver", "operator"], "GRID (vGPU) family"),
    ],
)
def test_choices_init_cannot_complete_are_refused_naming_the_choice(args: list[str], message: str, tmp_path: Path) -> None:
    out = cli("init", str(tmp_path / "r"), *args, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert "Pulumi.dev.yaml:" not in out.stderr  # a file init never wrote is not named as if it existed
    if "GRID" in message:
        assert out.stderr.startswith("error: Pulumi.dev.yaml (as init would write it; nothing written): ")
    assert not (tmp_path / "r").exists()


def test_a_grid_size_gets_aks_drivers(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "r"), *CHOICES["ollama-grid"], cwd=tmp_path).returncode == 0
    dev = yaml.safe_load((tmp_path / "r" / "Pulumi.dev.yaml").read_text())["config"]
    assert dev["slm-deploy:gpuDriver"] == "aks" and dev["slm-deploy:gpuPools"][0]["vmSize"] == "Standard_NV36ads_A10_v5"
    assert cli("init", str(tmp_path / "t4"), cwd=tmp_path).returncode == 0
    assert "slm-deploy:gpuDriver" not in yaml.safe_load((tmp_path / "t4" / "Pulumi.dev.yaml").read_text())["config"]


def test_the_scaffold_never_advises_a_refused_private_api_server(tmp_path: Path) -> None:
    """AKS-28: `private: true` is refused by the program (a runner outside the VNet could never reach it)."""
    assert cli("init", str(tmp_path / "r"), cwd=tmp_path).returncode == 0
    for path in sorted((tmp_path / "r").rglob("*")):
        if path.is_file():
            assert "private: true" not in path.read_text(), path


def test_each_stack_set_up_as_the_readme_says_deploys_as_a_service_principal(tmp_path: Path) -> None:
    """AKS-04: the workflows deploy as an Entra application or managed identity; a role assignment
    for it that says `User` is refused by ARM. The README has the user set each stack's
    cluster.deployerObjectId; the stack file that results reads through the program, whose principal
    type for a set deployerObjectId is ServicePrincipal (cluster.deployerPrincipalType's default)."""
    from slm_deploy.stackfile import read_config

    repo = tmp_path / "r"
    assert cli("init", str(repo), "--stack", "dev", "--stack", "prod", cwd=tmp_path).returncode == 0
    readme = (repo / "README.md").read_text()
    for stack in ("dev", "prod"):
        line = next(ln for ln in readme.splitlines() if f"--stack {stack} --path 'slm-deploy:cluster.deployerObjectId'" in ln)
        assert line.split()[-1] == f"OBJECT_ID_OF_deploy-{stack}"
        config = yaml.safe_load((repo / f"Pulumi.{stack}.yaml").read_text())["config"]
        config["slm-deploy:cluster"]["deployerObjectId"] = "00000000-0000-4000-8000-000000000001"
        env = read_config(stack, {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("slm-deploy:")}, "x")
        assert getattr(env.spec.cluster, "principal_type", "ServicePrincipal") == "ServicePrincipal"


def test_each_deploy_job_opens_the_api_server_to_its_runner_and_closes_it_again(tmp_path: Path) -> None:
    """AKS-05: a GitHub-hosted runner's address is in no stack's ranges. The job's step adds it to the
    stack file for its `pulumi up` (run here for real, with a fake `curl`), and an always() step puts
    the cluster's ranges back with `az aks update --api-server-authorized-ip-ranges`."""
    import shutil

    repo = tmp_path / "r"
    assert cli("init", str(repo), "--stack", "dev", "--stack", "prod", cwd=tmp_path).returncode == 0
    deploy = yaml.safe_load((repo / ".github" / "workflows" / "deploy.yml").read_text())
    for job in ("up-dev", "up-prod"):
        ids = [s.get("id") for s in deploy["jobs"][job]["steps"]]
        assert ids.index("reach") < ids.index("up") < len(ids) - 1
        close = deploy["jobs"][job]["steps"][-1]
        assert close["if"] == "always() && steps.reach.outputs.ranges != ''"
        assert 'az aks update --resource-group "$group" --name "$CLUSTER"' in close["run"]
        assert '--api-server-authorized-ip-ranges "$RANGES"' in close["run"]
        assert close["env"]["RANGES"] == "${{ steps.reach.outputs.ranges }}"
    reach = next(s for s in deploy["jobs"]["up-prod"]["steps"] if s.get("id") == "reach")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "curl").write_text("#!/bin/sh\necho 20.100.1.2\n")
    (fake / "curl").chmod(0o755)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    output = tmp_path / "github-output"
    env = {**os.environ, **reach["env"], "PATH": f"{fake}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output)}
    done = subprocess.run([shutil.which("bash") or "bash", "-e", "-c", reach["run"]], cwd=repo, env=env, check=False)
    assert done.returncode == 0
    assert output.read_text() == f"ranges={RUNNER_RANGE}\n"
    prod = yaml.safe_load((repo / "Pulumi.prod.yaml").read_text())["config"]
    assert prod["slm-deploy:cluster"]["apiServer"]["authorizedIpRanges"] == [RUNNER_RANGE, "20.100.1.2/32"]
    from slm_deploy.stackfile import read_config

    read_config("prod", {k.split(":", 1)[1]: v for k, v in prod.items() if k.startswith("slm-deploy:")}, "Pulumi.prod.yaml")
