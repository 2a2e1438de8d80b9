#!/usr/bin/env python3
"""The rollout's plan-versus-actual gate (issue 25), run on the box: the model server's own start-up
report of its KV cache and weights against the bundle's plan.json, within the tolerance it states.

Standard library only (Python 3.7 or later): the playbook copies this file to every box as slm-plan-gate.py, beside the box
agent, and runs it with the box's python3 after the smoke gate. It reads `docker compose logs` of the
model service in the release folder (or a saved log with --logs), prints a table and, last, one JSON
line, and exits 0 (passed, or visibly not checked), 1 (beyond the tolerance, or no start-up line
within --wait) or 2 (no plan or bad arguments). With --since (the release's install time), a server
whose start-up lines are missing and whose container started before then (`docker inspect`
.State.StartedAt) was not restarted by this release: its lines may have rotated out of the log,
and it is not checked rather than failed.

The lines read, at the versions the catalog pins (slm_deploy/catalog/images.yaml):
  llama.cpp b11434  src/llama-kv-cache.cpp:301
                      "llama_kv_cache: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (...)"
                      (once per cache: twice for a sliding-window model, src/llama-kv-cache-iswa.cpp:83,100)
                    src/llama-model.cpp:1932  "%12s model buffer size = %8.2f MiB" (one per buffer type)
                    Both are library INFO messages, which llama-server shows from verbosity 4 on
                    (common/log.cpp:534; default 3, common/common.h:539): the bundle passes -lv 4.
  vLLM v0.11.0      vllm/v1/core/kv_cache_utils.py:1087  "GPU KV cache size: %s tokens" ({:,} formatted)
                    vllm/v1/worker/gpu_model_runner.py:2653  "Model loading took %.4f GiB and %.6f seconds"
  Ollama v0.12.6    ml/device.go:201-239 (logged at INFO by llm/server.go:588 for models on
                    Ollama's own engine): msg="model weights" device=D size="1.2 GiB", msg="kv cache" ...,
                    msg="total memory" ..., sizes by format/bytes.go:52 HumanBytes2 (one decimal).
                    Printed only on Ollama's own engine (llm/server.go:586-589): plan.json then has
                    no check for a model on the older runner (slm_deploy/bundle/startplan.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

MIB = 2**20
GIB = 2**30
UNITS = {"B": 1, "KiB": 2**10, "MiB": MIB, "GiB": GIB}

LLAMA_KV = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells")
LLAMA_MODEL = re.compile(r"(\S+) model buffer size = +([\d.]+) MiB")
VLLM_KV = re.compile(r"KV cache size: ([\d,]+) tokens")
VLLM_LOADED = re.compile(r"Model loading took ([\d.]+) GiB")
OLLAMA_LINE = re.compile(r'msg="(model weights|kv cache|total memory)"(?: device=\S+)? size="([\d.]+) (B|KiB|MiB|GiB)"')

# What each engine must have printed before its figures can be judged, as a user reads it.
START_LINE = {
    "llamacpp": "llama-server's 'llama_kv_cache: size = ...' line (shown from log verbosity 4)",
    "vllm": "vLLM's 'GPU KV cache size: N tokens' line",
    "ollama": 'Ollama\'s memory summary (msg="kv cache"), printed when it loads a model on its own engine',
}


def parse_llamacpp(log: str) -> dict[str, float]:
    """The last start-up's figures: the KV caches it created and the model buffers before them."""
    kv: list[tuple[float, int]] = []
    buffers: list[tuple[str, float]] = []
    for line in log.splitlines():
        model = LLAMA_MODEL.search(line)
        if model:
            if kv:  # a new start-up (a restart): forget the previous one
                kv, buffers = [], []
            buffers.append((model[1], float(model[2])))
        found = LLAMA_KV.search(line)
        if found:
            kv.append((float(found[1]), int(found[2])))
    figures: dict[str, float] = {}
    if kv:
        figures["kv_cache_bytes"] = sum(size for size, _ in kv) * MIB
        figures["kv_cells_per_slot"] = kv[0][1]  # the full-attention cache comes first
    # A CPU_REPACK buffer holds re-laid-out copies of tensors the mapped file also covers.
    weights = [size for name, size in buffers if not name.endswith("_REPACK")]
    if weights and kv:
        figures["weights_bytes"] = sum(weights) * MIB
    return figures


