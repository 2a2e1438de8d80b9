"""A live Prometheus (the Debian binary, on 127.0.0.1) runs a bundle's generated configuration and
rules against a small fake exporter serving vLLM-format metrics. Only the scrape targets'
addresses, the rule-file path and the intervals (1 s, to keep the test short) are changed."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_deploy.bundle.writer import build_fleet
from slm_deploy.fleet import load_fleet
from tests.conftest import ROOT, need_binary, stop
from tests.test_gateway_live import free_port

VLLM_METRICS = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen3-4b"} 12.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen3-4b"} 8.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen3-4b"} 0.42
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen3-4b"} 1234.0
"""


class FakeVllm(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = VLLM_METRICS.encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def wait_for(check: Any, seconds: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    binary = need_binary("prometheus")
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    (bundle,) = build_fleet(fleet, tuple(b for b in fleet.boxes if b.id == "store-0001"))
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), FakeVllm)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    config = yaml.safe_load(bundle.files["prometheus/prometheus.yml"])
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "slm.rules.yml").write_bytes(bundle.files["prometheus/rules/slm.rules.yml"])
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    closed = free_port()  # nothing listens there: the other targets are down, as on a box without them
    for job in config["scrape_configs"]:
        address = f"127.0.0.1:{exporter.server_address[1]}" if job["job_name"] == "vllm" else f"127.0.0.1:{closed}"
        job["static_configs"][0]["targets"] = [address]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200, 30, "ready", proc)
        yield base
    finally:
        stop(proc)
        exporter.shutdown()
        exporter.server_close()


@pytest.mark.tools
def test_live_prometheus_scrapes_records_and_raises_the_queue_alert(prometheus: str) -> None:
    base = prometheus

    def target_up() -> bool:
        targets = api(base, "/api/v1/targets")["activeTargets"]
        return any(t["labels"]["job"] == "vllm" and t["health"] == "up" for t in targets)

    def recorded() -> list[Any]:
        return list(api(base, "/api/v1/query", query="slm:vllm_requests_waiting:max")["result"])

    def queue_alert() -> list[Any]:
        alerts = api(base, "/api/v1/alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "VllmRequestQueueBackingUp"]

    deadline = time.monotonic() + 180  # a guard on a loaded machine, not a measurement
    while time.monotonic() < deadline and not target_up():
        time.sleep(0.5)
    assert target_up(), "the vLLM target never came up"
    targets = api(base, "/api/v1/targets")["activeTargets"]
    vllm = next(t for t in targets if t["labels"]["job"] == "vllm")
    assert vllm["labels"]["slm_role"] == "model-server"

    while time.monotonic() < deadline and not recorded():
        time.sleep(0.5)
    (sample,) = recorded()
    assert sample["metric"]["model_name"] == "qwen3-4b" and float(sample["value"][1]) == 12.0

    while time.monotonic() < deadline and not queue_alert():
        time.sleep(0.5)
    (alert,) = queue_alert()
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["model_name"] == "qwen3-4b"

    def gateway_up() -> list[Any]:  # the gateway target has no server here: its first scrape records up 0
        return list(api(base, "/api/v1/query", query='up{slm_role="gateway"}')["result"])

    while time.monotonic() < deadline and not gateway_up():
        time.sleep(0.5)
    down = gateway_up()
    assert down and float(down[0]["value"][1]) == 0.0
