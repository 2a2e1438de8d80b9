"""What the scaffold's workflows are built from: the pinned GitHub Actions, the Azure access facts
of catalog/ci.yaml, and the requirement lines that install this very slm-deploy on a runner."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from slm_deploy import __version__
from slm_deploy.errors import InputError

ACTIONS_FILE = Path(__file__).resolve().parent / "catalog" / "actions.yaml"
# How the workflows reach Azure and with which identities (facts with their sources).
CI_FILE = Path(__file__).resolve().parent / "catalog" / "ci.yaml"
# What the deploy jobs add for `slm-deploy preflight` (the Azure SDK extra), beside requirements.txt.
PREFLIGHT_REQUIREMENTS = "requirements-preflight.txt"


def with_extra(requirement: str, extra: str) -> str:
    """The same requirement line with an extra: `slm-deploy[azure] @ URL`, `slm-deploy[azure]==V`.
    Never a bare name: that would install whatever an index serves under it (see --package)."""
    name = re.match(r"slm[-_]deploy", requirement)
    if name is None:
        raise InputError("arguments", "--package", f"{requirement!r} does not name slm-deploy")
    return f"{name.group(0)}[{extra}]{requirement[name.end() :]}"


@dataclass(frozen=True)
class Action:
    uses: str
    tag: str
    sha: str

    @property
    def ref(self) -> str:
        return f"{self.uses}@{self.sha}"


@cache
def pinned_actions() -> tuple[dict[str, Action], str]:
    data = yaml.safe_load(ACTIONS_FILE.read_text(encoding="utf-8"))
    actions = {}
    for entry in data["actions"]:
        if not re.fullmatch(r"[0-9a-f]{40}", entry["sha"]) or not entry.get("source"):
            raise InputError(str(ACTIONS_FILE), entry["id"], "every action needs a full commit sha and a source")
        actions[entry["id"]] = Action(entry["uses"], entry["tag"], entry["sha"])
    return actions, str(data["pulumi_cli"]["version"])


@cache
def ci_facts() -> dict[str, Any]:
    """catalog/ci.yaml: every fact that shapes the workflows' Azure access carries its source."""
    data: dict[str, Any] = yaml.safe_load(CI_FILE.read_text(encoding="utf-8"))
    sourced = [*data["tokens"].values(), *data["consumers"], *data["identities"], *data["limits"], data["kubelogin"]]
    sourced.append(data["code_scanning"])
    sourced.extend(data["runner_reach"]["facts"])
    for entry in sourced:
        if not entry.get("source"):
            raise InputError(str(CI_FILE), str(entry.get("id", entry.get("fact", "?")))[:60], "every fact needs a source")
    return data


TOKEN_FILE = "${{ runner.temp }}/azure-federated-token"


def ci_identity(purpose: str) -> dict[str, Any]:
    return next(i for i in ci_facts()["identities"] if i["id"] == purpose)


def azure_env(client_variable: str) -> dict[str, str]:
    """The environment of a step running `pulumi`: what each Azure consumer of catalog/ci.yaml reads,
    for the identity whose client id is in the GitHub variable `client_variable`."""
    values = {
        "client": "${{ vars." + client_variable + " }}",
        "tenant": "${{ vars.AZURE_TENANT_ID }}",
        "subscription": "${{ vars.AZURE_SUBSCRIPTION_ID }}",
        "token_file": TOKEN_FILE,
    }
    env: dict[str, str] = {}
    for consumer in ci_facts()["consumers"]:
        for name, value in consumer["env"].items():
            env[name] = values[value] if value in values else '"' + str(value) + '"'
    return env


def identity_rows(stacks: tuple[str, ...]) -> list[dict[str, str]]:
    """One row per federated identity for the scaffold README: the preview's, and one deploying
    identity per stack (its environment's variable), each with its subject and roles."""
    rows = []
    for identity in ci_facts()["identities"]:
        per_stack = any("{stack}" in subject for subject in identity["subjects"])
        roles = "; ".join(f"{r['role']} ({r['scope']})" for r in identity["roles"])
        for stack in stacks if per_stack else (None,):
            subjects = [x.replace("{repo}", "OWNER/REPO").replace("{stack}", stack or "") for x in identity["subjects"]]
            where = f"in environment `{stack}`" if stack else identity["where"]
            rows.append(
                {
                    "name": f"{identity['id']}-{stack}" if stack else identity["id"],
                    "subjects": ", ".join(f"`{x}`" for x in subjects),
                    "variable": f"`{identity['variable']}` ({where})",
                    "roles": roles,
                    "used_by": identity["used_by"].replace("STACK", stack or "STACK"),
                }
            )
    return rows


def requirement_from_direct_url(direct_url: dict[str, Any] | None) -> str:
    """The requirements.txt line that installs this very slm-deploy on a CI runner, from the
    install's PEP 610 record (direct_url.json).

    No record: installed from an index, which carries this version. A VCS install: its URL at the
    installed commit. A remote archive: its URL with the recorded hash. A local folder or file: no
    runner can install it, and a bare version pin would install whatever an index serves under that
    name (in jobs holding id-token: write), so this refuses and `--package` is required.
    """
    if not direct_url or not isinstance(direct_url.get("url"), str):
        return f"slm-deploy=={__version__}"
    url = direct_url["url"]
    fragment = f"#subdirectory={direct_url['subdirectory']}" if direct_url.get("subdirectory") else ""
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("commit_id") and not url.startswith("file:"):
        return f"slm-deploy @ {vcs.get('vcs', 'git')}+{url}@{vcs['commit_id']}{fragment}"
    archive = direct_url.get("archive_info")
    if isinstance(archive, dict) and url.startswith("https://"):
        sha = (archive.get("hashes") or {}).get("sha256")
        return f"slm-deploy @ {url}" + (f"#sha256={sha}" if sha else "") + fragment
    raise InputError(
        "arguments",
        "--package",
        f"required: this slm-deploy was installed from a local path ({url}), which no CI runner can install, "
        f"and a bare slm-deploy=={__version__} would install whatever a package index serves under that name; pass "
        "--package 'slm-deploy @ git+https://HOST/OWNER/slm-deploy@FULL_COMMIT_SHA' "
        "or --package 'slm-deploy @ https://HOST/slm_deploy-VERSION-py3-none-any.whl#sha256=HASH'",
    )


def installed_requirement() -> str:
    """`requirement_from_direct_url` of the slm-deploy distribution that is running."""
    import json
    from importlib import metadata

    try:
        dist = metadata.distribution("slm-deploy")
        text = dist.read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        text = None
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    return requirement_from_direct_url(record if isinstance(record, dict) else None)