def parse_vllm(log: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    loaded: list[float] = []
    for line in log.splitlines():
        found = VLLM_LOADED.search(line)
        if found:
            if "kv_cache_tokens" in figures:  # a new start-up
                figures, loaded = {}, []
            loaded.append(float(found[1]))
        found = VLLM_KV.search(line)
        if found:
            figures["kv_cache_tokens"] = int(found[1].replace(",", ""))
    if loaded and "kv_cache_tokens" in figures:
        figures["weights_bytes"] = max(loaded) * GIB  # one line per tensor-parallel worker, each per GPU
    return figures


def parse_ollama(log: str) -> dict[str, float]:
    """The last memory summary: every device's lines up to its "total memory" line."""
    block: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in log.splitlines():
        found = OLLAMA_LINE.search(line)
        if not found:
            continue
        size = float(found[2]) * UNITS[found[3]]
        if found[1] == "total memory":
            last, block = block, {}
            continue
        key = "kv_cache_bytes" if found[1] == "kv cache" else "weights_bytes"
        block[key] = block.get(key, 0.0) + size
    return last


PARSERS = {"llamacpp": parse_llamacpp, "vllm": parse_vllm, "ollama": parse_ollama}


def judge_server(server: dict[str, Any], log: str) -> dict[str, Any]:
    """One model server's verdict: passed, failed or not checked, with a row per figure."""
    result = {"service": server["service"], "engine": server["engine"], "model": server["model"], "checks": []}
    if not server["checks"]:
        return {**result, "result": "not checked", "reason": server.get("not_checked") or "nothing to compare"}
    parser = PARSERS.get(server["engine"])
    if parser is None:
        return {**result, "result": "failed", "reason": f"unknown engine {server['engine']!r}: no start-up line to read"}
    reported = parser(log)
    rows = []
    for check in server["checks"]:
        actual = reported.get(check["name"])
        row = {"name": check["name"], "planned": check["planned"], "reported": actual, "tolerance": check["tolerance"]}
        if actual is None:
            row.update(off=None, ok=False)
        else:
            planned = check["planned"]
            row.update(off=abs(actual - planned) / planned if planned else float("inf"))
            # only_below (vLLM's KV tokens): a box with more free memory than planned serves the plan.
            row["above"] = bool(check.get("only_below")) and actual > planned
            row["ok"] = row["above"] or row["off"] <= check["tolerance"]
        rows.append(row)
    result["checks"] = rows
    result["reported"] = reported
    result["skipped"] = server.get("skipped") or {}
    if not reported:
        return {**result, "result": "failed", "reason": f"no start-up report: {START_LINE[server['engine']]} is not in the log"}
    missing = [r["name"] for r in rows if r["reported"] is None]
    beyond = [r for r in rows if r["reported"] is not None and not r["ok"]]
    reasons = [
        f"{r['name']} {_show(r['name'], r['reported'])} reported, {_show(r['name'], r['planned'])} planned "
        f"({r['off']:.1%} off, tolerance {r['tolerance']:.0%})"
        for r in beyond
    ]
    reasons += [f"{name} not reported" for name in missing]
    notes = [
        f"{r['name']} {_show(r['name'], r['reported'])} reported, {r['off']:.1%} more than the "
        f"{_show(r['name'], r['planned'])} planned (fine: only less fails)"
        for r in rows
        if r.get("above") and r["off"] > r["tolerance"]
    ]
    return {**result, "result": "failed" if reasons else "passed", "reason": "; ".join(reasons), "notes": notes}


def judge(plan: dict[str, Any], logs: dict[str, str]) -> dict[str, Any]:
    servers = [judge_server(s, logs.get(s["service"], "")) for s in plan["servers"]]
    return {"box": plan["box"], "result": overall(servers), "servers": servers}


def complete(plan: dict[str, Any], logs: dict[str, str]) -> bool:
    """Every checked server has printed every figure it is judged on (no point waiting longer)."""
    for server in plan["servers"]:
        parser = PARSERS.get(server["engine"])
        if server["checks"] and parser is not None:
            reported = parser(logs.get(server["service"], ""))
            if any(c["name"] not in reported for c in server["checks"]):
                return False
    return True


def _show(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name.endswith("_bytes"):
        return f"{value / MIB:.2f} MiB"
    return f"{value:,.0f}"


def table(verdict: dict[str, Any]) -> str:
    lines = [f"plan vs actual on box {verdict['box']}: {verdict['result']}"]
    header = ("service", "engine", "figure", "planned", "reported", "off", "tolerance", "result")
    rows = [header]
    for server in verdict["servers"]:
        for r in server["checks"]:
            off = "-" if r["off"] is None else f"{r['off']:.1%}"
            planned, reported = _show(r["name"], r["planned"]), _show(r["name"], r["reported"])
            verdict_cell = ("ok (more)" if r.get("above") else "ok") if r["ok"] else "FAILED"
            rows.append(
                (server["service"], server["engine"], r["name"], planned, reported, off, f"{r['tolerance']:.0%}", verdict_cell)
            )
        for name in sorted(server.get("skipped") or {}):
            shown = _show(name, server.get("reported", {}).get(name))
            rows.append((server["service"], server["engine"], name, "-", shown, "-", "-", "not checked"))
        if not server["checks"]:
            rows.append((server["service"], server["engine"], "-", "-", "-", "-", "-", server["result"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]  # noqa: B905 (3.10+)
    lines += [f"{s['service']}: {s['result']}: {s['reason']}" for s in verdict["servers"] if s.get("reason")]
    for server in verdict["servers"]:
        lines += [f"{server['service']}: note: {note}" for note in server.get("notes", [])]
        lines += [f"{server['service']}: {name} {why}" for name, why in sorted((server.get("skipped") or {}).items())]
    return "\n".join(lines)


def _docker(args: list[str], project: str, docker_host: str | None) -> str:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    done = subprocess.run(["docker", *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr if args[:2] == ["compose", "logs"] else done.stdout if done.returncode == 0 else ""


def compose_logs(project: str, service: str, docker_host: str | None) -> str:
    return _docker(["compose", "logs", "--no-color", "--no-log-prefix", service], project, docker_host)


RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as Docker prints it (nanoseconds, usually Z)."""
    found = RFC3339.match(text.strip())
    if not found:
        return None
    import calendar

    fields = [int(found[i]) for i in range(1, 7)]
    if fields[0] < 1971:  # Docker's zero time, 0001-01-01T00:00:00Z: never started
        return None
    seconds = calendar.timegm((*fields, 0, 0, 0)) + float(found[7] or 0)
    if found[8] != "Z":
        sign = 1 if found[8][0] == "+" else -1
        seconds -= sign * (int(found[8][1:3]) * 3600 + int(found[8][4:6]) * 60)
    return seconds


def container_started(project: str, service: str, docker_host: str | None) -> float | None:
    """When the service's container last started (`docker inspect` .State.StartedAt), or None."""
    ids = _docker(["compose", "ps", "-q", service], project, docker_host).split()
    if len(ids) != 1:
        return None
    return parse_time(_docker(["inspect", "-f", "{{.State.StartedAt}}", ids[0]], project, docker_host))


def since_time(value: str) -> float:
    """--since: seconds since the epoch, or a path whose own modification time (a symlink's, not
    its target's) is the release's install time, e.g. the box's `current` link."""
    try:
        return float(value)
    except ValueError:
        return os.lstat(value).st_mtime


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


NOT_RESTARTED = "the model server was not restarted by this release"


def not_restarted(server: dict[str, Any], started: float | None, since: float) -> dict[str, Any] | None:
    """The verdict for a server whose start-up lines are missing because its container was not
    started again by this release (unchanged service: `up` left it running, and its start-up lines
    may have rotated out of the log since), or None when that is not the case."""
    if started is None or started >= since or not server.get("reason", "").startswith("no start-up report"):
        return None
    reason = (
        f"{NOT_RESTARTED} (its container started "
        f"{_iso(started)}, before the release was installed {_iso(since)}) and its start-up lines are no "
        "longer in the log; the release that started it was gated"
    )
    return {**server, "result": "not checked", "reason": reason}


def overall(servers: list[dict[str, Any]]) -> str:
    results = {s["result"] for s in servers}
    return "failed" if "failed" in results else "not checked" if "not checked" in results else "passed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slm-plan-gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=".", help="the release folder (compose project and plan.json)")
    parser.add_argument("--plan", help="plan.json (default: PROJECT/plan.json)")
    parser.add_argument("--logs", help="read the model server's log from this file ('-': stdin) instead of docker compose")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the start-up lines")
    parser.add_argument("--docker-host", help="DOCKER_HOST for docker compose")
    parser.add_argument(
        "--since",
        help="when this release was installed: seconds since the epoch, or a path whose mtime is (the `current` link); "
        "a server whose start-up lines are missing and whose container started before then is not checked",
    )
    args = parser.parse_args(argv)
    path = args.plan or os.path.join(args.project, "plan.json")
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
        if not isinstance(plan, dict) or not isinstance(plan.get("servers"), list):
            raise ValueError("not a plan.json: no list of servers")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {path}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2
    since = None
    if args.since is not None:
        try:
            since = since_time(args.since)
        except OSError as exc:
            print(f"error: {args.since}: --since: {exc.strerror or exc}", file=sys.stderr)
            return 2
    started: dict[str, float | None] = {}

    def restarted_verdicts(verdict: dict[str, Any]) -> dict[str, Any]:
        if since is None or args.logs:
            return verdict
        servers = []
        for server in verdict["servers"]:
            if server["result"] == "failed" and server["reason"].startswith("no start-up report"):
                if server["service"] not in started:
                    started[server["service"]] = container_started(args.project, server["service"], args.docker_host)
                server = not_restarted(server, started[server["service"]], since) or server
            servers.append(server)
        return {**verdict, "servers": servers, "result": overall(servers)}

    if args.logs:
        with open(sys.stdin.fileno() if args.logs == "-" else args.logs, encoding="utf-8", errors="replace") as f:
            text = f.read()
        logs = {s["service"]: text for s in plan["servers"]}
        verdict = judge(plan, logs)
    else:
        deadline = time.monotonic() + args.wait
        while True:
            logs = {s["service"]: compose_logs(args.project, s["service"], args.docker_host) for s in plan["servers"]}
            # A server that was not restarted will not print its lines again: no point waiting for them.
            verdict = restarted_verdicts(judge(plan, logs))
            stale = {s["service"] for s in verdict["servers"] if s["reason"].startswith(NOT_RESTARTED)}
            pending = {**plan, "servers": [s for s in plan["servers"] if s["service"] not in stale]}
            if complete(pending, logs) or time.monotonic() >= deadline:
                break
            time.sleep(5)
    if args.wait and verdict["result"] == "failed":
        for server in verdict["servers"]:
            if server["reason"].startswith("no start-up report"):
                server["reason"] += f" after {args.wait:g} s"
    print(table(verdict))
    print(json.dumps(verdict, sort_keys=True))
    return 1 if verdict["result"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
