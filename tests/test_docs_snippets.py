"""Every command, flag and config key the docs show is checked against the program itself:
README.md, docs/*.md and the README `slm-deploy init` writes.

- an `slm-deploy ...` line of a `sh` block is parsed by the real click parser (options, choices,
  types), `make TARGET` names a Makefile target, and every other program is named below with
  why it is not checked here;
- an inline `slm-deploy SUBCOMMAND --flag ...` names a subcommand and flags that exist;
- a stack config snippet (a `yaml` block, or an inline `slm-deploy:key: {...}`) is merged into a
  shipped stack file and read by the same schema as `pulumi up` (read_config); a fleet snippet is
  merged into the example fleet's defaults and parsed by parse_fleet; a `slm-deploy:a.b.c` key
  path names fields that exist.
(tests/test_readme.py runs the README's commands; tests/test_init.py runs the scaffold's.)"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, get_args

import click
import pytest
import yaml
from pydantic import BaseModel

from slm_deploy.cli import main
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Programs the docs show that this test does not run or parse, and why.
OTHER_PROGRAMS = {
    "pulumi": "the Pulumi CLI (not installed here); `pulumi config set --path` keys are checked below",
    "az": "the Azure CLI, needs an Azure account",
    "kubectl": "needs a cluster",
    "docker": "needs a Docker engine; tests/test_compose_live.py runs the bundles' compose commands",
    "sudo": "on an edge box: the bundle README's commands, run by tests/test_compose_live.py",
    "pip": "install steps: tests/e2e.py builds and installs the wheel the same way",
    "python3.11": "install steps: tests/e2e.py creates the virtual environment",
    "~/.venvs/slm-deploy/bin/pip": "install steps: tests/e2e.py installs the wheel into its own venv",
    "git": "the user's repository",
    ".": "activates the virtual environment the line before creates",
    ".venv/bin/pip": "install steps: tests/e2e.py installs the same way",
    "ssh-keygen": "makes the release key: tests/test_readme.py runs the README's line, tests/test_rollout.py the same",
    "ansible-playbook": "tests/test_rollout.py checks the playbook with ansible-playbook; tests/test_rollout_live.py runs it",
    "python3": "on a box: the box agent, run by tests/test_rollout.py and tests/test_rollout_live.py",
    **dict.fromkeys(
        ("systemctl", "rm", "cp", "chmod", "mv", "install"),
        "on a box: docs/rollout.md's agent upgrade, run by tests/test_rollout.py (systemctl aside)",
    ),
}


def fences(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_lines(block: str) -> list[str]:
    """The commands of a `sh` block, with `NAME='value'` assignments of the block expanded."""
    variables: dict[str, str] = {}
    lines = []
    for raw in block.splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).strip()
        if not line or line.startswith("#"):
            continue
        assigned = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if assigned:
            variables[assigned.group(1)] = shlex.split(assigned.group(2))[0]
            continue
        for name, value in variables.items():
            line = line.replace(f'"${name}"', shlex.quote(value))
        lines.extend(part.strip() for part in re.split(r"\s&&\s", line))
    return lines


def _unparsed(ctx: click.Context) -> list[str]:
    """A group's subcommand and its arguments (click 8.2 keeps the first in `protected_args`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def parse_cli(argv: list[str]) -> None:
    """What click would do with `slm-deploy ARGV` up to calling the command: raises on a bad flag."""
    ctx = main.make_context("slm-deploy", list(argv), resilient_parsing=False)
    with ctx:
        name, command, rest = main.resolve_command(ctx, _unparsed(ctx))
        assert command is not None, argv
        while isinstance(command, click.Group):
            sub = command.make_context(name or "", rest, parent=ctx)
            name, command, rest = command.resolve_command(sub, _unparsed(sub))
            assert command is not None, argv
            ctx = sub
        command.make_context(name or "", rest, parent=ctx)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def check_shell(line: str, where: str) -> str | None:
    """None when checked; else the reason the line's program is not checked here."""
    argv = shlex.split(line.replace("[", "").replace("]", "")) if "[--" in line else shlex.split(line)
    if argv[0] == "slm-deploy":
        try:
            parse_cli(argv[1:])
        except click.ClickException as exc:
            pytest.fail(f"{where}: `{line}`: {exc.format_message()}")
        return None
    if argv[0] == "make":
        assert set(a for a in argv[1:] if "=" not in a) <= make_targets(), f"{where}: `{line}`: no such make target"
        return None
    if argv[:4] == ["pulumi", "config", "set", "--path"] or argv[:3] == ["pulumi", "config", "set"]:
        key = next((a for a in argv[3:] if a.startswith("slm-deploy:")), None)
        if key is not None:
            check_key_path(key, where)
    return OTHER_PROGRAMS.get(argv[0]) or OTHER_PROGRAMS.get(argv[0].split("/")[-1])


