"""`slm-deploy init DIR`: a deployment repository in one command.

The scaffold holds a fleet file for edge boxes, the Pulumi project and one stack file per
environment (the program itself is the installed `slm_deploy` package), the CrossGuard policy
pack, a README of the day-2 commands and GitHub Actions workflows. Every file is built and
checked (the fleet is bundled, every stack is planned) before anything is written, and nothing
that exists is overwritten unless asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from slm_deploy import __version__
from slm_deploy.errors import InputError, from_validation_error
from slm_deploy.spec import Frozen, Runtime
from slm_deploy.templating import render
from slm_deploy.yamlout import dump

ACTIONS_FILE = Path(__file__).resolve().parent / "catalog" / "actions.yaml"
# How the workflows reach Azure and with which identities (facts with their sources).
CI_FILE = Path(__file__).resolve().parent / "catalog" / "ci.yaml"
# The pins slm-deploy's CI installs the package with (a link to the repository's constraints.txt,
# shipped in the wheel): a scaffold installs with them, so every run gets the same versions.
CONSTRAINTS_FILE = Path(__file__).resolve().parent / "catalog" / "constraints.txt"
PROJECT = "slm-deploy"  # the program reads its config under this project name
POOL = "gpu"
CPU_POOL = "cpu"
EDGE_BOX = "edge-0001"
# What a requirement line may not hold: the placeholders of the examples in `--help`, the README and
# the error for a local install. A line holding one fails the scaffold's first command (`pip install
# -r requirements.txt`), so it is refused before anything is written.
PLACEHOLDERS = re.compile(r"\b(OWNER|REPO|HOST|FULL_COMMIT_SHA|COMMIT|HASH|VERSION)\b")
# A pool's VM size when none is given: the GPU runtimes' and runtime onnx's (a CPU pool).
DEFAULT_VM_SIZES = {"gpu": "Standard_NC8as_T4_v3", "cpu": "Standard_D8ds_v5"}


class InitChoices(Frozen):
    """What `slm-deploy init` asks; each default is stated here once."""

    stacks: tuple[str, ...] = Field(default=("dev", "staging", "prod"), min_length=1)
    location: str = Field(default="westeurope", pattern=r"^[a-z0-9]+$")
    model: str = Field(default="phi-4-mini-instruct", min_length=1)
    runtime: Runtime = Runtime.VLLM
    # None: DEFAULT_VM_SIZES for the runtime (a GPU size, or a CPU size for runtime onnx).
    vm_size: str | None = Field(default=None, pattern=r"^Standard_[A-Za-z0-9_]+$")
    # None: AKS's drivers on a GRID (vGPU) size, which the GPU Operator's driver cannot bring up;
    # the program's default (the GPU Operator) otherwise.
    gpu_driver: Literal["operator", "aks"] | None = None
    # Runtime onnx serves your own build of its server (`slm-deploy image onnx`): no registry publishes it.
    image: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
    )
    context: int = Field(default=8192, ge=512)
    # No default (issue 11): a guessed range locks the deployer out of the API server.
    api_ranges: tuple[str, ...] = Field(min_length=1)
    edge_gpu: str = Field(default="l4", min_length=1)
    fleet: str = Field(default="edge", pattern=r"^[a-z0-9][a-z0-9-]*$")
    package: str | None = Field(
        default=None,
        pattern=r"^slm[-_]deploy *(== *[0-9][A-Za-z0-9.+!_-]*|@ *[a-z+]+://[^\s]+)$",
        description="The requirement line for slm-deploy (default: how the running slm-deploy was installed).",
    )

    @field_validator("package")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        found = PLACEHOLDERS.search(value or "")
        if found:
            raise ValueError(
                f"{found.group(1)} is a placeholder: name the repository (or wheel URL) and full commit your CI installs "
                "slm-deploy from; requirements.txt gets this line and `pip install -r requirements.txt` must resolve"
            )
        return value

    @model_validator(mode="after")
    def _runtime_needs(self) -> InitChoices:
        if self.runtime is Runtime.ONNX and self.image is None:
            raise ValueError(
                "runtime onnx serves your own build of its server image, which no registry publishes: pass --image "
                "REGISTRY/REPOSITORY:TAG (where you will push it); after init, `slm-deploy image onnx STACK --out DIR` "
                "writes its build context and `slm-deploy lock --images` pins it"
            )
        if self.runtime is not Runtime.ONNX and self.image is not None:
            raise ValueError("--image is for runtime onnx only: the other runtimes run the catalog's pinned images")
        return self

    @property
    def cpu_only(self) -> bool:
        """Runtime onnx runs on a CPU pool (and a CPU edge box)."""
        return self.runtime is Runtime.ONNX

    @property
    def pool_vm_size(self) -> str:
        return self.vm_size or DEFAULT_VM_SIZES["cpu" if self.cpu_only else "gpu"]

    @property
    def driver(self) -> str | None:
        """The stack's gpuDriver when it is not the program's default."""
        if self.cpu_only:
            return None
        if self.gpu_driver is not None:
            return None if self.gpu_driver == "operator" else self.gpu_driver
        from slm_deploy.catalog.platform import load_aks_facts

        size = load_aks_facts().node_size(self.pool_vm_size)
        return "aks" if size is not None and size.driver == "grid" else None

    @field_validator("stacks")
    @classmethod
    def _stack_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise ValueError(f"stack name {name!r}: lower-case letters, digits and '-' only")
        if len(set(value)) != len(value):
            raise ValueError("stack names must be unique")
        return value

    @field_validator("api_ranges")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR range") from None
            if network.prefixlen == 0:
                raise ValueError(f"{cidr!r} lets every address reach the API server")
        return value


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


def _identity(purpose: str) -> dict[str, Any]:
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


def parse_choices(values: dict[str, Any]) -> InitChoices:
    try:
        return InitChoices.model_validate(values)
    except ValidationError as exc:
        raise from_validation_error("arguments", exc) from None


# ---------------------------------------------------------------------------------------------
# Per environment: the first stack is the cheap one, the last the production one.


def _profile(index: int, count: int) -> dict[str, Any]:
    if (index == 0 and count > 1) or count == 1:
        return {"nodes": 1, "spot": True, "min": 0, "max": 1, "replicas": (0, 1), "retention": "7d", "channel": "patch"}
    if index == count - 1:
        return {"nodes": 3, "spot": False, "min": 1, "max": 3, "replicas": (1, 3), "retention": "30d", "channel": "stable"}
    return {"nodes": 2, "spot": False, "min": 0, "max": 2, "replicas": (1, 2), "retention": "15d", "channel": "patch"}


def _default_kubernetes_version() -> str:
    from slm_deploy.environment import ClusterSpec

    return str(ClusterSpec.model_fields["kubernetes_version"].default)


def stack_config(choices: InitChoices, index: int) -> dict[str, Any]:
    p = _profile(index, len(choices.stacks))
    name = re.sub(r"[^a-z0-9-]", "-", choices.model.lower().split("/")[-1]).strip("-")[:40]
    cluster: dict[str, Any] = {
        "mode": "aks",
        # The calendar's default minor (environment.py, catalog/aks.yaml kubernetes_versions).
        "kubernetesVersion": _default_kubernetes_version(),
        "apiServer": {"authorizedIpRanges": list(choices.api_ranges)},
        "systemNodeCount": p["nodes"],
        "upgradeChannel": p["channel"],
        # CI logs in to the cluster with its federated identity (catalog/ci.yaml).
        "kubeloginMode": ci_facts()["kubelogin"]["login_mode"],
    }
    # AKS-04: the workflows deploy as an Entra application or managed identity, whose object id the
    # README has the user set as cluster.deployerObjectId; with it set, the program's
    # cluster.deployerPrincipalType defaults to ServicePrincipal (and the key may only be written
    # beside deployerObjectId), so the stack files carry neither until the user sets the id.
    model: dict[str, Any] = {
        "name": name,
        "pool": CPU_POOL if choices.cpu_only else POOL,
        "model": choices.model,
        "runtime": choices.runtime.value,
        "context": choices.context,
        "autoscaling": {"minReplicas": p["replicas"][0], "maxReplicas": p["replicas"][1]},
    }
    if choices.image is not None:
        model["image"] = choices.image
    pool = {"vmSize": choices.pool_vm_size, "minCount": p["min"], "maxCount": p["max"]}
    config: dict[str, Any] = {"azure-native:location": choices.location, f"{PROJECT}:cluster": cluster}
    if choices.cpu_only:
        config[f"{PROJECT}:cpuPools"] = [{"name": CPU_POOL, **pool, "minCount": max(1, p["min"])}]
    else:
        config[f"{PROJECT}:gpuPools"] = [{"name": POOL, **pool, "spot": p["spot"]}]
    if choices.driver is not None:
        config[f"{PROJECT}:gpuDriver"] = choices.driver
    config[f"{PROJECT}:models"] = [model]
    config[f"{PROJECT}:monitoring"] = {"enabled": True, "alerts": True, "retention": p["retention"]}
    return {"config": config}


def project_file() -> dict[str, Any]:
    """Pulumi.yaml: the scalar config keys with their defaults, read from the environment model."""
    from slm_deploy.environment import EnvironmentSpec

    fields = EnvironmentSpec.model_fields
    scalars = {
        "namespace": ("string", "Kubernetes namespace of the model servers and the gateway."),
        "gpu_driver": ("string", "Who installs GPU drivers: operator (NVIDIA GPU Operator) or aks (AKS-installed drivers)."),
        "gateway_replicas": ("integer", "Replicas of the API gateway in front of the model servers."),
    }
    config = {}
    for name, (kind, description) in scalars.items():
        info = fields[name]
        default = info.default.value if hasattr(info.default, "value") else info.default
        config[str(info.alias)] = {"type": kind, "description": info.description or description, "default": default}
    return {
        "name": PROJECT,
        "description": "Small language models on AKS GPU node pools, deployed by slm-deploy.",
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}},
        "config": config,
    }


def fleet_file(choices: InitChoices) -> dict[str, Any]:
    return {
        "fleet": choices.fleet,
        "defaults": {"runtime": choices.runtime.value, "model": choices.model, "context": choices.context, "monitoring": True},
        "boxes": [
            {
                "id": EDGE_BOX,
                "hardware": {
                    "cpu_arch": "amd64",
                    "cpus": 8,
                    "memory_gib": 32,
                    "disk_gib": 256,
                    **({} if choices.cpu_only else {"gpu": {"model": choices.edge_gpu, "count": 1}}),
                },
                "webui": False,
            }
        ],
    }


def build_files(choices: InitChoices, requirement: str | None = None) -> dict[str, str]:
    """Every file of the scaffold (relative path -> text), checked before anything is written."""
    actions, pulumi_version = pinned_actions()
    requirement = choices.package or requirement or installed_requirement()
    stacks = choices.stacks
    files: dict[str, str] = {}
    header = "# Written by `slm-deploy init`; yours to edit. `slm-deploy review` checks it.\n"
    files["Pulumi.yaml"] = dump(project_file(), header=header)
    for index, stack in enumerate(stacks):
        files[f"Pulumi.{stack}.yaml"] = dump(stack_config(choices, index), header=header + _stack_comment(choices, index))
    files["fleet.yaml"] = dump(
        fleet_file(choices), header=header + "# Edge boxes: `slm-deploy bundle fleet.yaml --out out/bundles`.\n"
    )
    values = {
        "choices": choices,
        "stacks": stacks,
        "first_stack": stacks[0],
        "box": EDGE_BOX,
        "a": actions,
        "pulumi_version": pulumi_version,
        "version": __version__,
        "requirement": requirement,
        "project": PROJECT,
        "review_command": review_command(stacks),
        "offline_commands": offline_commands(choices),
        "onnx_context": ONNX_CONTEXT,
        "e": lambda expression: "${{ " + expression + " }}",
        "ci": ci_facts(),
        "token_file": TOKEN_FILE,
        "env_preview": azure_env(_identity("preview")["variable"]),
        "env_deploy": azure_env(_identity("deploy")["variable"]),
        "identities": identity_rows(stacks),
        "preview_variable": _identity("preview")["variable"],
        "deploy_variable": _identity("deploy")["variable"],
        "deploy_identity_name": _identity("deploy")["id"],
        "preflight_requirements": PREFLIGHT_REQUIREMENTS,
        "preflight_requirement": with_extra(requirement, "azure"),
    }
    files["__main__.py"] = render("init/main.py", **values)
    files["requirements.txt"] = render("init/requirements.txt", **values)
    files[PREFLIGHT_REQUIREMENTS] = render("init/requirements-preflight.txt", **values)
    files["constraints.txt"] = (
        f"# The versions slm-deploy {__version__} was tested with (its CI installs it with these pins on\n"
        "# Python 3.11-3.13); requirements.txt installs with them, so the `pulumi up` on main runs the\n"
        "# providers the preview on the pull request ran, and the Pulumi SDK of the CLI the workflows\n"
        "# install. Upgrade them together with slm-deploy.\n"
    ) + CONSTRAINTS_FILE.read_text(encoding="utf-8")
    files["policies/PulumiPolicy.yaml"] = render("init/PulumiPolicy.yaml", **values)
    files["policies/__main__.py"] = render("init/policy_main.py", **values)
    files["policies/requirements.txt"] = render("init/policy_requirements.txt", **values)
    files["README.md"] = render("init/README.md", **values)
    files[".gitignore"] = render("init/gitignore", **values)
    files[".github/workflows/pull-request.yml"] = render("init/pull-request.yml", **values)
    files[".github/workflows/deploy.yml"] = render("init/deploy.yml", **values)
    _check(choices, files)
    return files


ONNX_CONTEXT = "out/onnx-image"
# What the deploy jobs add for `slm-deploy preflight` (the Azure SDK extra), beside requirements.txt.
PREFLIGHT_REQUIREMENTS = "requirements-preflight.txt"


def with_extra(requirement: str, extra: str) -> str:
    """The same requirement line with an extra: `slm-deploy[azure] @ URL`, `slm-deploy[azure]==V`.
    Never a bare name: that would install whatever an index serves under it (see --package)."""
    name = re.match(r"slm[-_]deploy", requirement)
    if name is None:
        raise InputError("arguments", "--package", f"{requirement!r} does not name slm-deploy")
    return f"{name.group(0)}[{extra}]{requirement[name.end() :]}"


def offline_commands(choices: InitChoices) -> list[str]:
    """The scaffold README's commands that need nothing but slm-deploy (the tests run each one).

    Runtime onnx's server is the user's own image: until it is built, pushed and locked, the stacks
    preview with --allow-unlocked and are reviewed as files (their review through the offline
    preview, `--stack`, refuses an image without a digest, as `pulumi up` does)."""
    first = choices.stacks[0]
    where = "--cpu --cpus 8 --memory-gib 32" if choices.cpu_only else f"--gpu {choices.pool_vm_size}"
    plan = f"slm-deploy plan --model {choices.model} {where} --runtime {choices.runtime.value} --context {choices.context}"
    preview = f"slm-deploy preview {first} --out out/manifests/{first}"
    bundle = ["slm-deploy bundle fleet.yaml --out out/bundles --tar", f"slm-deploy verify out/bundles/{EDGE_BOX}"]
    if choices.image is None:
        return [plan, review_command(choices.stacks), preview, *bundle]
    return [
        plan,
        f"slm-deploy image onnx {first} --out {ONNX_CONTEXT}",
        review_command(choices.stacks, through_preview=False),
        preview + " --allow-unlocked",
        *bundle,
    ]


def review_command(stacks: tuple[str, ...], through_preview: bool = True) -> str:
    files = " ".join(["Pulumi.yaml", *(f"Pulumi.{s}.yaml" for s in stacks), "fleet.yaml"])
    flags = "".join(f" --stack {s}" for s in stacks) if through_preview else ""
    return f"slm-deploy review .github {files} --fleet fleet.yaml{flags} --sarif review.sarif"


def _stack_comment(choices: InitChoices, index: int) -> str:
    stack = choices.stacks[index]
    kind = ("the cheap one: spot GPUs that scale to zero", "production-like", "production")
    p = _profile(index, len(choices.stacks))
    which = kind[0] if p["spot"] else kind[2] if p["channel"] == "stable" else kind[1]
    if choices.cpu_only:
        which = which.replace("spot GPUs", "a CPU pool")
    return (
        f"# Stack {stack}: {which}. apiServer.authorizedIpRanges: your operators' egress ranges (and\n"
        "# self-hosted runners'); a GitHub-hosted runner adds its own address for its job (README, step 5).\n"
    )


def _check(choices: InitChoices, files: dict[str, str]) -> None:
    """Plan every stack and bundle the fleet: a choice that cannot work stops here, writing nothing."""
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import parse_fleet
    from slm_deploy.stackfile import read_config

    try:
        for stack in choices.stacks:
            source = f"Pulumi.{stack}.yaml"
            config = yaml.safe_load(files[source])["config"]
            values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(f"{PROJECT}:")}
            read_config(stack, values, source)
        fleet = parse_fleet(yaml.safe_load(files["fleet.yaml"]), "fleet.yaml")
        build_fleet(fleet, fleet.boxes)
    except InputError as exc:  # the file is not written: say that it is the choices that fail
        raise InputError(f"{exc.source} (as init would write it; nothing written)", exc.field, exc.message) from None


def existing(directory: Path, files: dict[str, str]) -> list[str]:
    return sorted(rel for rel in files if (directory / rel).exists())


def write_files(directory: Path, files: dict[str, str]) -> list[Path]:
    from slm_deploy.atomicfile import write_all

    return write_all(directory, files)  # all or none; no predictable temporary names (issue 22)
