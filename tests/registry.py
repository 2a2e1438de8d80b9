"""A real OCI registry on loopback for the lock tests: Debian's `docker-registry` (CNCF distribution
2.8), started on 127.0.0.1 with its storage in a temporary directory and stopped by PID.

Images are written through the registry's HTTP API (blobs, then per-platform manifests, then the
index), never through a Docker daemon. `token=True` starts the registry with its own token auth:
JWTs signed (RS256, by openssl) by a tiny token endpoint served from this process, verified by
the registry against a self-signed certificate generated for the run.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import need_binary, stop

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SERVICE = "slm-test-registry"
ISSUER = "slm-test-token-issuer"
USER, PASSWORD = "tester", "s3cret-for-tests"
# What `docker login` keeps as `identitytoken` (or a credential helper returns for the user
# "<token>"): an OAuth2 refresh token, exchanged at the token endpoint by POST.
REFRESH_TOKEN = "refresh-token-for-tests"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _layer(label: str) -> bytes:
    """A small, deterministic gzipped tar holding one file: the label."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"{label}\n".encode()
        info = tarfile.TarInfo("label.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@dataclass
class TokenIssuer:
    """Keys and the token endpoint for the registry's `auth: token:` mode."""

    workdir: Path
    key: Path = field(init=False)
    cert: Path = field(init=False)
    issued: list[str] = field(default_factory=list)
    refused: int = 0
    grants: list[dict[str, str]] = field(default_factory=list)  # the POST forms received

    def __post_init__(self) -> None:
        openssl = need_binary("openssl")
        self.key, self.cert = self.workdir / "token.key", self.workdir / "token.crt"
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=slm-test-token-issuer"]
        subprocess.run(
            [openssl, *request, "-keyout", str(self.key), "-out", str(self.cert)],
            check=True,
            capture_output=True,
        )
        der = subprocess.run([openssl, "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()

    def token(self, scope: str) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        now = int(time.time())
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access = [{"type": kind, "name": name, "actions": actions.split(",")}]
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now}
        claims |= {"jti": f"t{len(self.issued)}", "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(), check=True, capture_output=True
        ).stdout
        self.issued.append(scope)
        return f"{signing_input}.{_b64url(signature)}"

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """The token endpoint on 127.0.0.1; yields its URL. GET with Basic USER:PASSWORD answers
        {"token": JWT} (distribution docs/spec/auth/token.md); POST with a form (docs/spec/auth/oauth.md)
        takes grant_type=refresh_token with REFRESH_TOKEN and answers {"access_token": JWT, ...};
        service and client_id are required there."""
        issuer = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, data: dict[str, Any] | None = None) -> None:
                body = json.dumps(data).encode() if data is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != expected:
                    issuer.refused += 1
                    self._answer(401)
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                self._answer(200, {"token": issuer.token(query.get("scope", [""])[0])})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                issuer.grants.append(form)
                if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                    self._answer(400, {"error": "invalid_request"})
                    return
                if form.get("service") != SERVICE or not form.get("client_id"):
                    self._answer(400, {"error": "invalid_request"})
                    return
                if (form.get("grant_type"), form.get("refresh_token")) != ("refresh_token", REFRESH_TOKEN):
                    issuer.refused += 1
                    self._answer(400, {"error": "invalid_grant"})  # RFC 6749 section 5.2
                    return
                scope = form.get("scope", "")
                self._answer(200, {"access_token": issuer.token(scope), "scope": scope, "expires_in": 600})

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/token"
        finally:
            server.shutdown()
            server.server_close()


class LiveRegistry:
    """One `docker-registry` process; `push` writes a (multi-platform) image through its API."""

    def __init__(self, workdir: Path, token_realm: str | None = None, issuer: TokenIssuer | None = None) -> None:
        binary = need_binary("docker-registry")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.issuer = issuer
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if token_realm and issuer:
            config["auth"] = {
                "token": {"realm": token_realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(issuer.cert)}
            }
        config_path = workdir / "registry.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log = (workdir / "registry.log").open("wb")
        self.proc = subprocess.Popen([binary, "serve", str(config_path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                _NO_PROXY.open(f"http://{self.host}/v2/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for a token
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"docker-registry did not start: {(workdir / 'registry.log').read_text()[-500:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)
        self.log.close()

    def _request(self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if self.issuer:
            path = urllib.parse.urlsplit(url).path.split("/")
            name = "/".join(path[2 : path.index("blobs") if "blobs" in path else path.index("manifests")])
            request.add_header("Authorization", f"Bearer {self.issuer.token(f'repository:{name}:pull,push')}")
        return _NO_PROXY.open(request, timeout=30)

    def put_blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        with self._request("POST", f"http://{self.host}/v2/{name}/blobs/uploads/", b"") as started:
            location = started.headers["Location"]
        url = urllib.parse.urljoin(f"http://{self.host}/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        self._request("PUT", url, data, {"Content-Type": "application/octet-stream"}).close()
        return digest

    def put_manifest(self, name: str, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, sort_keys=True).encode()
        url = f"http://{self.host}/v2/{name}/manifests/{reference}"
        self._request("PUT", url, body, {"Content-Type": manifest["mediaType"]}).close()
        return sha256(body)

    def push_single(self, name: str, arch: str, label: str) -> tuple[str, str, dict[str, Any]]:
        """One platform's image (not tagged): returns (manifest digest, config digest, its index entry)."""
        layer = _layer(f"{name} {label} {arch}")
        layer_digest = self.put_blob(name, layer)
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"slm.test/label": label}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(gzip.decompress(layer))]},
        }
        config_body = json.dumps(config, sort_keys=True).encode()
        config_digest = self.put_blob(name, config_body)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_body)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        digest = self.put_manifest(name, sha256(body), manifest)
        entry = {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(body),
            "platform": {"os": "linux", "architecture": arch},
        }
        return digest, config_digest, entry

    def push(self, name: str, tag: str, archs: tuple[str, ...] = ("amd64", "arm64"), label: str = "v1") -> dict[str, Any]:
        """Tag NAME:TAG as an index over ARCHS (one arch and `single`: a plain manifest). Returns the
        digests a lock should record: {"digest", "platforms": {"linux/ARCH": (manifest, config)}}."""
        pushed = {arch: self.push_single(name, arch, label) for arch in archs}
        platforms = {f"linux/{a}": (m, c) for a, (m, c, _) in pushed.items()}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e for _, _, e in pushed.values()]}
        return {"digest": self.put_manifest(name, tag, index), "platforms": platforms}

    def push_plain(self, name: str, tag: str, arch: str = "amd64", label: str = "v1") -> dict[str, Any]:
        """Tag NAME:TAG as a single-platform manifest (no index)."""
        digest, config, _ = self.push_single(name, arch, label)
        manifest = json.loads(
            self._request("GET", f"http://{self.host}/v2/{name}/manifests/{digest}", None, {"Accept": OCI_MANIFEST}).read()
        )
        self.put_manifest(name, tag, manifest)
        return {"digest": digest, "platforms": {f"linux/{arch}": (digest, config)}}