# ---------------------------------------------------------------------------------------------
# Config keys


def _inner(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner(arg)
        if found is not None:
            return found
    return None


def check_key_path(key: str, where: str) -> None:
    """`slm-deploy:cluster.apiServer.authorizedIpRanges[0]` names fields of the stack schema."""
    from slm_deploy.environment import EnvironmentSpec
    from slm_deploy.stackfile import SECRET_KEYS

    top, _, rest = key.removeprefix("slm-deploy:").partition(".")
    if top in SECRET_KEYS:
        return
    model: type[BaseModel] | None = EnvironmentSpec
    for part in [top, *filter(None, rest.split("."))]:
        part = re.sub(r"\[\d+\]$", "", part)
        assert model is not None, f"{where}: `{key}`: {part} is below a value, not a mapping"
        fields = {(f.alias or n): f for n, f in model.model_fields.items()} | dict(model.model_fields)
        assert part in fields, f"{where}: `{key}`: {part!r} is not a key of {model.__name__} ({', '.join(sorted(fields))})"
        model = _inner(fields[part].annotation)


def merged(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merged(base.get(key), value) if key in base else value
        return out
    return copy.deepcopy(patch)


def check_stack_config(config: dict[str, Any], where: str) -> None:
    from slm_deploy.errors import InputError
    from slm_deploy.stackfile import read_config

    base = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    full = merged(base, config)
    values = {k.split(":", 1)[1]: v for k, v in full.items() if k.startswith("slm-deploy:")}
    try:
        read_config("dev", values, where)
    except InputError as exc:
        pytest.fail(f"{where}: a stack with this snippet is refused: {exc}")


def check_fleet_defaults(snippet: dict[str, Any], where: str) -> None:
    from slm_deploy.errors import InputError
    from slm_deploy.fleet import parse_fleet

    fleet = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    top = {k: v for k, v in snippet.items() if k in ("rollout",)}  # the fleet's own keys, beside defaults
    fleet["defaults"] = merged(fleet["defaults"], {k: v for k, v in snippet.items() if k not in top})
    fleet.update(top)
    try:
        parse_fleet(fleet, where)
    except InputError as exc:
        pytest.fail(f"{where}: a fleet with this snippet is refused: {exc}")


def check_yaml_block(block: str, where: str) -> None:
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"{where}: a yaml snippet that is not a mapping"
    if "config" in data:
        check_stack_config(data["config"], where)
    elif any(k.startswith("slm-deploy:") for k in data):
        check_stack_config(data, where)
    else:
        check_fleet_defaults(data, where)


STACK_SPAN = re.compile(r"`(slm-deploy:[A-Za-z]+: \{.*?\})`")
KEY_PATH_SPAN = re.compile(r"`(slm-deploy:[A-Za-z]+(?:\.[A-Za-z]+)+)`")
# An inline fleet snippet: `key: {...}` whose key the fleet's defaults know (the docs' edge examples).
FLEET_SPAN = re.compile(r"`([a-z_]+: \{[a-z_0-9:., ]+\})`")
CLI_SPAN = re.compile(r"`(slm-deploy [a-z][^`]*)`")


def doc_cases() -> list[tuple[str, str, str]]:
    cases = []
    for doc in DOCS:
        text = doc.read_text()
        name = doc.relative_to(ROOT).as_posix()
        cases += [("sh", name, block) for block in fences(text, "sh")]
        cases += [("yaml", name, block) for block in fences(text, "yaml")]
    return cases


def all_text() -> list[tuple[str, str]]:
    return [(doc.relative_to(ROOT).as_posix(), doc.read_text()) for doc in DOCS]


@pytest.mark.parametrize(("kind", "doc", "block"), doc_cases(), ids=lambda v: v if len(v) < 30 else v[:30])
def test_every_command_and_config_block_of_the_docs_is_accepted(kind: str, doc: str, block: str) -> None:
    if kind == "yaml":
        check_yaml_block(block, doc)
        return
    for line in shell_lines(block):
        reason = check_shell(line, doc)
        first = shlex.split(line)[0]
        assert reason is not None or first in ("slm-deploy", "make", "pulumi"), f"{doc}: `{line}`: no check and no reason"


def test_every_inline_command_names_flags_that_exist() -> None:
    checked = 0
    for doc, text in all_text():
        for span in CLI_SPAN.findall(text):
            words = span.split()
            group = main
            command: click.Command | None = None
            for word in words[1:]:
                if word.startswith("-") or not isinstance(group, click.Group):
                    break
                command = group.commands.get(word)
                if command is None:
                    break
                group = command  # type: ignore[assignment]
            if command is None:
                continue  # prose such as `slm-deploy @ git+URL` or `slm-deploy:...`
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
            for word in words:
                if word.startswith("--"):
                    flag = word.split("=", 1)[0]
                    assert flag in known, f"{doc}: `{span}`: {flag} is not an option of {command.name}"
                    checked += 1
    assert checked >= 10


def test_every_inline_config_key_is_one_the_program_reads() -> None:
    checked = 0
    for doc, text in all_text():
        for span in STACK_SPAN.findall(text):
            key, _, value = span.partition(": ")
            check_stack_config({key: yaml.safe_load(value)}, f"{doc}: `{span}`")
            checked += 1
        for span in KEY_PATH_SPAN.findall(text):
            check_key_path(span, doc)
            checked += 1
        for span in FLEET_SPAN.findall(text):
            check_fleet_defaults(yaml.safe_load(span), f"{doc}: `{span}`")
            checked += 1
    assert checked >= 3


def test_the_readme_counts_the_example_boxes() -> None:
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    boxes = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())["boxes"]
    readme = (ROOT / "README.md").read_text()
    assert f"`examples/fleet.yaml` describes {words[len(boxes)]} boxes" in readme
    for box in boxes:  # every architecture the README gives a runtime is the fleet's
        if box.get("serving", {}).get("runtime") == "llamacpp":
            assert f"llama.cpp\non an air-gapped {box['hardware']['cpu_arch']} box" in readme or (
                f"llama.cpp on an air-gapped {box['hardware']['cpu_arch']} box" in readme
            )


def test_files_the_docs_cite_exist() -> None:
    for doc, text in all_text():
        for cited in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text):
            assert (ROOT / cited).exists() or (ROOT / "docs" / cited).exists(), f"{doc} cites {cited}, which is not here"
        for cited in re.findall(r"`(docs/[\w.-]+\.md)`", text):
            assert (ROOT / cited).is_file(), f"{doc} cites {cited}, which is not here"


