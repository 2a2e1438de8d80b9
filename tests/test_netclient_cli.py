"""Every network client, driven through its command, against hostile peers on 127.0.0.1 (issue 22):
`lock`, `lock --check`, `plan` of a Hub model and of an Ollama tag, and `smoke`. A slow drip (one
byte a second in the headers or the body), an endless line, an oversized answer and a malformed
one each end the command within its deadline, with one `error:` line naming the service and its
host (or, for smoke, a failed check), no traceback, and without reading the peer's flood.

The deadlines are short here (SLM_DEPLOY_NET_TIMEOUT=2 s per request, SLM_DEPLOY_NET_DEADLINE=6 s
per command); the subprocess timeout is a generous bound that only a client without a total
deadline can reach (before issue 22 each of these ran forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.hostile import BIG, Hostile, serve

MODES = ["drip-headers", "drip-body", "oversized", "malformed-http", "malformed-json"]
BOUND = 90  # seconds: far above the deadlines, far below "forever"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OLLAMA_", "SLM_DEPLOY_"))},
        "SLM_DEPLOY_NET_TIMEOUT": "2",
        "SLM_DEPLOY_NET_DEADLINE": "6",
        "SLM_DEPLOY_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
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
        timeout=BOUND,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def bounded(peer: Hostile) -> None:
    """The client stopped reading long before the flood ended on each connection (loopback socket
    buffers hold a few MB)."""
    assert peer.most < BIG // 4


def lock_args(tmp_path: Path, host: str, *extra: str) -> list[str]:
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": [{"id": "app", "repository": f"{host}/team/app", "tag": "1.0"}]}))
    return ["lock", "--no-catalog", "--images", str(images), "--lock", str(tmp_path / "images.lock.yaml"), *extra]


@pytest.mark.parametrize("mode", MODES)
def test_lock_ends_within_its_deadline_with_one_line(mode: str, tmp_path: Path) -> None:
    with serve(Hostile(mode)) as peer:
        line = one_error_line(cli(tmp_path, *lock_args(tmp_path, peer.host)))
    assert line.startswith("error: lock: ") and line.endswith(f"{tmp_path / 'images.lock.yaml'} not written")
    assert peer.host in line
    assert not (tmp_path / "images.lock.yaml").exists()
    bounded(peer)


@pytest.mark.parametrize("mode", ["drip-headers", "drip-body", "malformed-http"])
def test_lock_check_ends_within_its_deadline_with_one_line(mode: str, tmp_path: Path) -> None:
    with serve(Hostile(mode)) as peer:
        lock = tmp_path / "images.lock.yaml"
        digest = "sha256:" + "a" * 64
        entry = {
            "digest": digest,
            "media_type": "application/vnd.oci.image.index.v1+json",
            "platforms": {},
            "resolved": "2026-12-01T00:00:00Z",
        }
        lock.write_text(yaml.safe_dump({"version": 1, "images": {f"{peer.host}/team/app:1.0": entry}}))
        before = lock.read_bytes()
        line = one_error_line(cli(tmp_path, *lock_args(tmp_path, peer.host, "--check")))
    assert line.startswith("error: lock: ") and peer.host in line
    assert lock.read_bytes() == before


@pytest.mark.parametrize("mode", MODES)
def test_plan_of_a_hub_model_ends_within_its_deadline_with_one_line(mode: str, tmp_path: Path) -> None:
    with serve(Hostile(mode)) as peer:
        result = cli(tmp_path, "plan", "--model", "someorg/some-model", "--gpu", "l4", HF_ENDPOINT=peer.url)
    line = one_error_line(result)
    # What failed is the Hub at its host, not the arguments.
    assert line.startswith(f"error: Hub {peer.host}: "), line
    bounded(peer)


@pytest.mark.parametrize("mode", MODES)
def test_plan_of_an_ollama_tag_ends_within_its_deadline_with_one_line(mode: str, tmp_path: Path) -> None:
    with serve(Hostile(mode)) as peer:
        result = cli(
            tmp_path, "plan", "--model", "someone/model:7b", "--runtime", "ollama", "--gpu", "l4", OLLAMA_REGISTRY=peer.url
        )
    line = one_error_line(result)
    assert line.startswith(f"error: Ollama registry {peer.host}: "), line
    bounded(peer)


@pytest.mark.parametrize("mode", ["drip-headers", "drip-body", "endless-line", "oversized", "malformed-http"])
def test_smoke_ends_within_its_timeout_and_reads_no_flood(mode: str, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    with serve(Hostile(mode)) as peer:
        result = cli(tmp_path, "smoke", peer.url, "--api-key-file", str(key), "--timeout", "2", "--requests", "2", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == "" and '"passed": false' in result.stdout
    bounded(peer)


def test_an_endless_stream_line_fails_the_stream_check_with_one_reason(tmp_path: Path) -> None:
    """The stream check meets a line that never ends: it fails saying so, memory stays bounded."""
    from slm_deploy.smoke import Endpoint, StreamError

    with serve(Hostile("endless-line")) as peer:
        endpoint = Endpoint(peer.url, None, 30)
        with pytest.raises(StreamError, match=r"^the stream sent a line longer than 1048576 bytes$"):
            endpoint.stream_chat("key", "model", 8)
    bounded(peer)


def test_a_bad_network_setting_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(cli(tmp_path, "plan", "--model", "phi-4-mini-instruct", "--gpu", "l4", SLM_DEPLOY_NET_TIMEOUT="soon"))
    assert line == "error: environment: SLM_DEPLOY_NET_TIMEOUT: 'soon' is not a number of seconds between 0 and 86400"


DIGEST = "sha256:" + "a" * 64
MODEL_LAYER = "application/vnd.ollama.image.model"
MALFORMED = {
    "lock": [
        b"[]",
        b'{"manifests": "x"}',
        b'{"manifests": [{"digest": 5, "platform": "linux"}]}',
        b'{"manifests": [{"digest": "' + DIGEST.encode() + b'", "platform": {"os": "linux", "architecture": "amd64"}}]}',
        b'{"config": "x"}',
        b'{"config": {"digest": "../../etc/passwd"}}',
        b"[" * 100_000,
    ],
    "hub": [
        b"[]",
        b'{"sha": 5}',
        b'{"sha": "' + b"a" * 40 + b'", "siblings": "x"}',
        b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "config.json"}]}',
        b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}]}',
        b"[" * 100_000,
    ],
    "ollama": [
        b'{"layers": "x"}',
        b'{"layers": [{"mediaType": "' + MODEL_LAYER.encode() + b'", "digest": "sha256:../../x", "size": 10}]}',
        b'{"layers": [{"mediaType": "' + MODEL_LAYER.encode() + b'", "digest": "' + DIGEST.encode() + b'", "size": -5}]}',
        b'{"layers": [{"mediaType": "' + MODEL_LAYER.encode() + b'", "digest": "' + DIGEST.encode() + b'", "size": 4096}]}',
        b"[" * 100_000,
    ],
}
CASES = [(client, i) for client, bodies in MALFORMED.items() for i in range(len(bodies))]


@pytest.mark.parametrize(("client", "index"), CASES)
def test_a_malformed_answer_is_one_error_line(client: str, index: int, tmp_path: Path) -> None:
    """Answers a real server would never send (wrong JSON types, digests that are paths, negative
    sizes, nesting beyond the recursion limit): one line each, never a traceback."""
    with serve(Hostile("malformed-json", body=MALFORMED[client][index])) as peer:
        if client == "lock":
            result = cli(tmp_path, *lock_args(tmp_path, peer.host))
        elif client == "hub":
            result = cli(tmp_path, "plan", "--model", "someorg/some-model", "--gpu", "l4", HF_ENDPOINT=peer.url)
        else:
            args = ("plan", "--model", "someone/model:7b", "--runtime", "ollama", "--gpu", "l4")
            result = cli(tmp_path, *args, OLLAMA_REGISTRY=peer.url)
    line = one_error_line(result)
    assert "nested too deeply" not in line  # the recursion limit is the answer's fault, named as such


@pytest.mark.parametrize(("body", "what"), [(b"{not json", "not JSON"), (b"[]", "not a JSON object")])
def test_lock_names_a_manifest_that_is_not_a_json_object(body: bytes, what: str, tmp_path: Path) -> None:
    with serve(Hostile("malformed-json", body=body)) as peer:
        line = one_error_line(cli(tmp_path, *lock_args(tmp_path, peer.host)))
    assert f"{peer.host}/team/app:1.0: the manifest is {what}" in line, line


@pytest.mark.parametrize("token_answer", [b"[]", b'"x"', b"[" * 100_000], ids=["list", "string", "nested"])
def test_a_token_endpoint_answer_that_is_not_a_json_object_is_one_error_line(token_answer: bytes, tmp_path: Path) -> None:
    """A registry that asks for a bearer token (distribution docs/spec/auth/token.md) whose token
    endpoint answers 200 with something that is not the spec's JSON object: `lock` says the endpoint
    returned no token, in one line (before: a traceback for a list or a nesting beyond the limit)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(token_answer)))
                self.end_headers()
                self.wfile.write(token_answer)
                return
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="test",scope="repository:team/app:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        line = one_error_line(cli(tmp_path, *lock_args(tmp_path, host)))
    finally:
        server.shutdown()
        server.server_close()
    assert f"registry {host}: token endpoint returned no token" in line, line
