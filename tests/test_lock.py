"""`slm-deploy lock` against a real registry on loopback (Debian's docker-registry, CNCF
distribution 2.8): digests per platform, moved tags, unknown tags, token auth, a registry that is
down, and what the generators and `verify` do with the lock."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from slm_deploy.catalog import load_catalog
from tests.conftest import ROOT, run_cli
from tests.registry import PASSWORD, REFRESH_TOKEN, SERVICE, USER, LiveRegistry, TokenIssuer, free_port

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = LiveRegistry(tmp_path_factory.mktemp("registry"))
    try:
        yield live
    finally:
        live.stop()


def images_file(path: Path, *refs: tuple[str, str]) -> Path:
    entries = [{"id": f"img-{i}", "repository": repo, "tag": tag} for i, (repo, tag) in enumerate(refs)]
    path.write_text(yaml.safe_dump({"images": entries}))
    return path


def lock_cli(tmp: Path, images: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    args = ["lock", "--no-catalog", "--images", str(images), "--lock", str(tmp / "images.lock.yaml"), *extra]
    if env is None:
        return run_cli(*args)
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "slm_deploy.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )


def test_lock_records_the_index_and_every_platform_and_rewrites_identically(registry: LiveRegistry, tmp_path: Path) -> None:
    multi = registry.push("team/server", "1.0", ("amd64", "arm64"))
    plain = registry.push_plain("team/tool", "2.1", "arm64")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/team/server", "1.0"), (f"{registry.host}/team/tool", "2.1"))
    result = lock_cli(tmp_path, images)
    assert result.returncode == 0, result.stderr
    lock = yaml.safe_load((tmp_path / "images.lock.yaml").read_text())
    server = lock["images"][f"{registry.host}/team/server:1.0"]
    assert server["digest"] == multi["digest"]
    assert server["media_type"] == "application/vnd.oci.image.index.v1+json"
    assert {k: (v["manifest"], v["config"]) for k, v in server["platforms"].items()} == multi["platforms"]
    tool = lock["images"][f"{registry.host}/team/tool:2.1"]
    assert tool["digest"] == plain["digest"]
    assert {k: (v["manifest"], v["config"]) for k, v in tool["platforms"].items()} == plain["platforms"]
    first = (tmp_path / "images.lock.yaml").read_bytes()
    again = lock_cli(tmp_path, images)
    assert again.returncode == 0 and "0 changed" in again.stdout
    assert (tmp_path / "images.lock.yaml").read_bytes() == first  # same tags, same file, byte for byte
    assert lock_cli(tmp_path, images, "--check").returncode == 0


def test_check_exits_1_and_prints_what_moved_and_what_is_missing(registry: LiveRegistry, tmp_path: Path) -> None:
    before = registry.push("team/moving", "stable-1", label="first build")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/team/moving", "stable-1"))
    assert lock_cli(tmp_path, images).returncode == 0
    locked = (tmp_path / "images.lock.yaml").read_bytes()
    after = registry.push("team/moving", "stable-1", label="rebuilt under the same tag")
    registry.push("team/new", "1.0")
    both = images_file(tmp_path / "both.yaml", (f"{registry.host}/team/moving", "stable-1"), (f"{registry.host}/team/new", "1.0"))
    result = lock_cli(tmp_path, both, "--check")
    assert result.returncode == 1, result.stderr
    assert f"moved: {registry.host}/team/moving:stable-1: {before['digest']} -> {after['digest']}" in result.stdout
    assert f"missing: {registry.host}/team/new:1.0: missing from the lock -> sha256:" in result.stdout
    assert (tmp_path / "images.lock.yaml").read_bytes() == locked  # --check writes nothing


def test_stale_entries_fail_the_check_and_are_dropped_by_lock(registry: LiveRegistry, tmp_path: Path) -> None:
    """An image dropped from the catalog (or the --images files) leaves a stale lock entry: `--check`
    names it and exits 1, changing nothing; `lock` drops it, writing what a fresh lock writes."""
    registry.push("team/kept", "1.0")
    registry.push("team/retired", "0.9")
    registry.push("team/retired-too", "0.1")
    kept = (f"{registry.host}/team/kept", "1.0")
    both = images_file(
        tmp_path / "all.yaml", kept, (f"{registry.host}/team/retired", "0.9"), (f"{registry.host}/team/retired-too", "0.1")
    )
    assert lock_cli(tmp_path, both).returncode == 0
    locked = (tmp_path / "images.lock.yaml").read_bytes()
    now = images_file(tmp_path / "now.yaml", kept)
    check = lock_cli(tmp_path, now, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout == "".join(
        f"stale: {registry.host}/team/{name}: in the lock, but no longer in the catalog or the --images files\n"
        for name in ("retired-too:0.1", "retired:0.9")
    )
    assert (tmp_path / "images.lock.yaml").read_bytes() == locked
    dropped = lock_cli(tmp_path, now)
    assert dropped.returncode == 0, dropped.stderr
    assert f"removed: {registry.host}/team/retired:0.9: no longer in the catalog or the --images files" in dropped.stdout
    assert dropped.stdout.endswith("1 images, 0 changed, 2 removed\n")
    # Review item 8: a stack's own image (models[].image) is dropped unless its images file is passed again.
    assert "lock --images examples/stack-images.yaml" in dropped.stderr and "--images" in check.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert lock_cli(fresh, now).returncode == 0
    written = yaml.safe_load((tmp_path / "images.lock.yaml").read_text())
    assert list(written["images"]) == [f"{registry.host}/team/kept:1.0"]
    fresh_lock = yaml.safe_load((fresh / "images.lock.yaml").read_text())
    for data in (written, fresh_lock):  # the time of resolution is the only difference
        data["images"][f"{registry.host}/team/kept:1.0"].pop("resolved")
    assert written == fresh_lock
    assert lock_cli(tmp_path, now, "--check").returncode == 0


def test_check_of_an_unmoved_lock_asks_with_head_only(registry: LiveRegistry, tmp_path: Path) -> None:
    """Docker Hub counts every GET of a manifest as a pull, one per architecture of an index, and
    HEAD requests (version checks) not at all. `lock --check` runs on every pull request: while no
    tag moved it must cost no pulls (HEAD, Docker-Content-Digest), and a moved tag is still found."""
    import urllib.parse

    from slm_deploy.supply import lock as locking
    from slm_deploy.supply.registry import RegistryClient

    seen: list[str] = []

    def record(method: str, url: str) -> None:
        seen.append(f"{method} {urllib.parse.urlsplit(url).path.split('/')[-2]}")

    def client() -> RegistryClient:
        return RegistryClient(credentials=lambda h: None, on_request=record)

    registry.push("team/headed", "1.0", ("amd64", "arm64"))
    refs = [(f"{registry.host}/team/headed", "1.0")]
    locked = locking.LockFile(version=1, images=locking.resolve(refs, client(), None))
    assert any(s == "GET manifests" for s in seen)
    seen.clear()
    assert locking.compare(locked, locking.check(refs, client(), locked)) == []
    assert seen == ["HEAD manifests"]  # no GET: no pull counted
    moved = registry.push("team/headed", "1.0", ("amd64", "arm64"), label="rebuilt")
    seen.clear()
    changes = locking.compare(locked, locking.check(refs, client(), locked))
    assert [(c.key, c.new) for c in changes] == [(f"{registry.host}/team/headed:1.0", moved["digest"])]
    assert seen[0] == "HEAD manifests" and "GET manifests" in seen


def test_lock_fetches_only_the_platforms_a_box_or_node_can_be(registry: LiveRegistry, tmp_path: Path) -> None:
    """Docker Hub counts a pull per architecture whose manifest is fetched ("A pull for a multi-arch
    image will count as one pull for each different architecture", docs.docker.com, usage/pulls).
    Official images publish six to eight Linux platforms; boxes and nodes are amd64 or arm64. The
    lock reads only those two manifests and records the index digest unchanged."""
    import urllib.parse

    from slm_deploy.supply import lock as locking
    from slm_deploy.supply.registry import RegistryClient

    seen: list[str] = []
    pushed = registry.push("team/many", "1.0", ("amd64", "arm64", "s390x", "ppc64le"))
    client = RegistryClient(
        credentials=lambda h: None, on_request=lambda method, url: seen.append(f"{method} {urllib.parse.urlsplit(url).path}")
    )
    entry = locking.resolve([(f"{registry.host}/team/many", "1.0")], client, None)[f"{registry.host}/team/many:1.0"]
    assert entry.digest == pushed["digest"]
    assert sorted(entry.platforms) == ["linux/amd64", "linux/arm64"]
    for other in ("linux/s390x", "linux/ppc64le"):
        manifest, _ = pushed["platforms"][other]
        assert not any(manifest in s for s in seen), other


def test_an_unknown_tag_is_exit_2_and_writes_nothing(registry: LiveRegistry, tmp_path: Path) -> None:
    registry.push("team/known", "1.0")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/team/known", "1.0"), (f"{registry.host}/team/known", "9.9"))
    result = lock_cli(tmp_path, images)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: lock: {registry.host}/team/known: 9.9 not found on the registry;")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "images.lock.yaml").exists()


def test_a_registry_that_is_down_is_exit_2_and_the_lock_is_untouched(tmp_path: Path) -> None:
    (tmp_path / "images.lock.yaml").write_text("version: 1\nimages: {}\n")
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    images = images_file(tmp_path / "images.yaml", (f"{host}/team/app", "1.0"))
    result = lock_cli(tmp_path, images)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: lock: cannot reach registry {host}: ")
    assert "left unchanged" in result.stderr and result.stderr.count("\n") == 1
    assert (tmp_path / "images.lock.yaml").read_text() == "version: 1\nimages: {}\n"


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry, TokenIssuer]]:
    workdir = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer(workdir)
    with issuer.serve() as realm:
        live = LiveRegistry(workdir, token_realm=realm, issuer=issuer)
        try:
            yield live, issuer
        finally:
            live.stop()


def _docker_config(tmp: Path, config: dict[str, Any]) -> dict[str, str]:
    (tmp / "docker").mkdir(exist_ok=True)
    (tmp / "docker" / "config.json").write_text(json.dumps(config))
    return {**os.environ, "DOCKER_CONFIG": str(tmp / "docker")}


def _helper(tmp: Path, username: str, secret: str) -> dict[str, str]:
    """A credential helper `docker-credential-slmtest` answering USERNAME/SECRET, on PATH."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-slmtest"
    helper.write_text(f"#!/bin/sh\nread server\necho '{json.dumps({'Username': username, 'Secret': secret})}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_token_auth_with_credentials_from_the_docker_config(
    token_registry: tuple[LiveRegistry, TokenIssuer], tmp_path: Path
) -> None:
    registry, issuer = token_registry
    pushed = registry.push("private/model-server", "3.0")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/private/model-server", "3.0"))
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    result = lock_cli(tmp_path, images, env=_docker_config(tmp_path, {"auths": {registry.host: {"auth": auth}}}))
    assert result.returncode == 0, result.stderr
    lock = yaml.safe_load((tmp_path / "images.lock.yaml").read_text())
    assert lock["images"][f"{registry.host}/private/model-server:3.0"]["digest"] == pushed["digest"]
    assert "repository:private/model-server:pull" in issuer.issued  # the client asked for a pull-scoped token
    env = _docker_config(tmp_path, {"auths": {registry.host: {"auth": auth}}})
    assert lock_cli(tmp_path, images, "--check", env=env).returncode == 0  # HEAD goes through the token handshake too


def test_token_auth_through_a_credential_helper(token_registry: tuple[LiveRegistry, TokenIssuer], tmp_path: Path) -> None:
    registry, _ = token_registry
    registry.push("private/helper", "1.0")
    env = _docker_config(tmp_path, {"credHelpers": {registry.host: "slmtest"}}) | _helper(tmp_path, USER, PASSWORD)
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/private/helper", "1.0"))
    result = lock_cli(tmp_path, images, env=env)
    assert result.returncode == 0, result.stderr


def test_token_auth_failure_is_exit_2_naming_docker_login(
    token_registry: tuple[LiveRegistry, TokenIssuer], tmp_path: Path
) -> None:
    registry, issuer = token_registry
    registry.push("private/denied", "1.0")
    refused = issuer.refused
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/private/denied", "1.0"))
    wrong = base64.b64encode(f"{USER}:wrong-password".encode()).decode()
    result = lock_cli(tmp_path, images, env=_docker_config(tmp_path, {"auths": {registry.host: {"auth": wrong}}}))
    assert result.returncode == 2
    assert f"token endpoint refused repository:private/denied:pull as {USER} (HTTP 401)" in result.stderr
    assert f"docker login {registry.host}" in result.stderr
    assert issuer.refused == refused + 1
    assert not (tmp_path / "images.lock.yaml").exists()


@pytest.mark.parametrize("where", ["config identitytoken", "helper <token>"])
def test_an_identity_token_is_exchanged_by_the_oauth2_refresh_token_grant(
    token_registry: tuple[LiveRegistry, TokenIssuer], tmp_path: Path, where: str
) -> None:
    """`docker login` to an OAuth registry keeps an identity token (auths.*.identitytoken), and
    credential helpers return one as user "<token>": it is a refresh token, sent by POST with
    grant_type=refresh_token (distribution docs/spec/auth/oauth.md), never as a Basic password."""
    registry, issuer = token_registry
    name = f"private/oauth-{where.split()[0]}"
    pushed = registry.push(name, "1.0")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/{name}", "1.0"))
    if where == "config identitytoken":
        env = _docker_config(tmp_path, {"auths": {registry.host: {"identitytoken": REFRESH_TOKEN}}})
    else:
        env = _docker_config(tmp_path, {"credHelpers": {registry.host: "slmtest"}}) | _helper(tmp_path, "<token>", REFRESH_TOKEN)
    refused, grants = issuer.refused, len(issuer.grants)
    result = lock_cli(tmp_path, images, env=env)
    assert result.returncode == 0, result.stderr
    lock = yaml.safe_load((tmp_path / "images.lock.yaml").read_text())
    assert lock["images"][f"{registry.host}/{name}:1.0"]["digest"] == pushed["digest"]
    assert issuer.refused == refused  # no Basic "<token>:..." GET was tried and refused
    form = issuer.grants[grants]
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == REFRESH_TOKEN
    assert (form["service"], form["scope"]) == (SERVICE, f"repository:{name}:pull") and form["client_id"]


def test_a_refused_identity_token_is_exit_2_naming_docker_login(
    token_registry: tuple[LiveRegistry, TokenIssuer], tmp_path: Path
) -> None:
    registry, issuer = token_registry
    registry.push("private/oauth-expired", "1.0")
    images = images_file(tmp_path / "images.yaml", (f"{registry.host}/private/oauth-expired", "1.0"))
    env = _docker_config(tmp_path, {"auths": {registry.host: {"identitytoken": "revoked-refresh-token"}}})
    result = lock_cli(tmp_path, images, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: lock: registry {registry.host}: token endpoint refused the identity token (OAuth2 refresh token) for "
        f"repository:private/oauth-expired:pull (HTTP 400 invalid_grant); `docker login {registry.host}` again; "
        f"{tmp_path / 'images.lock.yaml'} not written\n"  # there was no lock to leave unchanged
    )
    assert issuer.grants[-1]["refresh_token"] == "revoked-refresh-token"
    assert not (tmp_path / "images.lock.yaml").exists()


# ---------------------------------------------------------------------------------------------
# The client's behaviour where no real registry is needed to show it


class _Scripted(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        status, headers = type(self).answers.pop(0) if type(self).answers else (404, {})
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = _answer
    do_CONNECT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"answers": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_429_is_retried_after_retry_after_then_a_clear_error(scripted: tuple[str, type[_Scripted]]) -> None:
    from slm_deploy.supply.registry import RegistryClient, RegistryError

    host, handler = scripted
    handler.answers = [(429, {"Retry-After": "7"})] * 10
    slept: list[float] = []
    client = RegistryClient(credentials=lambda h: None, sleep=slept.append)
    with pytest.raises(RegistryError, match=r"rate-limits us \(HTTP 429, 4 tries, retry after 7 s\)"):
        client.resolve(f"{host}/team/app", "1.0")
    assert slept == [7.0, 7.0, 7.0]
    handler.answers = [(429, {"Retry-After": "3600"})]
    with pytest.raises(RegistryError, match="retry after 3600 s"):
        client.resolve(f"{host}/team/app", "1.0")  # no hour-long wait: fail at once
    assert slept == [7.0, 7.0, 7.0]


def test_https_proxy_is_honoured_and_plain_http_is_only_for_loopback(
    scripted: tuple[str, type[_Scripted]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from slm_deploy.supply.registry import RegistryClient, RegistryError

    proxy, handler = scripted
    handler.answers = [(403, {})]
    monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = RegistryClient(credentials=lambda h: None)
    with pytest.raises(RegistryError):
        client.resolve("registry.example.invalid/team/app", "1.0")
    assert handler.seen == ["CONNECT registry.example.invalid:443"]  # through the proxy, over TLS
    assert client._scheme("registry.example.invalid") == "https"
    assert client._scheme("127.0.0.1:5000") == "http"
    assert RegistryClient(insecure_hosts=frozenset({"mirror.lan:5000"}))._scheme("mirror.lan:5000") == "http"


def test_docker_hub_credentials_are_found_under_the_cli_index_key(tmp_path: Path) -> None:
    from slm_deploy.supply.credentials import lookup
    from slm_deploy.supply.registry import parse_repository

    config = tmp_path / "config.json"
    auth = base64.b64encode(b"hubuser:hubtoken").decode()
    config.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}))
    ref = parse_repository("vllm/vllm-openai")
    assert (ref.host, ref.path) == ("registry-1.docker.io", "vllm/vllm-openai")
    assert parse_repository("caddy").path == "library/caddy"
    creds = lookup(ref.host, config)
    assert creds is not None and (creds.username, creds.secret) == ("hubuser", "hubtoken")
    assert lookup("ghcr.io", config) is None


# ---------------------------------------------------------------------------------------------
# Generators and the box


@pytest.fixture(scope="module")
def mirror_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lock of every catalog image, resolved by `slm-deploy lock --mirror` against a loopback
    mirror in which Ollama is published for amd64 only."""
    from tests.example_lock import start_mirror

    workdir = tmp_path_factory.mktemp("mirror")
    live = start_mirror(workdir, platforms={"ollama/ollama": ("amd64",)})
    try:
        result = run_cli("lock", "--mirror", live.host, "--lock", str(workdir / "images.lock.yaml"))
    finally:
        live.stop()
    assert result.returncode == 0, result.stderr
    return workdir / "images.lock.yaml"


def _fleet_with_lock(tmp: Path, lock: Path | None, arch: str = "amd64") -> Path:
    fleet = {
        "fleet": "locktest",
        "boxes": [
            {
                "id": "edge-1",
                "hardware": {"cpu_arch": arch, "cpus": 8, "memory_gib": 32},
                "serving": {"runtime": "ollama", "model": "qwen3-1.7b"},
            }
        ],
    }
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    if lock is not None:
        shutil.copy(lock, tmp / "images.lock.yaml")
    return tmp / "fleet.yaml"


def test_bundle_pins_every_image_from_the_lock_beside_the_fleet(mirror_lock: Path, tmp_path: Path) -> None:
    fleet = _fleet_with_lock(tmp_path, mirror_lock)
    result = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lock = yaml.safe_load(mirror_lock.read_text())["images"]
    compose = yaml.safe_load((tmp_path / "out" / "edge-1" / "compose.yaml").read_text())
    refs = {s["image"] for s in compose["services"].values()}
    assert f"ollama/ollama:0.12.6@{lock['ollama/ollama:0.12.6']['digest']}" in refs
    assert all("@sha256:" in ref for ref in refs), refs
    listing = json.loads((tmp_path / "out" / "edge-1" / "images.lock.json").read_text())
    assert listing["platform"] == "linux/amd64"
    ollama = listing["images"][f"ollama/ollama:0.12.6@{lock['ollama/ollama:0.12.6']['digest']}"]
    assert ollama["config"] == lock["ollama/ollama:0.12.6"]["platforms"]["linux/amd64"]["config"]


def test_a_lock_rewritten_in_place_is_read_anew_by_the_next_bundle_in_the_same_process(mirror_lock: Path, tmp_path: Path) -> None:
    """The parsed lock is reused across the boxes of a fleet; a lock edited between two bundles of one
    process (same size, same inode, within one clock tick) must still give the new digest."""
    from slm_deploy.bundle.writer import write_fleet
    from slm_deploy.fleet import load_fleet

    fleet_path = _fleet_with_lock(tmp_path, mirror_lock)
    lock_path = tmp_path / "images.lock.yaml"

    def ollama_image(out: Path) -> str:
        fleet = load_fleet(fleet_path)
        write_fleet(out, fleet, fleet.boxes)
        compose = yaml.safe_load((out / "edge-1" / "compose.yaml").read_text())
        return next(s["image"] for s in compose["services"].values() if s["image"].startswith("ollama/ollama:"))

    first = ollama_image(tmp_path / "a")
    text = lock_path.read_text()
    old = yaml.safe_load(text)["images"]["ollama/ollama:0.12.6"]["digest"]
    new = old[:-1] + ("1" if old[-1] == "0" else "0")
    lock_path.write_text(text.replace(old, new))
    second = ollama_image(tmp_path / "b")
    assert first.endswith(f"@{old}") and second.endswith(f"@{new}"), (first, second)


def test_an_arm64_box_is_refused_an_image_the_registry_has_only_for_amd64(mirror_lock: Path, tmp_path: Path) -> None:
    fleet = _fleet_with_lock(tmp_path, mirror_lock, arch="arm64")
    result = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: fleet.yaml: boxes[0].hardware.cpu_arch: box edge-1: ollama/ollama:0.12.6 has no linux/arm64 manifest "
        "(the registry lists linux/amd64 under sha256:"
    )
    assert not (tmp_path / "out").exists()


def test_an_image_missing_from_the_lock_stops_generation_unless_allowed(mirror_lock: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(mirror_lock.read_text())
    del data["images"]["caddy:2.10.2-alpine"]
    partial = tmp_path / "partial.lock.yaml"
    partial.write_text(yaml.safe_dump(data))
    fleet = _fleet_with_lock(tmp_path, partial)
    result = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {tmp_path / 'images.lock.yaml'}: images.caddy:2.10.2-alpine: image 'gateway' is not locked; "
        "run `slm-deploy lock` (or pass --allow-unlocked)\n"
    )
    assert not (tmp_path / "out").exists()
    allowed = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"), "--allow-unlocked")
    assert allowed.returncode == 0, allowed.stderr
    compose = yaml.safe_load((tmp_path / "out" / "edge-1" / "compose.yaml").read_text())
    assert compose["services"]["gateway"]["image"] == "caddy:2.10.2-alpine"
    review = run_cli("review", str(tmp_path / "out"), "--tool", "slm", "--json")
    assert review.returncode == 1
    findings = json.loads(review.stdout)["findings"]
    assert {(f["rule"], f["message"]) for f in findings} == {
        ("SLM-COMPOSE-011", f"service {name} uses 'caddy:2.10.2-alpine' without a digest") for name in ("gateway", "volume-init")
    }


def test_a_stack_previewed_with_unlocked_images_is_reported_by_the_review(mirror_lock: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(mirror_lock.read_text())
    del data["images"]["caddy:2.10.2-alpine"]
    (tmp_path / "images.lock.yaml").write_text(yaml.safe_dump(data))
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    refused = run_cli("preview", "dev", "--project", str(tmp_path), "--out", str(tmp_path / "m"))
    assert refused.returncode == 2
    assert "images.caddy:2.10.2-alpine: image 'gateway' is not locked; run `slm-deploy lock`" in refused.stderr
    allowed = run_cli("preview", "dev", "--project", str(tmp_path), "--out", str(tmp_path / "m"), "--allow-unlocked")
    assert allowed.returncode == 0, allowed.stderr
    review = run_cli("review", str(tmp_path / "m"), "--tool", "checkov", "--json")
    assert review.returncode == 1
    flagged = {(f["rule"], f["resource"]) for f in json.loads(review.stdout)["findings"]}
    assert {rule for rule, _ in flagged} == {"CKV_K8S_43"}
    assert all("gateway" in resource for _, resource in flagged), flagged


def _fake_docker(tmp: Path, ids: dict[str, str]) -> dict[str, str]:
    """A `docker` stand-in answering `image inspect` from IDS (ref -> Id); the only dockerd here
    belongs to another test suite, and the check only reads what inspect prints."""
    script = tmp / "docker"
    table = json.dumps(ids)
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"ids = json.loads({table!r})\nref = sys.argv[-1]\n"
        "if ref not in ids:\n    sys.stderr.write(f'Error: No such image: {ref}\\n'); sys.exit(1)\n"
        "print(json.dumps({'Id': ids[ref], 'RepoDigests': []}))\n"
    )
    script.chmod(0o755)
    return {**os.environ, "SLM_DEPLOY_DOCKER": str(script)}


def test_verify_compares_loaded_images_with_the_bundle_digests(mirror_lock: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    fleet = _fleet_with_lock(tmp_path, mirror_lock)
    assert run_cli("bundle", str(fleet), "--out", str(tmp_path / "out")).returncode == 0
    box = tmp_path / "out" / "edge-1"
    listing = json.loads((box / "images.lock.json").read_text())["images"]

    def verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "slm_deploy.cli", "verify", str(box)], capture_output=True, text=True, env=env, check=False
        )

    # Loaded with `docker load` (air-gapped): no RepoDigests, found by name:tag, Id = config digest.
    loaded = {ref.split("@")[0]: want["config"] for ref, want in listing.items()}
    good = verify(_fake_docker(tmp_path, loaded))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"images: {len(listing)} loaded image(s) match images.lock.json" in good.stdout
    ollama = next(ref for ref in listing if ref.startswith("ollama/"))
    loaded[ollama.split("@")[0]] = "sha256:" + "0" * 64
    bad = verify(_fake_docker(tmp_path, loaded))
    assert bad.returncode == 1
    assert f"image differs: {ollama}: loaded image is sha256:{'0' * 64}, the lock says {listing[ollama]['config']}" in bad.stdout
    del loaded[ollama.split("@")[0]]
    absent = verify(_fake_docker(tmp_path, loaded))
    assert absent.returncode == 0 and f"not loaded yet (pulled by digest at `docker compose up`): {ollama}" in absent.stdout
    no_docker = verify({**os.environ, "PATH": str(tmp_path / "empty-path")})
    assert no_docker.returncode == 0 and "images: not checked: no docker command here" in no_docker.stdout


# What the GPU Operator v26.7.0 makes of each block (read at the tag): its own Deployment, the
# driver manager and the validator (operator.yaml DRIVER_MANAGER_IMAGE, VALIDATOR_IMAGE) print
# `repository/image:version`; ClusterPolicy's imagePath turns a `sha256:` version into
# repository/image@version and anything else into repository/image:version; NFD prints repository:tag.
GPU_OPERATOR_IMAGE_BLOCKS = {
    "operator": "helm",
    "driver.manager": "helm",
    "validator": "helm",
    "devicePlugin": "clusterpolicy",
    "gfd": "clusterpolicy",
    "dcgmExporter": "clusterpolicy",
    "migManager": "clusterpolicy",
    "toolkit": "clusterpolicy",
    "node-feature-discovery.image": "nfd",
}


def _gpu_operator_renders(block: dict[str, str], how: str) -> str:
    if how == "nfd":
        return f"{block['repository']}:{block['tag']}"
    path = f"{block['repository']}/{block['image']}"
    if how == "clusterpolicy" and block["version"].startswith("sha256:"):
        return f"{path}@{block['version']}"
    return f"{path}:{block['version']}"


def test_the_gpu_operator_runs_every_image_by_the_locked_digest() -> None:
    from slm_deploy.preview import run_preview
    from slm_deploy.simulator.model import dig
    from slm_deploy.supply.lock import PACKAGED_LOCK

    lock = yaml.safe_load(PACKAGED_LOCK.read_text())["images"]
    (release,) = [r for r in run_preview("dev", ROOT).resources if r.inputs.get("chart") == "gpu-operator"]
    values = release.inputs["values"]
    by_repository = {key.rsplit(":", 1)[0]: (key, entry["digest"]) for key, entry in lock.items()}
    rendered = {}
    for path, how in GPU_OPERATOR_IMAGE_BLOCKS.items():
        reference = _gpu_operator_renders(dig(values, path), how)
        name, _, digest = reference.partition("@")
        repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        key, locked = by_repository[repository]
        assert digest == locked, f"{path}: {reference} is not {key}@{locked}"
        rendered[path] = reference
    images = load_catalog().images
    operator = images["nvidia-gpu-operator"].ref
    assert rendered["operator"] == f"{operator}@{lock[operator]['digest']}"  # not `:sha256:...`
    assert rendered["validator"] == rendered["operator"]  # since 26.x the validator is the operator's image
    assert rendered["gfd"] == rendered["devicePlugin"]  # feature discovery runs the device plugin's image
    # the exporter the operator release is validated with, not the edge boxes' one
    assert dig(values, "dcgmExporter.version") == lock[images["gpu-operator-dcgm-exporter"].ref]["digest"]
    assert images["gpu-operator-dcgm-exporter"].tag != images["dcgm-exporter"].tag
    assert values["dcgmExporter"]["serviceMonitor"] == {"enabled": True} and values["devicePlugin"]["enabled"] is True


# Where kube-prometheus-stack 77.14.0 and its subcharts take each image, and how each template spells
# the digest (read at the chart tags; see chart_profiles.yaml): hex = `@sha256:{{ sha }}` in the template.
KPS_IMAGE_BLOCKS = {
    "prometheusOperator.image": ("sha", "hex"),
    "prometheusOperator.prometheusConfigReloader.image": ("sha", "hex"),
    "prometheusOperator.admissionWebhooks.patch.image": ("sha", "hex"),
    "prometheus.prometheusSpec.image": ("sha", "hex"),
    "alertmanager.alertmanagerSpec.image": ("sha", "hex"),
    "grafana.image": ("sha", "hex"),
    "grafana.sidecar.image": ("sha", "hex"),
    "kube-state-metrics.image": ("sha", "sha256:hex"),
    "prometheus-node-exporter.image": ("digest", "sha256:hex"),
}


def test_kube_prometheus_stack_runs_every_image_by_the_locked_digest() -> None:
    """What Helm renders from the release's values: registry/repository:tag@<the lock's digest> for
    every image the chart and its subcharts run, in the key and spelling each chart version reads."""
    from slm_deploy.preview import run_preview
    from slm_deploy.simulator.model import dig
    from slm_deploy.supply.lock import PACKAGED_LOCK

    lock = yaml.safe_load(PACKAGED_LOCK.read_text())["images"]
    (release,) = [r for r in run_preview("dev", ROOT).resources if r.inputs.get("chart") == "kube-prometheus-stack"]
    values = release.inputs["values"]
    pinned = set()
    for path, (key, spelling) in KPS_IMAGE_BLOCKS.items():
        block = dig(values, path)
        assert isinstance(block, dict), path
        ref = f"{block['registry']}/{block['repository']}:{block['tag']}"
        assert ref in lock, f"{path}: {ref} is not in the lock"
        digest = lock[ref]["digest"]
        assert block[key] == (digest if spelling == "sha256:hex" else digest.removeprefix("sha256:")), path
        assert "sha" not in block or key == "sha", f"{path}: prometheus-node-exporter fails on image.sha"
        pinned.add(ref)
    assert len(pinned) == len(KPS_IMAGE_BLOCKS)
    assert values["grafana"]["initChownData"] == {"enabled": False}, "grafana's init-chown (busybox as root) does not run"
    assert (values["prometheus"]["prometheusSpec"]["image"]["tag"], values["grafana"]["image"]["tag"]) == ("v3.6.0", "12.1.1")


def test_a_chart_image_left_unlocked_is_reported_by_the_review(tmp_path: Path) -> None:
    from slm_deploy.supply.lock import PACKAGED_LOCK

    lock = yaml.safe_load(PACKAGED_LOCK.read_text())
    del lock["images"]["docker.io/grafana/grafana:12.1.1"]
    (tmp_path / "images.lock.yaml").write_text(yaml.safe_dump(lock))
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    refused = run_cli("review", "--stack", "dev", "--project", str(tmp_path), "--tool", "slm")
    assert refused.returncode == 2 and "image 'kps-grafana' is not locked; run `slm-deploy lock`" in refused.stderr
    import subprocess
    import sys

    review = subprocess.run(
        [
            sys.executable,
            "-m",
            "slm_deploy.cli",
            "review",
            "--stack",
            "dev",
            "--project",
            str(tmp_path),
            "--tool",
            "slm",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SLM_DEPLOY_ALLOW_UNLOCKED": "1"},
        check=False,
    )
    assert review.returncode == 1, review.stderr
    assert [(f["rule"], f["message"]) for f in json.loads(review.stdout)["findings"]] == [
        ("SLM-SIM-015", "grafana.image runs docker.io/grafana/grafana:12.1.1 without a digest: set sha = <hex> (no sha256:)")
    ]


def test_an_arm64_llamacpp_box_is_refused_from_the_lock_and_only_the_lock(tmp_path: Path) -> None:
    """images.yaml says nothing about platforms: the shipped (example) lock lists llama.cpp for
    linux/amd64 only, as upstream publishes it, and that alone refuses the arm64 box."""
    from slm_deploy.supply.lock import PACKAGED_LOCK

    catalog = yaml.safe_load((ROOT / "slm_deploy" / "catalog" / "images.yaml").read_text())
    assert not [entry["id"] for entry in catalog["images"] if "platforms" in entry]
    fleet = _fleet_with_lock(tmp_path, PACKAGED_LOCK, arch="arm64")
    data = yaml.safe_load(fleet.read_text())
    data["boxes"][0]["serving"] = {"runtime": "llamacpp", "model": "qwen3-1.7b"}
    fleet.write_text(yaml.safe_dump(data))
    lock = yaml.safe_load(PACKAGED_LOCK.read_text())
    server = load_catalog().images["llamacpp"]
    name = f"{server.repository}:{server.tag}"
    entry = lock["images"][name]
    refused = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: fleet.yaml: boxes[0].hardware.cpu_arch: box edge-1: {name} has no "
        f"linux/arm64 manifest (the registry lists linux/amd64 under {entry['digest']})\n"
    )
    assert not (tmp_path / "out").exists()
    # A lock in which the registry listed an arm64 manifest: the same catalog now serves the box.
    entry["platforms"]["linux/arm64"] = entry["platforms"]["linux/amd64"]
    (tmp_path / "images.lock.yaml").write_text(yaml.safe_dump(lock))
    accepted = run_cli("bundle", str(fleet), "--out", str(tmp_path / "out"))
    assert accepted.returncode == 0, accepted.stderr


def test_a_caller_that_changes_a_loaded_lock_changes_only_its_own_copy(mirror_lock: Path) -> None:
    """Locks are parsed once per content; what one caller does to the lock it was handed (its dicts
    are not frozen) must not reach the next caller in the process."""
    from slm_deploy.supply.lock import load

    first = load(mirror_lock)
    count = len(first.images)
    first.images.clear()
    assert len(load(mirror_lock).images) == count
