"""The box's release state as Prometheus metrics, for the fleet view (issue 25, item 5): a file in
ROOT/metrics that the bundle's node-exporter reads with its textfile collector
(node_exporter collector/textfile.go: only *.prom files, no client timestamps, plus
node_textfile_mtime_seconds). Written to a temporary name and renamed, so a scrape never reads
half a file; the counts it needs across runs live beside it in ROOT/metrics/state.json.
"""

from __future__ import annotations

import json
import os
import sys

from .boxroot import link_target, statement_of

METRICS_DIR = "metrics"
METRICS_FILE = "slm-release.prom"
STATES = ("installed", "rolled_back")
GATE_RESULTS = ("passed", "failed")


def record_state(root: str, event: str, values: dict[str, str] | None = None, gate: str | None = None) -> None:
    """Never fails the install or rollback it follows: the box's state matters more than its metric."""
    try:
        _record_state(root, event, values, gate)
    except OSError as exc:
        print(f"warning: {root}/{METRICS_DIR}: release metrics not written ({exc.strerror or exc})", file=sys.stderr)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a state.json edited by hand
        print(f"warning: {root}/{METRICS_DIR}/state.json: release metrics not written ({exc})", file=sys.stderr)


def _record_state(root: str, event: str, values: dict[str, str] | None, gate: str | None) -> None:
    import time

    folder = os.path.join(root, METRICS_DIR)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    os.chmod(folder, 0o755)  # node-exporter runs as uid 10001
    path = os.path.join(folder, "state.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        assert isinstance(state, dict) and isinstance(state.get("bundles", {}), dict)
    except (OSError, ValueError, AssertionError):
        state = {}  # unreadable or not ours: start again (the release links are the truth)
    bundles = state.setdefault("bundles", {})
    now = round(time.time(), 3)
    current = link_target(root, "current") or ""
    release = current.split("/")[1] if current.count("/") == 2 else ""
    if values is None and not state.get("fleet"):  # a state file lost: the current release's statement says
        values = statement_of(root, "current")
        if values is not None and not state.get("release"):
            state.update(state="installed", release=release)
    if values is not None:
        state.update(fleet=values["fleet"], box=values["box"])
        bundles[values["release"]] = values["bundle"]
    elif not state.get("box") and current.count("/") == 2:
        state["box"] = current.split("/")[2]
    if event in STATES:
        state.update(state=event, release=release, installed_at=now)
        state["rollbacks"] = int(state.get("rollbacks", 0)) + (event == "rolled_back")
        if event == "installed":  # a new release's gate has not run; after a rollback, the failed one stays
            state.update(gate=None, gate_at=None, gate_release=None)
    elif gate in GATE_RESULTS and state.get("release") == release:
        state.update(gate=gate, gate_at=now, gate_release=release)
    state["bundles"] = {k: v for k, v in bundles.items() if os.path.isdir(os.path.join(root, "releases", k))}
    who = {"fleet": state.get("fleet", ""), "box": state.get("box", "")}
    release = state.get("release", "")
    digest = str(state["bundles"].get(release, "")).replace("sha256:", "")
    lines = _family("slm_release_info", "gauge", "The release this box runs (value 1), with its bundle's digest.")
    lines.append(_series("slm_release_info", {**who, "release": release, "bundle_sha256": digest}, 1))
    lines += _family("slm_release_state", "gauge", "1 for how the current release got there: installed, or rolled_back to.")
    lines += [_series("slm_release_state", {**who, "state": s}, int(state.get("state") == s)) for s in STATES]
    lines += _family("slm_release_installed_timestamp_seconds", "gauge", "When the current release was switched to.")
    lines.append(_series("slm_release_installed_timestamp_seconds", who, state.get("installed_at", 0)))
    lines += _family("slm_rollbacks_total", "counter", "Rollbacks on this box since the agent first ran.")
    lines.append(_series("slm_rollbacks_total", who, int(state.get("rollbacks", 0))))
    if state.get("gate"):
        lines += _family(
            "slm_release_gate_passed", "gauge", "The last health gate: 1 passed, 0 failed, for the release it tested."
        )
        tested = {**who, "release": str(state.get("gate_release") or release)}
        lines.append(_series("slm_release_gate_passed", tested, int(state["gate"] == "passed")))
        lines += _family("slm_release_gate_timestamp_seconds", "gauge", "When the last health gate ran.")
        lines.append(_series("slm_release_gate_timestamp_seconds", who, state["gate_at"]))
    for name, data in (("state.json", json.dumps(state, sort_keys=True)), (METRICS_FILE, "\n".join(lines))):
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(data + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(folder, name))


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _series(name: str, labels: dict[str, str], value: object) -> str:
    # Label values are names the statement's patterns allow (no quote, backslash or newline).
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} " + str(value)
