"""Fuzzing the command line with generated fleet files, stack files, arguments and paths
(issue 10, "done when"). For every input, the contract in DESIGN.md holds: exit 0, 1 or 2; at most
one `error:` line and never a traceback; nothing written outside --out; nothing of the user's
changed. Bounded: a few dozen examples per command, no deadline, well under a minute in all."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
BASE_FLEET: dict[str, Any] = {
    "fleet": "fz",
    "defaults": {"runtime": "ollama", "quantization": "q4_k_m", "context": 4096, "concurrency": 2},
    "boxes": [
        {"id": "b1", "hardware": {"cpu_arch": "amd64", "cpus": 8, "memory_gib": 16}, "serving": {"model": "qwen3-1.7b"}},
        {
            "id": "b2",
            "hardware": {"cpu_arch": "amd64", "cpus": 16, "memory_gib": 64, "gpu": {"model": "l4", "count": 1}},
            "models": [{"model": "phi-4-mini-instruct"}, {"model": "qwen3-4b"}],
            "listen_address": "192.0.2.10",
        },
    ],
}
# Text that YAML parsers and number conversions have tripped over (issue 10, item 14).
YAML_TRAPS = [
    " " + "9" * 5000,
    " .inf",
    " .nan",
    " 1.0e+308",
    " &a [*a]",
    "\x00",
    "\t",
    "? [a]\n",
    "<<: *x\n",
    "!!python/object:os.system\n",
]
BASE_STACK: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())

weird_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["..", "../../etc", "/dev/zero", "fe80::1%eth0", "0.0.0.0/1", "::", "1e308", "nan", "", " ", "\x00", "é"]),
)
weird_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**63]),
)
plausible = st.sampled_from(
    [1, 2, 4, 8, 16, 64, 4096, 0.5, "ollama", "vllm", "llamacpp", "qwen3-4b", "q8_0", "arm64", True, False]
)
leaves = st.one_of(plausible, plausible, st.none(), st.booleans(), weird_numbers, weird_text)
values = st.recursive(
    leaves, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(weird_text, inner, max_size=3)), max_leaves=6
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(weird_text)] = draw(values)
    return data


def _dump(data: Any) -> str:
    def safe(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): safe(v) for k, v in value.items()}
        if isinstance(value, list):
            return [safe(v) for v in value]
        return value

    try:
        return yaml.safe_dump(safe(data), allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return str(data)


@st.composite
def raw_edits(draw: st.DrawFn, text: str) -> str:
    """Byte-level damage: characters inserted, removed or repeated somewhere in the file."""
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        kind = draw(st.sampled_from(["insert", "cut", "repeat"]))
        if kind == "insert":
            text = text[:at] + draw(st.one_of(st.text(max_size=8), st.sampled_from(YAML_TRAPS))) + text[at:]
        elif kind == "cut":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=20)) :]
        else:
            text = text[:at] + text[at : at + 30] * 3 + text[at:]
    return text


def cli(*args: str) -> tuple[int, str, str]:
    """The console script in-process; an exception escaping it fails the test with its traceback."""
    from slm_deploy import cli as entry

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["slm-deploy", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, bytes]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for name in filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            found[str(path)] = (info.st_mode, path.read_bytes() if path.is_file() and not path.is_symlink() else b"")
    return found


def check_contract(code: int, err: str) -> None:
    event(f"exit {code}" + (f": {err.split(':')[1].strip()[:30]}" if code == 2 and ":" in err else ""))
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    assert err.count("error:") <= 1, err
    if code == 2:
        assert err.lstrip("\n").startswith("error: "), err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(workspace: Path, name: str) -> Path:
    base = workspace / name
    n = 0
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    path = base.parent / f"{base.name}-{n}"
    path.mkdir()
    return path


@FUZZ
@given(
    data=mutated(BASE_FLEET),
    damage=st.sampled_from([False, False, True]),
    user_at_box=st.sampled_from([False, False, True]),
    draw=st.data(),
)
def test_bundle_with_generated_fleets_keeps_the_contract(
    workspace: Path, data: dict[str, Any], damage: bool, user_at_box: bool, draw: st.DataObject
) -> None:
    run = _fresh(workspace, "bundle")
    text = _dump(data)
    if damage:
        text = draw.draw(raw_edits(text))
    (run / "fleet.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
    out = run / "out"
    (out / ("b1" if user_at_box else "other")).mkdir(parents=True)
    (out / ("b1" if user_at_box else "other") / "notes.txt").write_text("the operator's\n")  # never replaced
    (out / "keep.txt").write_text("mine\n")
    before = snapshot(run)
    code, _, err = cli("bundle", str(run / "fleet.yaml"), "--out", str(out))
    check_contract(code, err)
    after = snapshot(run, skip=None)
    for path, state in before.items():
        assert after.get(path) == state, f"{path} changed"
    outside = {p for p in after if not p.startswith(str(out) + os.sep)} - set(before)
    assert not outside, outside


@FUZZ
@given(
    model=st.one_of(st.sampled_from(["qwen3-4b", "phi-4-mini-instruct", "Qwen/Qwen3-8B", "../x", "Qwen/.."]), weird_text),
    gpu=st.one_of(st.none(), st.sampled_from(["l4", "Standard_NC24ads_A100_v4", "Standard_NC8as_T4_v3", "rtx-4090"]), weird_text),
    numbers=st.lists(
        st.sampled_from(["--gpu-count", "--cpus", "--memory-gib", "--context", "--concurrency", "--gpu-memory-utilization"]),
        max_size=3,
    ),
    number=st.one_of(st.sampled_from(["1", "2", "8", "4096", "0.9", "16.5"]), weird_numbers.map(str), weird_text),
    cpu=st.booleans(),
    as_json=st.booleans(),
)
def test_plan_with_generated_arguments_keeps_the_contract(
    model: str, gpu: str | None, numbers: list[str], number: str, cpu: bool, as_json: bool
) -> None:
    args = ["plan", "--model", model]
    if gpu is not None:
        args += ["--gpu", gpu]
    if cpu:
        args.append("--cpu")
    for option in numbers:
        args += [option, number]
    if as_json:
        args.append("--json")
    code, _, err = cli(*args)
    check_contract(code, err)
    if "--gpu-count" in numbers and gpu is None:
        assert code == 2, err  # never planned as if a GPU count without a GPU meant something


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(["empty", "fifo", "devnull", "link-out", "bundle", "garbage", "binary", "deep"]),
    command=st.sampled_from(["verify", "review"]),
)
def test_verify_and_review_of_generated_paths_keep_the_contract(workspace: Path, target: str, command: str) -> None:
    run = _fresh(workspace, "paths")
    victim = run / "victim.txt"
    victim.write_text("hf_" + "v" * 34 + "\n")
    path = run / "target"
    if target == "empty":
        path.mkdir()
    elif target == "fifo":
        os.mkfifo(path)
    elif target == "devnull":
        path = Path("/dev/null")
    elif target == "link-out":
        path.mkdir()
        (path / "MANIFEST.json").symlink_to(victim)
        (path / "compose.yaml").symlink_to(victim)
    elif target == "bundle":
        code, _, err = cli("bundle", str(ROOT / "examples" / "fleet.yaml"), "--out", str(run / "b"), "--box", "kiosk-0003")
        assert code == 0, err
        path = run / "b" / "kiosk-0003"
        (path / "compose.yaml").write_text("services: [1, 2]\n")
    elif target == "garbage":
        path.mkdir()
        (path / "MANIFEST.json").write_text('{"files": "nope", "ignored": 7}')
        (path / "compose.yaml").write_text("services: just-text\n")
    elif target == "binary":
        path.mkdir()
        (path / "compose.yaml").write_bytes(b"\xff\xfe\x00\x01" * 10)
        (path / "MANIFEST.json").write_bytes(b"\xff\x00")
    else:
        path.mkdir()
        (path / "pod.yaml").write_text("a: " + "[" * 200 + "]" * 200 + "\n")
    before = snapshot(run)
    args = ["verify", str(path)] if command == "verify" else ["review", str(path), "--tool", "slm", "--tool", "yamllint"]
    code, _, err = cli(*args)
    check_contract(code, err)
    if command == "review" and target != "bundle":
        assert code != 0  # never "clean" about something it could not fully read
    assert snapshot(run) == before
    assert victim.read_text() == "hf_" + "v" * 34 + "\n"


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=mutated(BASE_STACK), stack=st.one_of(st.just("fz"), weird_text))
def test_preview_with_generated_stack_files_keeps_the_contract(workspace: Path, data: dict[str, Any], stack: str) -> None:
    run = _fresh(workspace, "preview")
    project = run / "project"
    project.mkdir()
    safe_name = stack if stack and "/" not in stack and "\x00" not in stack and len(stack) < 100 else "fz"
    try:
        (project / f"Pulumi.{safe_name}.yaml").write_text(_dump(data))
    except (OSError, ValueError):
        (project / "Pulumi.fz.yaml").write_text(_dump(data))
    out = run / "out"
    out.mkdir()
    (out / "mine.yaml").write_text("user: file\n")
    before = snapshot(run)
    code, _, err = cli("preview", stack, "--project", str(project), "--out", str(out))
    check_contract(code, err)
    after = snapshot(run)
    for path, state in before.items():
        assert after.get(path) == state, f"{path} changed"
    assert all(p.startswith(str(out) + os.sep) for p in set(after) - set(before)), sorted(set(after) - set(before))