def scaffold_readme(tmp_path: Path, *args: str) -> str:
    from click.testing import CliRunner

    package = "slm-deploy @ git+https://github.com/example/slm-deploy@0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "deploy"
    result = CliRunner().invoke(main, ["init", str(repo), "--api-range", "20.61.0.0/16", "--package", package, *args])
    assert result.exit_code == 0, result.output
    return (repo / "README.md").read_text()


@pytest.mark.parametrize("args", [(), ("--runtime", "onnx", "--image", "example.azurecr.io/slm-onnx:1")], ids=["vllm", "onnx"])
def test_every_command_of_the_scaffold_readme_is_accepted(args: tuple[str, ...], tmp_path: Path) -> None:
    readme = scaffold_readme(tmp_path, *args)
    for block in fences(readme, "sh"):
        for line in shell_lines(block):
            reason = check_shell(line, "scaffold README.md")
            assert reason is not None or shlex.split(line)[0] in ("slm-deploy", "make", "pulumi", "python3.11"), line
    for key in KEY_PATH_SPAN.findall(readme) + re.findall(r"'(slm-deploy:[\w.]+)'", readme):
        check_key_path(key, "scaffold README.md")


def test_every_init_command_of_the_docs_writes_its_scaffold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' `init` examples run as written (docs/day2.md's GRID size and onnx included), in
    order: a choice init refuses would leave the reader stuck at the first command."""
    from click.testing import CliRunner

    ran = 0
    for doc in DOCS:
        (tmp_path / doc.stem).mkdir()
        monkeypatch.chdir(tmp_path / doc.stem)  # each document's examples in order, in a folder of their own
        for block in fences(doc.read_text(), "sh"):
            for line in shell_lines(block):
                argv = shlex.split(line)
                if argv[:2] != ["slm-deploy", "init"]:
                    continue
                result = CliRunner().invoke(main, argv[1:])
                assert result.exit_code == 0, f"{doc.name}: `{line}`: {result.output}"
                ran += 1
    assert ran >= 4
