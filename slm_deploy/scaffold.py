"""`slm-deploy init DIR`: a deployment repository in one command.

The scaffold holds a fleet file for edge boxes, the Pulumi project and one stack file per
environment (the program itself is the installed `slm_deploy` package), the CrossGuard policy
pack, a README of the day-2 commands and GitHub Actions workflows. Every file is built and
checked (the fleet is bundled, every stack is planned) before anything is written, and nothing
that exists is overwritten unless asked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from slm_deploy import __version__
from slm_deploy.errors import InputError
from slm_deploy.scaffold_choices import InitChoices
from slm_deploy.scaffold_ci import (
    PREFLIGHT_REQUIREMENTS,
    TOKEN_FILE,
    azure_env,
    ci_facts,
    ci_identity,
    identity_rows,
    installed_requirement,
    pinned_actions,
    with_extra,
)
from slm_deploy.templating import render
from slm_deploy.yamlout import dump

# The pins slm-deploy's CI installs the package with (a link to the repository's constraints.txt,
# shipped in the wheel): a scaffold installs with them, so every run gets the same versions.
CONSTRAINTS_FILE = Path(__file__).resolve().parent / "catalog" / "constraints.txt"
PROJECT = "slm-deploy"  # the program reads its config under this project name
POOL = "gpu"
CPU_POOL = "cpu"
EDGE_BOX = "edge-0001"


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
        "env_preview": azure_env(ci_identity("preview")["variable"]),
        "env_deploy": azure_env(ci_identity("deploy")["variable"]),
        "identities": identity_rows(stacks),
        "preview_variable": ci_identity("preview")["variable"],
        "deploy_variable": ci_identity("deploy")["variable"],
        "deploy_identity_name": ci_identity("deploy")["id"],
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
