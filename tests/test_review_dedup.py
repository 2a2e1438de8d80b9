"""De-duplication by content (issue 24): what differs only by path or by a box's own id is
checked once, and every finding is reported for every file that shares the content."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from slm_deploy.bench import synthetic_fleet
from slm_deploy.review import review
from tests.conftest import ROOT

BAD_COMPOSE = "services:\n  app:\n    image: nginx:latest\n    privileged: true\n"


def _fleet_file(tmp_path: Path, boxes: int) -> Path:
    path = tmp_path / f"fleet-{boxes}.yaml"
    path.write_text(yaml.safe_dump(synthetic_fleet(boxes)))
    return path


def test_identical_files_at_different_paths_are_checked_once_and_reported_for_each(tmp_path: Path) -> None:
    for where in ("one", "two/deeper"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "compose.yaml").write_text(BAD_COMPOSE)
    report = review(paths=[tmp_path], tools=["slm"])
    assert (report.files, report.distinct) == (2, 1)
    by_file: dict[str, set[str]] = {}
    for finding in report.findings:
        by_file.setdefault(finding.file, set()).add(finding.rule)
    assert set(by_file) == {f"{tmp_path}/one/compose.yaml", f"{tmp_path}/two/deeper/compose.yaml"}
    assert by_file[f"{tmp_path}/one/compose.yaml"] == by_file[f"{tmp_path}/two/deeper/compose.yaml"]


def test_boxes_that_differ_only_by_id_add_no_distinct_content(tmp_path: Path) -> None:
    """Before, the onnx box's built image tag (a hash over a Dockerfile naming the box) made every
    onnx box's compose.yaml distinct."""
    kinds = len(yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())["boxes"])
    once = review(fleets=[_fleet_file(tmp_path, kinds)], tools=["slm"])
    thrice = review(fleets=[_fleet_file(tmp_path, 3 * kinds)], tools=["slm"])
    assert thrice.files == 3 * once.files
    assert thrice.distinct == once.distinct


def test_one_bundle_per_kind_of_box_gives_the_keys_of_every_box_built_in_full(tmp_path: Path) -> None:
    """The review bundles one box per specification; the content keys must be those of bundling
    every box (a bundle that depended on a box's place in the fleet would break this)."""
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet
    from slm_deploy.review.dedup import fleet_artifacts, fleet_key

    path = _fleet_file(tmp_path, 20)
    fleet = load_fleet(path)
    full = sorted(
        (f"{path.name}:{bundle.box.id}/{rel}", fleet_key(bundle.box.id, rel, data))
        for bundle in build_fleet(fleet, fleet.boxes)
        for rel, data in bundle.files.items()
    )
    assert sorted((a.label, a.key) for a in fleet_artifacts(path, tmp_path / "work")) == full


SPLIT_REVIEW = """
import json, sys
from pathlib import Path
from slm_deploy.review import runner
from slm_deploy.review.tools import yamllint
calls = []
real = yamllint.run
def counting(artifacts, sink):
    calls.append([a.key for a in artifacts])
    real(artifacts, sink)
yamllint.run = counting
report = runner.review(paths=[Path(sys.argv[1])], stacks=["dev", "staging"], tools=["yamllint"])
print(json.dumps({"calls": calls, "files": report.files, "distinct": report.distinct,
                  "checked": report.tools["yamllint"].checked,
                  "findings": sorted([f.file, f.rule] for f in report.findings)}))
"""


def test_files_checked_while_the_stacks_are_previewed_are_not_checked_again_with_them(tmp_path: Path) -> None:
    """A review of stacks and paths gives the per-file tools the paths' files while the stacks are
    previewed (issue 24), then the stacks' files: a content in both (a stack's manifest copied
    into a path) is checked once; findings reach every file with the content, in the files' order."""
    import subprocess
    import sys

    from tests.conftest import run_cli

    out = tmp_path / "previewed"
    assert run_cli("preview", "dev", "--out", str(out), cwd=ROOT).returncode == 0
    manifest = next(p for p in sorted(out.rglob("*.yaml")) if "Deployment" in p.read_text())
    given = tmp_path / "given"
    (given / "sub").mkdir(parents=True)
    (given / "copy.yaml").write_bytes(manifest.read_bytes())  # also in stack dev
    for bad in ("bad.yaml", "sub/bad.yaml"):
        (given / bad).write_text("key: value   \n")  # trailing spaces
    done = subprocess.run([sys.executable, "-c", SPLIT_REVIEW, str(given)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    early, late = result["calls"]  # two runs: the paths' contents first, the stacks' after
    assert len(early) == 2 and not set(early) & set(late), result["calls"]  # copy.yaml's content is not given again
    assert result["checked"] == len(early) + len(late) == len(set(early + late))  # each content once
    assert result["files"] - result["distinct"] >= 2  # bad.yaml's twin, and the copy's in stack dev
    bad = [f for f, rule in result["findings"] if rule == "yamllint:trailing-spaces"]
    assert bad == [f"{given}/bad.yaml", f"{given}/sub/bad.yaml"], result["findings"]


def test_a_tool_that_ran_once_keeps_its_own_order_of_findings(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The JSON and SARIF reports keep the findings' order. Only a tool whose findings came from
    two runs has them merged in the files' order; checkov (one run, its frameworks in its own
    order) keeps the order it reported in (it was re-sorted by file for a while)."""
    from slm_deploy.review import runner
    from tests.test_review_contract import MANIFEST

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Dockerfile").write_text("FROM nginx:latest\nUSER root\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deploy.yaml").write_text(MANIFEST)
    reported: list[tuple[str, str]] = []
    real = runner._ToolRuns._sink

    def recording(self: runner._ToolRuns, tool: str) -> runner.Sink:
        sink = real(self, tool)
        inner = sink.report

        def report(art: runner.Artifact, rule: str, *rest: str) -> None:
            reported.append((art.label, rule))
            inner(art, rule, *rest)

        sink.report = report
        return sink

    monkeypatch.setattr(runner._ToolRuns, "_sink", recording)
    result = review(paths=[tmp_path], tools=["checkov"])
    files = {label.rsplit("/", 2)[-2] for label, _ in reported}
    assert files == {"a", "b"}, reported  # both files have findings: their order is the test
    assert [(f.file, f.rule) for f in result.findings] == reported
