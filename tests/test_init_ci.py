"""The scaffolded workflows' access to Azure and code scanning (outside review of issue 16):
tokens that last as long as a `pulumi up` of AKS with GPU pools, a pull-request identity that
cannot write state or deploy, and a review that still delivers its SARIF where code scanning is off."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from slm_deploy.scaffold_ci import ci_facts
from tests.test_init import cli

STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ci")
    args = [a for s in STACKS for a in ("--stack", s)]
    made = cli("init", str(root / "r"), *args, cwd=root)
    assert made.returncode == 0, made.stderr
    return root / "r"


def workflow(repo: Path, name: str) -> dict[str, Any]:
    return yaml.safe_load((repo / ".github" / "workflows" / name).read_text())


def pulumi_jobs(repo: Path) -> dict[str, dict[str, Any]]:
    deploy, pr = workflow(repo, "deploy.yml"), workflow(repo, "pull-request.yml")
    jobs = {name: job for name, job in deploy["jobs"].items() if name.startswith("up-")}
    jobs["preview"] = pr["jobs"]["preview"]
    return jobs


def pulumi_step(job: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@") and s.get("with", {}).get("command"))


# 1 -------------------------------------------------------------------------------------------
def test_a_long_pulumi_up_gets_fresh_azure_tokens_without_an_azure_cli_session(repo: Path) -> None:
    """An Azure CLI login from azure/login keeps one GitHub ID token (5 minutes): kubelogin in azurecli
    mode, the state backend and Key Vault failed with AADSTS700024 once a new token was needed, i.e.
    after the 60-90 minutes an AKS cluster with GPU pools can take. Every consumer now asks GitHub for
    a fresh ID token itself (azure-native: ARM_USE_OIDC; kubelogin: workloadidentity; state and Key
    Vault: a federated token file rewritten every minute)."""
    facts = ci_facts()
    jobs = pulumi_jobs(repo)
    assert set(jobs) == {"up-dev", "up-staging", "up-prod", "preview"}
    for name, job in jobs.items():
        uses = [s.get("uses", "").split("@")[0] for s in job["steps"]]
        assert "azure/login" not in uses, name  # no Azure CLI session to expire
        assert job["permissions"]["id-token"] == "write"
        env = pulumi_step(job)["env"]
        assert env["ARM_USE_OIDC"] == "true"
        assert not {"ARM_OIDC_TOKEN", "ARM_OIDC_TOKEN_FILE_PATH", "ARM_CLIENT_SECRET"} & set(env)  # read once: they expire
        assert env["ARM_CLIENT_ID"] == env["AZURE_CLIENT_ID"] and env["ARM_TENANT_ID"] == env["AZURE_TENANT_ID"]
        assert env["ARM_SUBSCRIPTION_ID"] == "${{ vars.AZURE_SUBSCRIPTION_ID }}"
        assert env["AZURE_FEDERATED_TOKEN_FILE"] == "${{ runner.temp }}/azure-federated-token"
        names = [s.get("name", "") for s in job["steps"]]
        refresher = next(i for i, s in enumerate(job["steps"]) if "federated token" in s.get("name", ""))
        kubelogin = next(i for i, s in enumerate(job["steps"]) if s.get("uses", "").startswith("azure/use-kubelogin@"))
        assert job["steps"][kubelogin]["with"] == {"kubelogin-version": facts["kubelogin"]["version"]}
        assert max(refresher, kubelogin) < names.index(pulumi_step(job)["name"])
        assert job["steps"][refresher]["env"]["AZURE_FEDERATED_TOKEN_FILE"] == env["AZURE_FEDERATED_TOKEN_FILE"]
    for stack in STACKS:  # the program's kubeconfig logs in with the workload identity, not the CLI
        config = yaml.safe_load((repo / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert config["slm-deploy:cluster"]["kubeloginMode"] == "workloadidentity"


def test_the_kubeconfig_in_workload_identity_mode_takes_the_identity_from_the_environment() -> None:
    """kubelogin reads AZURE_CLIENT_ID only when no --client-id is given; the AKS kubeconfig carries
    the Azure CLI's public client id, which would be the wrong identity."""
    from slm_deploy.preview import MOCK_KUBECONFIG
    from slm_deploy.stacks.azure.kubeconfig import non_interactive_kubeconfig

    exec_ = yaml.safe_load(non_interactive_kubeconfig(MOCK_KUBECONFIG, "workloadidentity"))["users"][0]["user"]["exec"]
    assert "--client-id" not in exec_["args"] and exec_["args"][-2:] == ["--login", "workloadidentity"]
    assert {"name": "AAD_LOGIN_METHOD", "value": "workloadidentity"} in exec_["env"]


