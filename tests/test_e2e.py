"""End to end: every subcommand of the installed console script, run as a process from folders that
are not the repository (see tests/e2e.py for how the wheel is built and installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from slm_deploy.cli import main as cli_group
from tests.conftest import ROOT, need_binary
from tests.e2e import Installed, assert_clean_failure, build_wheel, install, path_without, user_project

pytestmark = pytest.mark.e2e
# Where a scaffold's CI installs slm-deploy from: the wheel these tests install is a local file.
E2E_PACKAGE = "slm-deploy @ git+https://github.com/example/slm-deploy.git@0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("e2e")
    return install(base, build_wheel(base / "dist"))


@pytest.fixture()
def elsewhere(tmp_path: Path) -> Path:
    """A working folder that is not the repository and has nothing in it."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return user_project(tmp_path_factory.mktemp("e2e-project") / "my-deploy")


def test_the_wheel_carries_everything_the_command_reads(installed: Installed) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for required in (
        "slm_deploy/stacks/entry.py",
        "slm_deploy/policies/skips.yaml",
        "slm_deploy/policies/checkov_checks/__init__.py",
        "slm_deploy/templates/Caddyfile.jinja",
        "slm_deploy/catalog/models.yaml",
        "slm_deploy/catalog/constraints.txt",  # what `slm-deploy init` pins a scaffold to
        "slm_deploy/schemas/crds/LICENSE",
        "slm_deploy/schemas/pulumi/NOTICE",
    ):
        assert required in names, required
    # No top-level module other than the package: nothing named `stacks`, `policies` or `tests`.
    assert {n.split("/")[0] for n in names} == {"slm_deploy", f"{installed.wheel.name.split('-')[0]}-0.1.0.dist-info"}


