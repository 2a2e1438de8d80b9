"""The fleet view from metrics (issue 25, item 5): the box agent's release metrics, node-exporter
reading them, the central Prometheus files `fleet monitoring` writes, and the whole chain live
(agent -> node-exporter -> box Prometheus -> central Prometheus federating, rules firing)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.gateway import RELEASE_METRICS_PATH
from slm_deploy.rollout import boxagent, fleetview
from slm_deploy.rollout.boxagent import metrics as agent_metrics
from tests.conftest import need_binary, run_cli, stop
from tests.test_gateway_live import API_KEY, FakeOpenAI, running_gateway
from tests.test_observability import metric_names
from tests.test_prometheus_live import api, wait_for
from tests.test_rollout import FLEET, keypair

BOX = "kiosk-0003"  # ring "rest" in examples/fleet.yaml
OLD, NEW = "2026.12.06-1", "2026.12.07-1"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two signed releases of BOX (layout archives) and the allowed_signers that trusts them."""
    folder = tmp_path_factory.mktemp("releases")
    key, line = keypair(folder, "release_key")
    signers = folder / "allowed_signers"
    signers.write_text(line)
    archives = []
    for sequence, release in enumerate((OLD, NEW), 1):
        layout = folder / release
        args = ("--release", release, "--sequence", str(sequence), "--key", str(key), "--layout", str(layout), "--box", BOX)
        done = run_cli("publish", str(FLEET), *args)
        assert done.returncode == 0, done.stderr
        archives.append(layout / f"{BOX}.oci.tar")
    return archives[0], archives[1], signers


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "slm_deploy.rollout.boxagent", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def install(root: Path, archive: Path, signers: Path) -> dict[str, str]:
    done = agent("install", "--box", BOX, "--allowed-signers", str(signers), "--root", str(root), "--layout", str(archive))
    result: dict[str, str] = json.loads(done.stdout)
    return result


def samples(root: Path) -> dict[str, float]:
    """The textfile as node-exporter reads it: `name{labels}` -> value."""
    text = (root / "metrics" / "slm-release.prom").read_text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}


def test_the_agent_writes_its_release_state_for_node_exporter(tmp_path: Path, releases: tuple[Path, Path, Path]) -> None:
    old, new, signers = releases
    root = tmp_path / "box"
    first = install(root, old, signers)
    who = f'fleet="retail-stores",box="{BOX}"'
    digest = first["bundle"].removeprefix("sha256:")
    got = samples(root)
    assert got[f'slm_release_info{{{who},release="{OLD}",bundle_sha256="{digest}"}}'] == 1
    assert got[f'slm_release_state{{{who},state="installed"}}'] == 1
    assert got[f'slm_release_state{{{who},state="rolled_back"}}'] == 0
    assert got[f"slm_rollbacks_total{{{who}}}"] == 0
    assert not any(k.startswith("slm_release_gate") for k in got)  # no gate has run yet
    agent("gate", "--root", str(root), "--result", "passed")
    assert samples(root)[f'slm_release_gate_passed{{{who},release="{OLD}"}}'] == 1

    install(root, new, signers)
    got = samples(root)
    assert any(k.startswith(f'slm_release_info{{{who},release="{NEW}"') for k in got)
    assert not any(k.startswith("slm_release_gate") for k in got)  # the new release's gate has not run
    agent("gate", "--root", str(root), "--result", "failed")
    assert samples(root)[f'slm_release_gate_passed{{{who},release="{NEW}"}}'] == 0

    agent("rollback", "--root", str(root))
    got = samples(root)
    assert got[f'slm_release_info{{{who},release="{OLD}",bundle_sha256="{digest}"}}'] == 1
    assert got[f'slm_release_state{{{who},state="rolled_back"}}'] == 1
    assert got[f"slm_rollbacks_total{{{who}}}"] == 1
    assert got[f'slm_release_gate_passed{{{who},release="{NEW}"}}'] == 0  # why it rolled back stays visible
    agent("gate", "--root", str(root), "--result", "passed")  # the release it is back on passes
    assert samples(root)[f'slm_release_gate_passed{{{who},release="{OLD}"}}'] == 1
    assert sorted(p.name for p in (root / "metrics").iterdir()) == ["slm-release.prom", "state.json"]  # no temporary left


