"""The README is executable: every command in its `sh` code blocks runs, in order, with the
installed console script in a user's folder that is not the repository. A command that cannot run
offline is skipped by its name, and the README says so next to it; `make demo` runs in its own test
with no Debian validator on the PATH."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e import build_wheel, install, path_without, user_project

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
# A command's first word (or first two or four) -> why the suite does not run it here.
NOT_RUN = {
    "slm-deploy plan --model Qwen/Qwen2-7B-Instruct-AWQ": "asks the Hugging Face Hub; tests/test_resolve.py plans Hub repos against a fake Hub",
    "slm-deploy plan --model qwen3:4b": "asks the Ollama registry; tests/test_resolve.py runs it against a fake registry",
    "slm-deploy lock": "asks the real registries, which this machine cannot reach; tests/test_lock.py runs it against a registry on 127.0.0.1",
    "slm-deploy preflight": "asks Azure Resource Manager with the user's credentials; tests/test_preflight.py runs it against a fake ARM on 127.0.0.1",
    "slm-deploy smoke": "needs a deployed endpoint (https://box:8443); tests/test_smoke.py runs it against the live gateway on 127.0.0.1",
    "pulumi": "needs the Pulumi CLI, a backend and an Azure subscription (README: Deploying to Azure)",
    "az": "needs an Azure account",
    "make": "the README's own runners: `make test` runs this file, `make demo` runs in test_make_demo_on_a_fresh_machine",
    "pip": "the install steps: tests/e2e.py builds and installs the wheel the same way",
    "python3.11": "the install steps: tests/e2e.py creates the virtual environment",
    "~/.venvs/slm-deploy/bin/pip": "the install steps: tests/e2e.py installs the wheel into its own venv",
}


def readme_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def not_run(command: str) -> str | None:
    words = command.split()
    return next((NOT_RUN[" ".join(words[:n])] for n in (4, 2, 1) if " ".join(words[:n]) in NOT_RUN), None)


def test_the_readme_has_commands_and_every_skip_is_named() -> None:
    commands = readme_commands(README.read_text())
    assert sum(c.startswith("slm-deploy ") and not not_run(c) for c in commands) >= 8
    unknown = sorted({c.split()[0] for c in commands if not not_run(c)} - {"slm-deploy"} - SYSTEM_PROGRAMS)
    assert not unknown, f"README commands with no runner and no reason to skip: {unknown}"


# Programs of the machine (not of the installed package) that the README's commands use.
SYSTEM_PROGRAMS = {"ssh-keygen"}


def test_every_readme_command_runs_in_a_users_folder(tmp_path: Path) -> None:
    installed = install(tmp_path, build_wheel(tmp_path / "dist"))
    folder = user_project(tmp_path / "my-deploy")
    ran = 0
    for command in readme_commands(README.read_text()):
        if not_run(command):
            continue
        argv = shlex.split(command)
        program = shutil.which(argv[0]) if argv[0] in SYSTEM_PROGRAMS else str(installed.bin / argv[0])
        assert program, f"{argv[0]} is not installed"
        result = subprocess.run(
            [program, *argv[1:]],
            cwd=folder,
            env=installed.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"README command failed: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        ran += 1
    assert ran >= 8


def test_make_demo_on_a_fresh_machine(tmp_path: Path) -> None:
    """`make demo` with Python and make but none of the Debian validators on the PATH: it completes,
    and its review says which validator did not run instead of calling the result clean."""
    make = shutil.which("make")
    assert make is not None
    env = {k: v for k, v in os.environ.items() if k not in {"SLM_REQUIRE_TOOLS", "PYTHONPATH"}}
    env.update(PATH=path_without(tmp_path), COLUMNS="200")
    result = subprocess.run(
        [make, "-C", str(ROOT), "demo", f"OUT={tmp_path / 'out'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The refusal in the middle of a run that succeeds is announced as expected before it is printed.
    announced = result.stdout.index("the next plan is refused on purpose")
    assert announced < result.stdout.index("qwen3-32b --gpu l4 --context 32768")
    assert "the refusal above was expected" in result.stdout and "does not fit" in result.stderr + result.stdout
    assert "==> reviewing everything generated above" in result.stdout
    assert "INCOMPLETE: zero findings, but not run: promtool" in result.stdout
    assert (tmp_path / "out" / "review.sarif").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "manifests").iterdir()) == ["dev", "prod", "staging"]