def test_the_installed_package_is_imported_not_the_checkout(installed: Installed, elsewhere: Path) -> None:
    out = subprocess.run(
        [str(installed.bin / "python"), "-c", "import slm_deploy; print(slm_deploy.__file__)"],
        cwd=elsewhere,
        env=installed.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(out.stdout.strip()).is_relative_to(installed.venv), out.stdout


@pytest.mark.parametrize("command", [None, *sorted(cli_group.commands)])
def test_help_of_every_subcommand(installed: Installed, elsewhere: Path, command: str | None) -> None:
    result = installed.run(*([command] if command else []), "--help", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: slm-deploy"), result.stdout[:200]
    assert not result.stderr


def test_plan_from_any_folder(installed: Installed, elsewhere: Path) -> None:
    table = installed.run("plan", "--model", "phi-4-mini-instruct", "--gpu", "l4", cwd=elsewhere)
    assert table.returncode == 0, table.stderr
    assert "--max-model-len" in table.stdout
    data = installed.run("plan", "--model", "Qwen/Qwen3-8B", "--gpu", "Standard_NC24ads_A100_v4", "--json", cwd=elsewhere)
    assert data.returncode == 0, data.stderr
    assert json.loads(data.stdout)["fits"] is True
    refused = installed.run("plan", "--model", "qwen3-32b", "--gpu", "l4", "--context", "32768", cwd=elsewhere)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_bundle_verify_and_review_of_a_users_fleet(installed: Installed, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    bundle = installed.run("bundle", str(project / "examples" / "fleet.yaml"), "--out", str(out), cwd=project)
    assert bundle.returncode == 0, bundle.stderr
    boxes = sorted(p.name for p in out.iterdir() if p.is_dir())
    fleet = yaml.safe_load((project / "examples" / "fleet.yaml").read_text())
    assert boxes == sorted(b["id"] for b in fleet["boxes"])
    assert (out / boxes[0] / "gateway" / "Caddyfile").is_file() and (out / boxes[0] / "MANIFEST.json").is_file()

    assert installed.run("verify", str(out / boxes[0]), cwd=tmp_path).returncode == 0
    (out / boxes[0] / "compose.yaml").write_text("services: {}\n")
    changed = installed.run("verify", str(out / boxes[0]), cwd=tmp_path)
    assert changed.returncode == 1 and "compose.yaml" in changed.stdout + changed.stderr

    review = installed.run("review", str(out / boxes[1]), "--json", cwd=tmp_path)
    assert review.returncode == 0, review.stdout[-3000:] + review.stderr
    report = json.loads(review.stdout)
    assert report["clean"] and report["files"] > 5 and report["tools"]["checkov"]["checked"] > 0


def test_preview_reads_the_stack_file_of_the_current_folder_or_project(
    installed: Installed, project: Path, tmp_path: Path
) -> None:
    here = installed.run("preview", "dev", "--out", str(tmp_path / "here"), cwd=project)
    assert here.returncode == 0, here.stderr
    manifests = sorted((tmp_path / "here").rglob("*.yaml"))
    assert manifests and any("deployment-" in m.name for m in manifests)

    there = installed.run("preview", "dev", "--project", str(project), "--out", str(tmp_path / "there"), cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert [p.read_bytes() for p in manifests] == [p.read_bytes() for p in sorted((tmp_path / "there").rglob("*.yaml"))]


def test_preview_without_a_stack_file_is_one_error_line(installed: Installed, elsewhere: Path) -> None:
    assert_clean_failure(installed.run("preview", "dev", cwd=elsewhere), "Pulumi.dev.yaml")


def test_review_of_stacks_and_a_fleet_from_a_users_folder(installed: Installed, project: Path) -> None:
    result = installed.run("review", "--stack", "dev", "--fleet", "examples/fleet.yaml", "--json", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] and report["tools"]["kubernetes-validate"]["checked"] > 0
    assert report["tools"]["slm"]["checked"] > 0


def test_missing_validator_is_reported_not_run_never_clean(installed: Installed, project: Path, tmp_path: Path) -> None:
    """A fresh machine: no promtool. The review says so; it is an error only when asked to be."""
    bundles = tmp_path / "b"
    assert (
        installed.run("bundle", "examples/fleet.yaml", "--out", str(bundles), "--box", "store-0001", cwd=project).returncode == 0
    )
    bare = path_without(tmp_path)
    result = installed.run("review", str(bundles), cwd=tmp_path, path=bare, require_tools=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "not run (not installed: promtool" in result.stdout
    assert "INCOMPLETE" in result.stdout and "clean: zero findings" not in result.stdout

    as_json = installed.run(
        "review", str(bundles), "--json", "--sarif", str(tmp_path / "r.sarif"), cwd=tmp_path, path=bare, require_tools=False
    )
    report = json.loads(as_json.stdout)
    assert report["complete"] is False and "promtool" in report["not_run"]
    runs = {run["tool"]["driver"]["name"]: run for run in json.loads((tmp_path / "r.sarif").read_text())["runs"]}
    assert runs["promtool"]["invocations"][0]["executionSuccessful"] is False

    required = installed.run("review", str(bundles), "--require-tools", cwd=tmp_path, path=bare, require_tools=False)
    assert_clean_failure(required, "promtool")


def test_bad_input_is_one_error_line_from_the_installed_command(installed: Installed, elsewhere: Path) -> None:
    assert_clean_failure(installed.run("bundle", "no-such-fleet.yaml", "--out", "out", cwd=elsewhere))
    (elsewhere / "fleet.yaml").write_text("boxes: [{id: x, hardware: {gpu: {count: -1}}}]\n")
    assert_clean_failure(installed.run("bundle", "fleet.yaml", "--out", "out", cwd=elsewhere), "fleet.yaml")
    assert not (elsewhere / "out").exists()
    assert_clean_failure(installed.run("plan", "--model", "no-such-model", "--gpu", "l4", cwd=elsewhere), "no-such-model")
    assert_clean_failure(installed.run("review", cwd=elsewhere))


def test_the_pulumi_language_host_installs_the_project_from_requirements_txt(installed: Installed, tmp_path: Path) -> None:
    """What `pulumi install`/`pulumi up` does with `toolchain: pip` (sdk/python/toolchain/pip.go): create
    the virtualenv named in Pulumi.yaml and run `python -m pip install -r requirements.txt` in the
    project folder. Done here into a fresh venv (dependencies linked from this environment so no
    network is needed), then the program's entry point is imported from the project folder."""
    project_yaml = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    options = project_yaml["runtime"]["options"]
    assert project_yaml["runtime"]["name"] == "python" and options["toolchain"] == "pip"
    program_dir = ROOT / project_yaml.get("main", ".")
    requirements = program_dir / "requirements.txt"
    assert requirements.is_file(), "Pulumi's pip toolchain installs requirements.txt from the program folder"
    assert (program_dir / "__main__.py").is_file()

    from tests.e2e import SOURCE_IGNORE, clean_env, pip_install, venv_with_dependencies

    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=SOURCE_IGNORE)
    venv = clone / options["virtualenv"]
    pip = pip_install(venv_with_dependencies(venv, tmp_path / "deps"), "-r", "requirements.txt", cwd=clone)
    assert pip.returncode == 0, pip.stderr[-3000:]
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import slm_deploy.stacks.entry as e, slm_deploy; print(slm_deploy.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()).is_relative_to(venv)


def test_init_from_a_local_wheel_says_the_pin_needs_an_index(installed: Installed, elsewhere: Path) -> None:
    """Installed from a wheel file (as here), no runner can install this slm-deploy and a bare
    `slm-deploy==VERSION` would install whatever an index serves under that name: init refuses with
    one line naming --package, writes nothing, and writes the scaffold once --package is given."""
    refused = installed.run("init", "repo", "--api-range", "20.61.0.0/16", cwd=elsewhere)
    assert_clean_failure(refused)
    assert refused.stderr.startswith("error: arguments: --package: required"), refused.stderr
    assert "installed from a local path (file://" in refused.stderr and "#sha256=" in refused.stderr
    assert not (elsewhere / "repo").exists()
    done = installed.run("init", "repo", "--api-range", "20.61.0.0/16", "--package", E2E_PACKAGE, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert E2E_PACKAGE in (elsewhere / "repo" / "requirements.txt").read_text().splitlines()


def test_the_wheel_is_installed_even_with_a_checkout_on_pythonpath(
    installed: Installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As COMMON practice runs the suite (PYTHONPATH=the checkout), with the egg-info that `make`'s
    editable install leaves in the checkout: pip must still install the wheel, console script included."""
    checkout = tmp_path / "checkout"
    info = checkout / "slm_deploy.egg-info"
    info.mkdir(parents=True)
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: slm-deploy\nVersion: {installed.wheel.name.split('-')[1]}\n")
    monkeypatch.setenv("PYTHONPATH", str(checkout))
    again = install(tmp_path / "again", installed.wheel)
    assert (again.bin / "slm-deploy").is_file()


def test_the_bundle_readmes_smoke_command_runs_under_sudo(installed: Installed, project: Path, tmp_path: Path) -> None:
    """The box's README runs smoke with sudo (the secrets are root's). sudo does not keep the
    caller's PATH (Debian and Ubuntu sudoers: `Defaults secure_path=...`), so a `slm-deploy` from a
    virtual environment or ~/.local/bin is "command not found" unless the command resolves it first."""
    out = tmp_path / "bundles"
    assert installed.run("bundle", str(project / "examples" / "fleet.yaml"), "--out", str(out), cwd=project).returncode == 0
    box = sorted(p for p in out.iterdir() if p.is_dir())[0]
    readme = (box / "README.md").read_text()
    (line,) = [c for c in (ln.split("  #")[0].strip() for ln in readme.splitlines()) if c.startswith("sudo") and " smoke " in c]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sudo").write_text('#!/bin/sh\nexec env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"\n')
    (fake / "sudo").chmod(0o755)
    (box / "secrets").mkdir(exist_ok=True)
    (box / "secrets" / "api_key").write_text("k" * 40 + "\n")
    openssl = need_binary("openssl")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "key"),
            "-out",
            str(box / "gateway" / "tls_cert.pem"),  # init-secrets.sh's readable copy of secrets/tls_cert
            "-subj",
            "/CN=localhost",
            "-days",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    line = line.replace("https://localhost:8443", "https://127.0.0.1:9")  # nothing listens there
    done = subprocess.run(
        ["sh", "-c", line + " --timeout 2"],
        cwd=box,
        env=installed.env(f"{fake}{os.pathsep}/usr/bin:/bin"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "not found" not in done.stderr, done.stderr
    assert done.returncode == 1 and "connection refused" in done.stdout, done.stdout + done.stderr


def test_init_from_the_installed_wheel_writes_the_tested_pins(installed: Installed, elsewhere: Path) -> None:
    assert installed.run("init", "repo", "--api-range", "20.61.0.0/16", "--package", E2E_PACKAGE, cwd=elsewhere).returncode == 0
    pins = (elsewhere / "repo" / "constraints.txt").read_text()
    assert "pulumi==" in pins and pins.endswith((ROOT / "constraints.txt").read_text())