@pytest.mark.parametrize("state", ['{"bundles": []}', '{"bundles": {"r": 1}, "rollbacks": "x"}', "[1]", "not json"])
def test_a_state_file_edited_by_hand_never_fails_the_agent(tmp_path: Path, releases: tuple[Path, Path, Path], state: str) -> None:
    """The playbook records the gate with the agent after a release passed; an agent that failed on
    a state.json it could not use rolled that good release back (outside review, H3)."""
    old, _, signers = releases
    root = tmp_path / "box"
    install(root, old, signers)
    (root / "metrics" / "state.json").write_text(state)
    agent("gate", "--root", str(root), "--result", "passed")  # exit 0 (agent() asserts it)
    who = f'fleet="retail-stores",box="{BOX}"'
    if state != '{"bundles": {"r": 1}, "rollbacks": "x"}':  # started again from the release links
        assert samples(root)[f'slm_release_gate_passed{{{who},release="{OLD}"}}'] == 1


@pytest.mark.tools
def test_the_release_metrics_pass_promtool_check_metrics(tmp_path: Path, releases: tuple[Path, Path, Path]) -> None:
    promtool = need_binary("promtool")
    old, _, signers = releases
    install(tmp_path, old, signers)
    agent("gate", "--root", str(tmp_path), "--result", "passed")
    text = (tmp_path / "metrics" / "slm-release.prom").read_bytes()
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert done.returncode == 0 and not done.stdout and not done.stderr, done.stdout + done.stderr


def test_node_exporter_in_a_bundle_reads_the_agents_metrics_folder() -> None:
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet

    fleet = load_fleet(FLEET)
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == BOX))
    service = yaml.safe_load(bundle.files["compose.yaml"])["services"]["node-exporter"]
    directory = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--collector.textfile.directory="))
    assert "--collector.textfile" in service["command"]  # --collector.disable-defaults turned it off
    (mount,) = [v for v in service["volumes"] if v["target"] == directory]
    assert mount["source"] == "${SLM_ROOT:-" + boxagent.DEFAULT_ROOT + "}/" + boxagent.METRICS_DIR
    assert mount["read_only"] is True and mount["bind"] == {"create_host_path": True}