class _FakeGitHubTokens(http.server.BaseHTTPRequestHandler):
    """GitHub's ID token endpoint, as the runner exposes it in ACTIONS_ID_TOKEN_REQUEST_URL."""

    requests: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        type(self).requests.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"value": f"id-token-{len(type(self).requests)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_federated_token_file_is_written_and_kept_fresh(repo: Path, tmp_path: Path) -> None:
    """The step's script, run as the runner would (bash -e), against a loopback stand-in for GitHub's
    token endpoint: the file holds a token for audience api://AzureADTokenExchange, readable by the
    job's user only, and is rewritten by a loop that outlives the step."""
    job = workflow(repo, "deploy.yml")["jobs"]["up-dev"]
    step = next(s for s in job["steps"] if "federated token" in s.get("name", ""))
    seconds = ci_facts()["token_refresh_seconds"]
    assert f"sleep {seconds}" in step["run"]
    script = step["run"].replace(f"sleep {seconds}", "sleep 0.2")  # the same loop, faster
    _FakeGitHubTokens.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGitHubTokens)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_file = tmp_path / "azure-federated-token"
    env = {
        "PATH": os.environ["PATH"],
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
    }
    pid_file = tmp_path / "loop.pid"
    loop_pid = None
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", script + f'\necho "$!" > {pid_file}'],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        loop_pid = int(pid_file.read_text())
        assert token_file.read_text() == "id-token-1"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        path, auth = _FakeGitHubTokens.requests[0]
        assert path == "/token?api-version=2.0&audience=api://AzureADTokenExchange" and auth == "bearer request-token"
        deadline = time.monotonic() + 20
        while token_file.read_text() in ("id-token-1", "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert token_file.read_text().startswith("id-token-") and token_file.read_text() != "id-token-1"
    finally:
        if loop_pid:
            os.kill(loop_pid, signal.SIGTERM)
        server.shutdown()
        server.server_close()


# 2 -------------------------------------------------------------------------------------------
def test_pull_requests_run_with_their_own_identity_that_cannot_deploy_or_write_state(repo: Path) -> None:
    """Pull requests run code from the pull request: they used the deploying identity (Contributor,
    role assignments, Storage Blob Data Contributor on the state). Now the preview has its own
    identity (a repository variable) and each environment its deploying one (an environment
    variable, reachable only by jobs that passed the environment's protection rules)."""
    pr_text = (repo / ".github" / "workflows" / "pull-request.yml").read_text()
    assert "AZURE_DEPLOY_CLIENT_ID" not in pr_text and "vars.AZURE_CLIENT_ID" not in pr_text
    for name, job in pulumi_jobs(repo).items():
        env = pulumi_step(job)["env"]
        expected = "AZURE_PREVIEW_CLIENT_ID" if name == "preview" else "AZURE_DEPLOY_CLIENT_ID"
        assert env["ARM_CLIENT_ID"] == env["AZURE_CLIENT_ID"] == "${{ vars." + expected + " }}", name
        assert ("environment" in job) == (name != "preview")
    readme = (repo / "README.md").read_text()
    preview = [line for line in readme.splitlines() if "`repo:OWNER/REPO:pull_request`" in line]
    assert len(preview) == 1 and "`AZURE_PREVIEW_CLIENT_ID`" in preview[0]
    assert "Storage Blob Data Reader" in preview[0] and "Contributor" not in preview[0] and "Administrator" not in preview[0]
    for stack in STACKS:
        rows = [line for line in readme.splitlines() if f"`repo:OWNER/REPO:environment:{stack}`" in line]
        assert len(rows) == 1 and "`AZURE_DEPLOY_CLIENT_ID`" in rows[0] and f"environment `{stack}`" in rows[0]
        assert "Storage Blob Data Contributor" in rows[0]
    assert "forbidden" in readme and "read the stack's secrets" in readme  # what the read-only preview cannot do, and can


# 3 -------------------------------------------------------------------------------------------
def test_the_review_delivers_its_sarif_where_code_scanning_is_off(repo: Path) -> None:
    """upload-sarif fails in a private repository without GitHub Code Security, which failed the
    review job even with zero findings. The SARIF is now always kept as an artifact, and sent to code
    scanning in public repositories or where the CODE_SCANNING variable says it is enabled."""
    job = workflow(repo, "pull-request.yml")["jobs"]["review"]
    names = [s.get("name", "") for s in job["steps"]]
    review = names.index(next(n for n in names if n.startswith("Review")))
    artifact = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert names.index(artifact["name"]) > review and artifact["if"] == "always()"
    assert artifact["with"]["path"] == "review.sarif" and artifact["with"]["if-no-files-found"] == "error"
    sarif = next(s for s in job["steps"] if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    variable = ci_facts()["code_scanning"]["variable"]
    assert sarif["if"] == (
        f"always() && (vars.{variable} == 'true' || (vars.{variable} != 'false' && !github.event.repository.private))"
    )
    assert "continue-on-error" not in sarif  # a real upload failure still shows
    readme = (repo / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| pull request | `review`"))
    assert f"`{variable}`" in row and f"`{artifact['with']['name']}`" in row


# Outside review B ------------------------------------------------------------------------------
def upload_rule(action_id: str) -> dict[str, Any]:
    """What catalog/actions.yaml records (with its source) about the files an upload action leaves out."""
    from slm_deploy.scaffold_ci import ACTIONS_FILE

    entry = next(a for a in yaml.safe_load(ACTIONS_FILE.read_text())["actions"] if a["id"] == action_id)
    assert entry["hidden_files"]["source"]
    return dict(entry["hidden_files"])


def artifact_files(root: Path, inputs: dict[str, Any]) -> list[Path]:
    """The files actions/upload-artifact puts in the artifact for these `with:` inputs, per the
    catalog's rule: a file or folder whose name starts with '.' is left out unless the input is true."""
    rule = upload_rule("upload-artifact")
    include_hidden = str(inputs.get(rule["input"], rule["default"])).lower() == "true"
    kept = []
    for line in str(inputs["path"]).splitlines():
        base = root / line.strip()
        for path in sorted(base.rglob("*")) if base.is_dir() else [base]:
            rel = path.relative_to(base)
            if path.is_file() and (include_hidden or not any(part.startswith(".") for part in rel.parts)):
                kept.append(path)
    return kept


def test_the_published_bundles_verify_as_they_are_downloaded(repo: Path, tmp_path: Path) -> None:
    """upload-artifact leaves hidden files out by default (include-hidden-files: false), and every
    bundle lists `.env.example` in its MANIFEST.json: the `edge-bundles` artifact a user downloads
    failed `slm-deploy verify` with `missing: .env.example`. What the artifact holds now verifies."""
    work = tmp_path / "checkout"
    shutil.copytree(repo, work)
    built = cli("bundle", "fleet.yaml", "--out", "out/bundles", "--tar", cwd=work)
    assert built.returncode == 0, built.stderr
    job = workflow(work, "deploy.yml")["jobs"]["bundles"]
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == "out/bundles"
    downloaded = tmp_path / "edge-bundles"
    for path in artifact_files(work, upload["with"]):
        target = downloaded / path.relative_to(work / "out" / "bundles")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    boxes = sorted(p for p in downloaded.iterdir() if p.is_dir())
    assert [b.name for b in boxes] == ["edge-0001"] and (downloaded / "edge-0001.tar.gz").is_file()
    for box in boxes:
        done = cli("verify", str(box), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_preview_identity_has_its_roles_before_and_after_the_first_deploy(repo: Path) -> None:
    """The preview's cluster roles were scoped to "the stacks' clusters" (and Reader to their resource
    groups), which the first `pulumi up` creates: nothing can be assigned there beforehand, nothing
    assigns it afterwards, and every PR preview then got 403 on listClusterUserCredential. Every role
    of the preview identity is now on a scope that exists before the first deploy."""
    exists_before = {"the subscription", "the state container", "the stack secrets key"}
    preview = next(i for i in ci_facts()["identities"] if i["id"] == "preview")
    assert {r["scope"].split(" (", 1)[0] for r in preview["roles"]} <= exists_before, preview["roles"]
    readme = (repo / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if "`repo:OWNER/REPO:pull_request`" in line]
    for role in ("Reader", "Azure Kubernetes Service Cluster User Role", "Azure Kubernetes Service RBAC Reader"):
        assert f"| {role} (the subscription" in row or f"; {role} (the subscription" in row, row
    assert "clusters" not in row and "resource group" not in row


SAME_REPOSITORY = "github.event.pull_request.head.repo.full_name == github.repository"


def test_pull_requests_from_forks_skip_the_preview_instead_of_failing(repo: Path) -> None:
    """A pull request from a fork gets no ID token (its id-token: write is reduced to read), so the
    preview's token step failed on every fork PR. Each pull-request job that needs an ID token now
    runs only for branches of this repository; the others still run, and the README says so."""
    jobs = workflow(repo, "pull-request.yml")["jobs"]
    oidc = {name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"}
    assert oidc == {"preview"}
    for name, job in jobs.items():
        assert (job.get("if") == SAME_REPOSITORY) == (name in oidc), name
    readme = (repo / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| pull request | `preview`")]
    assert "fork" in row and "skipped" in row


def test_the_readme_sets_each_stacks_deployer_object_id(repo: Path) -> None:
    """The program refuses to run in CI without `cluster.deployerObjectId` (review B4): the scaffold
    README says how to set it, per stack, for that stack's deploying identity."""
    readme = (repo / "README.md").read_text()
    for stack in STACKS:
        command = f"pulumi config set --stack {stack} --path 'slm-deploy:cluster.deployerObjectId' OBJECT_ID_OF_deploy-{stack}"
        assert command in readme
        assert f"| deploy-{stack} |" in readme  # the identity the command names is a row of the table


# Issue 23 item 6: preflight before `pulumi up` --------------------------------------------------
def _index(steps: list[dict[str, Any]], found: Any) -> int:
    (index,) = [i for i, step in enumerate(steps) if found(step)]
    return index


def test_each_deploy_job_runs_preflight_before_anything_changes(repo: Path) -> None:
    """The deploy jobs went straight to `pulumi up`: a VM size not offered in the region or a short
    vCPU quota of a VM family failed at AgentPool creation, after the cluster existed. Each up-STACK
    job now installs slm-deploy's Azure extra (the same pinned package) and runs `slm-deploy
    preflight STACK` as its deploying identity, before it opens the API server or runs `pulumi up`;
    nothing lets the step's failure pass."""
    from packaging.requirements import Requirement

    from slm_deploy.scaffold_ci import PREFLIGHT_REQUIREMENTS, TOKEN_FILE

    def requirements(name: str) -> list[str]:
        return [ln for ln in (repo / name).read_text().splitlines() if ln and not ln.startswith("#")]

    base, extra = requirements("requirements.txt"), requirements(PREFLIGHT_REQUIREMENTS)
    assert extra[0] == base[0] == "-c constraints.txt"
    package, with_azure = Requirement(base[1]), Requirement(extra[1])
    assert (with_azure.name, with_azure.url, with_azure.extras) == (package.name, package.url, {"azure"})
    deploy = workflow(repo, "deploy.yml")
    for stack in STACKS:
        job = deploy["jobs"][f"up-{stack}"]
        steps = job["steps"]
        venv = _index(steps, lambda s: "pip install -r requirements.txt" in s.get("run", ""))
        token = _index(steps, lambda s: "federated token" in s.get("name", ""))
        install = _index(steps, lambda s: f"pip install -r {PREFLIGHT_REQUIREMENTS}" in s.get("run", ""))
        check = _index(steps, lambda s: "slm-deploy preflight" in s.get("run", ""))
        reach = _index(steps, lambda s: s.get("id") == "reach")
        up = steps.index(pulumi_step(job))
        assert venv < install < check and token < check < reach < up, [s.get("name") for s in steps]
        step = steps[check]
        assert step["run"] == f".venv/bin/slm-deploy preflight {stack}"
        assert not {"if", "continue-on-error"} & set(step)
        up_env = pulumi_step(job)["env"]
        assert step["env"] == {
            "AZURE_CLIENT_ID": up_env["AZURE_CLIENT_ID"],  # the deploying identity, whose roles it checks
            "AZURE_TENANT_ID": up_env["AZURE_TENANT_ID"],
            "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,  # DefaultAzureCredential's workload identity reads it
            "AZURE_SUBSCRIPTION_ID": "${{ vars.AZURE_SUBSCRIPTION_ID }}",
        }
    readme = (repo / "README.md").read_text()
    for stack in STACKS:
        (row,) = [line for line in readme.splitlines() if line.startswith(f"| push to main | `up-{stack}`")]
        assert row.index(f"slm-deploy preflight {stack}") < row.index("pulumi up")


@pytest.mark.parametrize("fits", [True, False], ids=["fits", "short-spot-quota"])
def test_the_preflight_step_fails_the_deploy_job_when_the_stack_does_not_fit(repo: Path, tmp_path: Path, fits: bool) -> None:
    """The step's own script, run as the runner runs it (bash -e) in the scaffold, against the fake
    Azure Resource Manager (tests/fake_arm.py): it passes where the stack fits, and fails the job on
    a short quota with the line that says which one. The Azure login is stood in for (FakeCredential):
    on the runner it is the workload identity credential reading the token file."""
    pytest.importorskip("azure.mgmt.compute", reason="the [azure] extra is not installed")
    from tests.conftest import ROOT, need_binary
    from tests.fake_arm import SUBSCRIPTION, serve, usage
    from tests.test_preflight import healthy

    need_binary("openssl")
    work = tmp_path / "checkout"
    shutil.copytree(repo, work)
    shim = work / ".venv" / "bin" / "slm-deploy"  # the console script, signed in by a stand-in
    shim.parent.mkdir(parents=True)
    shim.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from slm_deploy import preflight\n"
        "from tests.fake_arm import FakeCredential\n"
        "preflight.default_credential = FakeCredential\n"
        "from slm_deploy.cli import main\n"
        "main([*sys.argv[1:], '--arm-endpoint', os.environ['FAKE_ARM_URL']], prog_name='slm-deploy')\n"
    )
    shim.chmod(0o755)
    job = workflow(work, "deploy.yml")["jobs"]["up-dev"]
    (step,) = [s for s in job["steps"] if "slm-deploy preflight" in s.get("run", "")]
    arm = healthy("dev", root=work)
    if not fits:  # dev's spot T4 pool at its maximum (8 vCPUs; a GPU pool upgrades without surge) needs more than this
        arm.usages = [u if u["name"]["value"] != "lowPriorityCores" else usage("lowPriorityCores", 0, 4) for u in arm.usages]
    token = tmp_path / "azure-federated-token"
    token.write_text("id-token")
    values = {
        "${{ vars.AZURE_DEPLOY_CLIENT_ID }}": "11111111-2222-3333-4444-555555555555",
        "${{ vars.AZURE_TENANT_ID }}": "66666666-7777-8888-9999-000000000000",
        "${{ vars.AZURE_SUBSCRIPTION_ID }}": SUBSCRIPTION,
        "${{ runner.temp }}/azure-federated-token": str(token),
    }
    with serve(arm, tmp_path) as arm:
        env = {
            "PATH": os.environ["PATH"],
            "REQUESTS_CA_BUNDLE": arm.ca,
            "FAKE_ARM_URL": arm.url,
            **{name: values[value] for name, value in step["env"].items()},
        }
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert (done.returncode == 0) == fits, done.stdout + done.stderr
    assert {method for method, _ in arm.requests} == {"GET"}
    last = done.stdout.splitlines()[-1]
    if fits:
        assert last.endswith(": fits"), done.stdout
    else:
        assert last.endswith("1 problem(s)") and "PROBLEM  quota lowPriorityCores: needs 8 vCPUs" in done.stdout
