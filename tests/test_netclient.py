"""The shared network client against hostile peers on 127.0.0.1: every answer ends within its
deadline or its byte limit, as one NetError naming the service and the host."""

from __future__ import annotations

import pytest

from slm_deploy.netclient import Client, Deadline, Malformed, NetError, TooLarge, Unreachable
from tests.hostile import Hostile, serve


def client(**kw: object) -> Client:
    return Client("registry", timeout=1.5, use_proxies=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["drip-headers", "drip-body"])
def test_a_slow_drip_ends_at_the_total_deadline_not_an_idle_timeout(mode: str) -> None:
    with serve(Hostile(mode)) as peer, pytest.raises(Unreachable) as info:
        client().request("GET", f"{peer.url}/v2/", limit=1_000_000)
    assert str(info.value) == f"registry {peer.host}: no complete answer within 1.5 s"


def test_the_commands_deadline_bounds_all_its_requests() -> None:
    deadline = Deadline(1.0, "lock")
    with serve(Hostile("drip-body")) as peer:
        c = Client("registry", timeout=30, deadline=deadline, use_proxies=False)
        with pytest.raises(Unreachable, match="within lock's 1 s"):
            c.request("GET", f"{peer.url}/a", limit=1_000_000)
        with pytest.raises(Unreachable, match="within lock's 1 s"):
            c.request("GET", f"{peer.url}/b", limit=1_000_000)  # the budget is spent: no second wait


def test_an_oversized_answer_is_refused_from_its_content_length() -> None:
    with serve(Hostile("oversized")) as peer, pytest.raises(TooLarge) as info:
        client().request("GET", f"{peer.url}/x", limit=4096, what="manifest")
    assert "its manifest is 67108864 bytes, more than the 4096 allowed" in str(info.value)
    assert peer.most < 16 * 1024 * 1024


def test_a_body_longer_than_its_content_length_says_is_cut_at_the_limit() -> None:
    with serve(Hostile("lying-size")) as peer:
        answer = client().request("GET", f"{peer.url}/x", limit=4096)
    assert len(answer.body) == 10  # http.client reads what Content-Length says, no more


def test_a_range_the_server_ignores_is_read_up_to_its_end_only() -> None:
    with serve(Hostile("oversized")) as peer:
        status, data = client().read_range(f"{peer.url}/blob", 0, 1023)
    assert (status, len(data), data[:4]) == (200, 1024, b"GGUF")
    assert peer.most < 16 * 1024 * 1024


def test_an_endless_line_stops_at_the_line_limit() -> None:
    with (
        serve(Hostile("endless-line")) as peer,
        client().open("GET", f"{peer.url}/s") as stream,
        pytest.raises(TooLarge, match="a line longer than 65536 bytes"),
    ):
        list(stream.lines(max_line=65536, max_total=10**9))
    assert peer.most < 16 * 1024 * 1024


@pytest.mark.parametrize("mode", ["malformed-http"])
def test_a_malformed_answer_is_one_clear_error(mode: str) -> None:
    with serve(Hostile(mode)) as peer, pytest.raises(Malformed) as info:
        client().request("GET", f"{peer.url}/x", limit=4096)
    assert str(info.value).startswith(f"registry {peer.host}: sent a malformed HTTP answer")


def test_credentials_are_never_redirected_to_another_host() -> None:
    with serve(Hostile("malformed-json")) as other, serve(Hostile("redirect", location=f"{other.url}/steal")) as peer:
        with pytest.raises(NetError, match=r"carries credentials to another host \(127\.0\.0\.1:\d+\): refused"):
            client().request("GET", f"{peer.url}/v2/x", auth="Bearer secret", redirects=3, limit=4096)
        assert other.requests == []
        # A blob store hand-off: followed, without the credentials.
        answer = client().request(
            "GET", f"{peer.url}/v2/x", auth="Bearer secret", redirects=3, limit=4096, drop_auth_on_redirect=True
        )
    assert answer.body == b"{not json" and other.requests == [b"GET /steal HTTP/1.1"]


def test_a_refused_connection_names_the_service_and_host() -> None:
    with serve(Hostile("malformed-json")) as peer:
        port = peer.port
    with pytest.raises(Unreachable, match=rf"^registry 127\.0\.0\.1:{port}: connection refused$"):
        client().request("GET", f"http://127.0.0.1:{port}/", limit=10)


@pytest.mark.parametrize("mode", ["cut-short", "cut-short-chunked"])
def test_an_answer_cut_short_is_an_error_not_a_short_answer(mode: str) -> None:
    """A gateway whose upstream hangs up mid-answer closes the client's connection inside the body.
    http.client returns b"" for the rest of a Content-Length body: the answer used to be read as
    complete (smoke then said "not a chat completion: " with nothing after it)."""
    body = b'{"choices": [{"message": {"content": "' + b"x" * 300 + b'"}}]}'
    with serve(Hostile(mode, body=body)) as peer, pytest.raises(Unreachable) as info:
        client().request("GET", f"{peer.url}/v1/chat/completions", limit=4096)
    got = len(body) // 3
    expected = {
        "cut-short": f"the connection closed {got} bytes into the answer of the {len(body)} announced, before its end",
        "cut-short-chunked": f"the answer broke off {got} bytes in, before its last chunk",
    }[mode]
    assert str(info.value) == f"registry {peer.host}: {expected}"


@pytest.mark.parametrize("mode", ["cut-short", "cut-short-chunked"])
def test_an_error_answer_cut_short_keeps_its_status_and_what_came(mode: str) -> None:
    """An error answer is read for its message only: cut short, its status still stands (a 404 is
    not "cannot reach the registry")."""
    body = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "' + b"m" * 200 + b'"}]}'
    with serve(Hostile(mode, body=body, status="404 Not Found")) as peer:
        answer = client().request("GET", f"{peer.url}/v2/x/manifests/latest", limit=4096)
    assert (answer.status, answer.body) == (404, body[: len(body) // 3])