def monitoring(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("fleet", "monitoring", str(FLEET), "--release", NEW, "--out", str(out), *extra)


@pytest.mark.tools
def test_fleet_monitoring_writes_what_promtool_accepts_and_a_rolled_back_box_fires(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    from slm_deploy.fleet import load_fleet

    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(
        f"{BOX}: {{ansible_host: 10.1.2.3}}\nstore-0001: {{ansible_host: a, slm_gate_host: s1.example, slm_gate_connect_to: 10.9.9.9}}\n"
    )
    out = tmp_path / "central"
    done = monitoring(out, "--hosts", str(hosts))
    assert done.returncode == 0, done.stderr
    again = monitoring(tmp_path / "again", "--hosts", str(hosts))
    assert again.returncode == 0, again.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert [(out / p).read_bytes() for p in files] == [(tmp_path / "again" / p).read_bytes() for p in files]
    ports = {b.id: b.options.gateway_port for b in load_fleet(FLEET).boxes}
    port = ports[BOX]
    (target,) = json.loads((out / "targets" / f"{BOX}.json").read_text())
    assert target == {"labels": {"box": BOX, "fleet": "retail-stores", "ring": "rest"}, "targets": [f"10.1.2.3:{port}"]}
    assert json.loads((out / "targets" / "store-0001.json").read_text())[0]["labels"]["ring"] == "canary"
    assert json.loads((out / "targets" / "store-0001.json").read_text())[0]["targets"] == [
        f"10.9.9.9:{ports['store-0001']}"
    ]  # as the gate
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:  # the files `rollout` fetches for its gate, per box
        box = job["job_name"].split("/")[1]
        assert job["scheme"] == "https" and job["tls_config"]["server_name"] == ("s1.example" if box == "store-0001" else box)
        for name in (job["authorization"]["credentials_file"], job["tls_config"]["ca_file"]):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("x")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules/retail-stores.rules.yml"]):
        checked = subprocess.run([promtool, *args], cwd=out, capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # The generated unit test: a rolled-back box fires SlmBoxRolledBack at once, SlmBoxNotOnTargetRelease later.
    tested = subprocess.run(
        [promtool, "test", "rules", "retail-stores.rules.test.yml"],
        cwd=out / "rules",
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # ... and the test would catch a rule that never fires.
    rules = out / "rules" / "retail-stores.rules.yml"
    rules.write_text(rules.read_text().replace('"} == 1) * on', '"} == 2) * on'))
    broken = subprocess.run(
        [promtool, "test", "rules", "retail-stores.rules.test.yml"],
        cwd=out / "rules",
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode != 0 and "SlmBoxRolledBack" in broken.stdout + broken.stderr


def test_fleet_monitoring_refuses_a_bad_release_name_in_one_line(tmp_path: Path) -> None:
    done = run_cli("fleet", "monitoring", str(FLEET), "--release", "../x", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: arguments: --release:") and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


DASHBOARD = fleetview.dashboard()
AGENT_SERIES = {
    "slm_release_info",
    "slm_release_state",
    "slm_release_installed_timestamp_seconds",
    "slm_rollbacks_total",
    "slm_release_gate_passed",
    "slm_release_gate_timestamp_seconds",
    "up",
}


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def test_the_fleet_dashboard_has_stable_ids_and_reads_only_series_that_exist() -> None:
    assert fleetview.dashboard() == DASHBOARD
    assert DASHBOARD["uid"] == "slm-fleet"
    assert [p["id"] for p in DASHBOARD["panels"]] == list(range(1, len(DASHBOARD["panels"]) + 1))
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and "fleet" in variables
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
    panels = {p["title"]: p for p in DASHBOARD["panels"]}
    assert panels["Target release"]["options"]["textMode"] == "name"  # shows the release, not "1"
    table = panels["Boxes"]
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]  # one row per box
    titles = set(panels)
    assert {"Boxes", "Target release", "Boxes on the target release, per ring"} <= titles
    groups = fleetview.rule_groups("retail-stores", NEW)
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    used = set().union(*(metric_names(e) for _, e in expressions(DASHBOARD)))
    used |= set().union(*(metric_names(r["expr"]) for g in groups for r in g["rules"]))
    assert used - recorded <= AGENT_SERIES, used - recorded - AGENT_SERIES
    # ... and every series the agent writes is one of those (tests above read them from its file).
    assert set(re.findall(r'_family\(\s*"(\w+)"', Path(agent_metrics.__file__).read_text())) == AGENT_SERIES - {"up"}


@pytest.mark.tools
def test_every_fleet_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    rules = [
        {"record": f"slm_test:query_{i}", "expr": e.replace("$fleet", ".*")} for i, (_, e) in enumerate(expressions(DASHBOARD))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- live: agent -> node-exporter textfile -> box Prometheus -> central Prometheus (federation) ---


def free_port() -> int:
    from tests.test_gateway_live import free_port as port

    return port()


def serve(binary: str, args: list[str], ready: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: urllib.request.urlopen(ready, timeout=1).status == 200, 30, ready, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def box_cert(directory: Path) -> None:
    """The gateway's certificate as init-secrets.sh makes it (CN and DNS name the box id)."""
    subprocess.run(
        [
            *(need_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-days", "2", "-subj", f"/CN={BOX}", "-addext", f"subjectAltName=DNS:{BOX},IP:127.0.0.1"),
            *("-keyout", str(directory / "tls_key"), "-out", str(directory / "tls_cert")),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def chain(tmp_path: Path, releases: tuple[Path, Path, Path]) -> Iterator[tuple[str, Path, Any]]:
    """The box ROOT, its node-exporter, Prometheus and gateway (the bundle's own configs), and the
    central Prometheus with the files `fleet monitoring` wrote; every address on loopback."""
    from slm_deploy.bundle.writer import build_fleet
    from slm_deploy.fleet import load_fleet
    from tests.test_gateway_live import API_KEY, _caddy

    exporter_bin = need_binary("prometheus-node-exporter")
    prometheus_bin = need_binary("prometheus")

    def prometheus(config: Path, data: Path) -> int:
        """A Prometheus on a free loopback port with CONFIG, stopped with the chain: its port."""
        port = free_port()
        args = [f"--config.file={config}", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"]
        procs.append(serve(prometheus_bin, args, f"http://127.0.0.1:{port}/-/ready"))
        return port

    caddy = need_binary("caddy")
    root = tmp_path / "box"
    (root / "metrics").mkdir(parents=True)
    fleet = load_fleet(FLEET)
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == BOX))
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        try:
            node = free_port()
            procs.append(
                serve(
                    exporter_bin,
                    [
                        f"--web.listen-address=127.0.0.1:{node}",
                        "--collector.disable-defaults",
                        "--collector.textfile",
                        f"--collector.textfile.directory={root / 'metrics'}",
                    ],
                    f"http://127.0.0.1:{node}/metrics",
                )
            )
            config = yaml.safe_load(bundle.files["prometheus/prometheus.yml"])
            config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
            config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "node"]
            config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{node}"]
            config.pop("alerting", None)
            config.pop("rule_files", None)
            (tmp_path / "box.yml").write_text(yaml.safe_dump(config))
            box_port = prometheus(tmp_path / "box.yml", tmp_path / "box-data")
            gateway_dir = tmp_path / "gateway"
            gateway_dir.mkdir()
            (gateway_dir / "Caddyfile").write_bytes(bundle.files["gateway/Caddyfile"])
            box_cert(gateway_dir)
            gateway = stack.enter_context(
                _caddy(caddy, gateway_dir / "Caddyfile", gateway_dir, f"127.0.0.1:{box_port}", ("SLM_PROMETHEUS_UPSTREAM",))
            )
            central = tmp_path / "central"
            hosts = tmp_path / "hosts.yaml"
            gateway_port = gateway.base.rsplit(":", 1)[1]
            hosts.write_text(f"{BOX}: {{ansible_host: 127.0.0.1, slm_gateway_port: {gateway_port}}}\n")
            done = monitoring(central, "--hosts", str(hosts))
            assert done.returncode == 0, done.stderr
            # What `rollout` fetched for its gate, where the central config looks for it.
            (central / "keys" / BOX).mkdir(parents=True)
            (central / "keys" / BOX / "api_key").write_text(API_KEY)
            (central / "keys" / BOX / "tls_cert.pem").write_bytes((gateway_dir / "tls_cert").read_bytes())
            # Only the intervals change (seconds instead of a minute), and only this box's job stays.
            config = yaml.safe_load((central / "prometheus.yml").read_text())
            config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
            config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"].endswith("/" + BOX)]
            (central / "prometheus.yml").write_text(yaml.safe_dump(config))
            central_port = prometheus(central / "prometheus.yml", tmp_path / "central-data")
            yield f"http://127.0.0.1:{central_port}", root, gateway
        finally:
            for proc in reversed(procs):
                stop(proc)


@pytest.mark.tools
def test_live_a_rolled_back_box_shows_centrally(chain: tuple[str, Path, Any], releases: tuple[Path, Path, Path]) -> None:
    from tests.test_gateway_live import API_KEY

    central, root, gateway = chain
    old, new, signers = releases
    install(root, old, signers)
    install(root, new, signers)
    agent("gate", "--root", str(root), "--result", "failed")
    agent("rollback", "--root", str(root))

    def rolled_back_alert() -> list[dict[str, Any]]:
        alerts = api(central, "/api/v1/alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "SlmBoxRolledBack" and a["state"] == "firing"]

    proc = subprocess.Popen(["sleep", "120"])  # wait_for watches a process; the servers are checked below
    try:
        (alert,) = wait_for(rolled_back_alert, 60, "SlmBoxRolledBack to fire centrally", proc)
    finally:
        stop(proc)
    assert alert["labels"]["box"] == BOX and alert["labels"]["ring"] == "rest" and alert["labels"]["release"] == OLD
    gate = [a for a in api(central, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "SlmBoxGateFailed"]
    assert [(a["labels"]["box"], a["labels"]["release"], a["state"]) for a in gate] == [(BOX, NEW, "firing")]
    # The series the dashboard's table and ring panel read, as a user would see them.
    (info,) = api(central, "/api/v1/query", query='slm_release_info{fleet="retail-stores"}')["result"]
    assert (info["metric"]["box"], info["metric"]["ring"], info["metric"]["release"]) == (BOX, "rest", OLD)
    (ring,) = api(central, "/api/v1/query", query=fleetview.RING_ON_TARGET)["result"]
    assert ring["metric"]["ring"] == "rest" and ring["value"][1] == "0"
    (target,) = api(central, "/api/v1/query", query=fleetview.TARGET_RECORD)["result"]
    assert target["metric"]["release"] == NEW
    # The gateway serves only the agent's series, only with the key, whatever the client asks for.
    assert gateway.request("/slm/release-metrics")[0] == 401
    assert gateway.request("/slm/release-metrics", key="wrong" * 8)[0] == 401
    status, body = gateway.request("/slm/release-metrics?match[]=%7B__name__%3D~%22.%2B%22%7D", key=API_KEY)
    names = {line.split("{")[0] for line in body.decode().splitlines() if line and not line.startswith("#")}
    assert status == 200 and names == AGENT_SERIES - {"up"}  # no node_* nor up: the query is the gateway's


class _HeaderEcho(FakeOpenAI):
    """An upstream that answers with the request's path and whether it carried an Authorization header."""

    def do_GET(self) -> None:
        self._reply(200, {"path": self.path, "authorization": self.headers.get("Authorization")})


@pytest.mark.tools
def test_the_release_metrics_route_keeps_the_api_key_from_prometheus(tmp_path: Path) -> None:
    """Outside review H7: the gateway checked the box's API key on /slm/release-metrics and then
    forwarded it to the box's Prometheus, which needs none and may log it."""
    with running_gateway("store-0001", tmp_path, _HeaderEcho, upstream_vars=("SLM_PROMETHEUS_UPSTREAM",)) as gw:
        status, body = gw.request(RELEASE_METRICS_PATH, key=API_KEY)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["path"].startswith("/federate?") and answer["authorization"] is None
