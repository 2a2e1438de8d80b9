"""The one HTTP client every network caller uses: the registry client (`lock`), Hub and Ollama
resolution (`plan`, `bundle`, `preview`) and `smoke`.

Each request has a total deadline, not an idle timeout: a peer that sends one byte per second,
in its headers or its body, is cut off when the deadline passes (a watchdog shuts the socket
down, which wakes a blocked read in any thread). A command may share one `Deadline` among all
its requests. Each answer has a byte limit that matches what the real server can send; a larger
Content-Length is refused before reading, a body that keeps coming is cut at the limit. Ranged
reads stay bounded when the server ignores `Range` (the prefix is read, no more) or sends more
than asked. Streams are read line by line with a line-length limit. Credentials never reach
another host: a credentialed request redirected to another host is refused, or re-sent without
its credentials where the protocol hands off to a blob store (registry blobs, Hub LFS files).
Every failure is a `NetError`: one line naming the service and the host.

Why http.client and not urllib or httpx: urllib hides the socket until the headers are read (no
way to bound a slow header), and follows redirects on its own; http.client gives both to us.
HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured as urllib honours them (a CONNECT tunnel for
https), never for loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from slm_deploy.errors import InputError

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
ERROR_BODY_BYTES = 64 * 1024  # what is read of an error answer: enough for its JSON message
READ_CHUNK = 64 * 1024
# Seconds: per request (connect, headers and body together) and per command (all its requests).
TIMEOUT_ENV, DEFAULT_TIMEOUT = "SLM_DEPLOY_NET_TIMEOUT", 30.0
DEADLINE_ENV, DEFAULT_DEADLINE = "SLM_DEPLOY_NET_DEADLINE", 600.0


class NetError(InputError):
    """A server could not give a usable answer: `error: SERVICE HOST: what went wrong`."""

    def __init__(self, service: str, host: str, message: str) -> None:
        super().__init__(f"{service} {host}" if host else service, "", message)
        self.service = service
        self.host = host


class Unreachable(NetError):
    """No answer at all (refused, unresolvable, TLS failed, deadline passed): a cache may serve."""


class CutShort(Unreachable):
    """An answer whose body ended before its end: the connection closed inside it."""


class TooLarge(NetError):
    pass


class Malformed(NetError):
    pass


class Deadline:
    """A point in time all of a command's requests must finish by."""

    def __init__(self, seconds: float, what: str = "the command") -> None:
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise InputError("environment", name, f"{raw[:40]!r} is not a number of seconds between 0 and 86400")
    return value


def request_timeout() -> float:
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


_COMMAND: Deadline | None = None


@contextmanager
def command() -> Iterator[None]:
    """Around one command of the command line: every request it makes ends by the command's
    deadline. The deadline ends with the command, so code that runs the command line in-process
    (a test, a tool embedding it) is not bound by an earlier command's clock afterwards."""
    global _COMMAND
    request_timeout()  # a bad setting is refused before the command starts
    _COMMAND = Deadline(_seconds(DEADLINE_ENV, DEFAULT_DEADLINE))
    try:
        yield
    finally:
        _COMMAND = None


def command_deadline() -> Deadline | None:
    return _COMMAND


def is_loopback(host: str) -> bool:
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_of(url: str) -> str:
    """`host[:port]` of a URL, as a user would name it in a message."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]


class Hops(TypedDict, total=False):
    """Where a request may go after its first answer, and with which credentials (see Client.open)."""

    auth: str | None
    redirects: int
    drop_auth_on_redirect: bool


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str  # after redirects

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class Watchdog:
    """Shuts a connection's socket down at the deadline, waking a read blocked in any thread."""

    def __init__(self, conn: http.client.HTTPConnection | socket.socket, seconds: float) -> None:
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn if isinstance(self.conn, socket.socket) else self.conn.sock
        if sock is not None:
            # socket.socket.shutdown, not SSLSocket.shutdown: that one also drops the TLS object
            # under the feet of the reading thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class _DialedHTTPS(http.client.HTTPSConnection):
    """TLS to ADDRESS, with SNI, certificate check and Host header for the URL's host (curl --connect-to)."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class _DialedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class Stream:
    """An open answer: status and headers read, the body read on demand within the deadline."""

    def __init__(self, client: Client, resp: http.client.HTTPResponse, url: str, watchdog: Watchdog, seconds: float) -> None:
        self._client = client
        self._resp = resp
        self._watchdog = watchdog
        self._seconds = seconds
        self.url = url
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.host = host_of(url)
        self._got = 0  # body bytes read

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def _chunk(self, size: int) -> bytes:
        """At most SIZE bytes of the body; b"" at its end. A body that ends before its end (the
        connection closed inside it: a gateway whose upstream hung up mid-answer) is an error,
        never a short answer: http.client's read1 returns b"" when the connection closes before
        Content-Length is reached, and raises IncompleteRead inside a chunk."""
        try:
            chunk = self._resp.read1(size)
        except http.client.IncompleteRead:
            if self._watchdog.fired:
                raise self._client.late(self.host, self._seconds) from None
            raise self._cut(None) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._client.failure(exc, self.host, self._watchdog, self._seconds) from None
        self._got += len(chunk)
        if not chunk and size and self._resp.length and not self._watchdog.fired:
            raise self._cut(self._got + self._resp.length)
        return chunk

    def _cut(self, announced: int | None) -> CutShort:
        if announced is None:  # chunked: http.client says IncompleteRead for a closed connection and a bad chunk alike
            message = f"the answer broke off {self._got} bytes in, before its last chunk"
        else:
            message = f"the connection closed {self._got} bytes into the answer of the {announced} announced, before its end"
        return CutShort(self._client.service, self.host, message)

    def content_length(self) -> int | None:
        value = self.header("content-length").strip()
        if not value:
            return None
        if not value.isdigit():
            raise Malformed(self._client.service, self.host, f"sent a malformed Content-Length ({value[:40]!r})")
        return int(value)

    def read(self, limit: int, what: str = "answer", truncate: bool = False) -> bytes:
        """The body, at most LIMIT bytes: larger is an error (TooLarge), or with TRUNCATE the first LIMIT bytes."""
        announced = self.content_length()
        if announced is not None and announced > limit and not truncate:
            raise TooLarge(self._client.service, self.host, f"its {what} is {announced} bytes, more than the {limit} allowed")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            try:
                chunk = self._chunk(min(READ_CHUNK, limit + 1 - size))
            except CutShort:
                if 200 <= self.status < 300:
                    raise
                break  # an error answer is read for its message: what came of it is kept, its status stands
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if self._watchdog.fired:
            raise self._client.late(self.host, self._seconds)
        data = b"".join(chunks)
        if len(data) > limit:
            if truncate:
                return data[:limit]
            raise TooLarge(self._client.service, self.host, f"its {what} is more than the {limit} bytes allowed")
        return data

    def lines(self, max_line: int, max_total: int) -> Iterator[bytes]:
        """The body line by line (without the line end); a line longer than MAX_LINE, or more than
        MAX_TOTAL bytes in all, is an error."""
        buffer = b""
        total = 0
        while True:
            newline = buffer.find(b"\n")
            if newline >= 0:
                line, buffer = buffer[:newline], buffer[newline + 1 :]
                yield line.rstrip(b"\r")
                continue
            if len(buffer) > max_line:
                raise TooLarge(self._client.service, self.host, f"sent a line longer than {max_line} bytes")
            chunk = self._chunk(READ_CHUNK)
            if not chunk:
                if self._watchdog.fired:
                    raise self._client.late(self.host, self._seconds)
                if buffer:
                    yield buffer.rstrip(b"\r")
                return
            total += len(chunk)
            if total > max_total:
                raise TooLarge(self._client.service, self.host, f"sent more than {max_total} bytes")
            buffer += chunk


@dataclass
class Client:
    """One service's client: SERVICE names it in every error ("registry", "Hub", "Ollama registry")."""

    service: str
    timeout: float = 30.0  # total seconds per request (connect, headers and body)
    deadline: Deadline | None = None  # the command's, shared by all its requests
    user_agent: str = "slm-deploy"
    context: ssl.SSLContext | None = None
    connect_to: str | None = None  # an address to dial instead of resolving the host
    use_proxies: bool = True
    on_request: Callable[[str, str], None] | None = None  # (method, url): tests count requests
    _proxies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.use_proxies:
            self._proxies = urllib.request.getproxies()

    # -- the budget -----------------------------------------------------------------------

    def _budget(self) -> float:
        seconds = self.timeout
        if self.deadline is not None:
            seconds = min(seconds, self.deadline.remaining())
        return seconds

    def late(self, host: str, seconds: float) -> Unreachable:
        if self.deadline is not None and self.deadline.remaining() <= 0:
            return Unreachable(
                self.service, host, f"no complete answer within {self.deadline.what}'s {self.deadline.seconds:g} s"
            )
        return Unreachable(self.service, host, f"no complete answer within {seconds:g} s")

    def failure(self, exc: BaseException, host: str, watchdog: Watchdog | None, seconds: float) -> NetError:
        if (watchdog is not None and watchdog.fired) or isinstance(exc, TimeoutError | socket.timeout):
            return self.late(host, seconds)
        if isinstance(exc, ConnectionRefusedError):
            return Unreachable(self.service, host, "connection refused")
        if isinstance(exc, socket.gaierror):
            return Unreachable(self.service, host, f"cannot resolve the host name ({exc.strerror or exc})")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Unreachable(self.service, host, f"TLS certificate not trusted: {exc.verify_message}")
        if isinstance(exc, ssl.SSLError):
            hint = " (is it plain http?)" if "WRONG_VERSION_NUMBER" in str(exc) else ""
            return Unreachable(self.service, host, f"TLS failed: {exc.reason or exc}{hint}")
        if isinstance(exc, http.client.LineTooLong):
            return Malformed(self.service, host, "sent a header line longer than http.client accepts")
        if isinstance(exc, http.client.HTTPException | ValueError):
            return Malformed(self.service, host, f"sent a malformed HTTP answer ({exc.__class__.__name__})")
        if isinstance(exc, OSError):
            return Unreachable(self.service, host, f"{exc.strerror or exc.__class__.__name__}")
        return Malformed(self.service, host, f"{exc.__class__.__name__}")

    # -- connections ----------------------------------------------------------------------

    def _connection(self, scheme: str, host: str, port: int, seconds: float) -> tuple[http.client.HTTPConnection, bool]:
        """The connection and whether requests through it name the absolute URL (a plain-http proxy)."""
        proxy = None
        if self.use_proxies and not self.connect_to and not is_loopback(host) and not urllib.request.proxy_bypass(host):
            proxy = self._proxies.get(scheme)
        if proxy:
            parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            phost, pport = parsed.hostname or "", parsed.port or 80
            if scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    phost, pport, timeout=seconds, context=self.context or ssl.create_default_context()
                )
                conn.set_tunnel(host, port)
                return conn, False
            return http.client.HTTPConnection(phost, pport, timeout=seconds), True
        if scheme == "https":
            context = self.context or ssl.create_default_context()
            if self.connect_to:
                return _DialedHTTPS(host, port, self.connect_to, seconds, context), False
            return http.client.HTTPSConnection(host, port, timeout=seconds, context=context), False
        if self.connect_to:
            return _DialedHTTP(host, port, self.connect_to, seconds), False
        return http.client.HTTPConnection(host, port, timeout=seconds), False

    @contextmanager
    def open(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        auth: str | None = None,
        redirects: int = 0,
        drop_auth_on_redirect: bool = False,
    ) -> Iterator[Stream]:
        """An answer whose status and headers are read; the caller reads the body (within the
        same deadline). AUTH (an Authorization value) goes to URL's host only: a redirect to
        another host is refused, or with DROP_AUTH_ON_REDIRECT re-sent without it."""
        seconds = self._budget()
        first_host = host_of(url)
        if seconds <= 0:
            raise self.late(first_host, seconds)
        start = time.monotonic()
        current = url
        for hop in range(redirects + 1):
            parts = urllib.parse.urlsplit(current)
            host = parts.netloc.rpartition("@")[2]
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Malformed(self.service, first_host, f"redirected to {current[:120]!r}, not an http(s) URL")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise Malformed(self.service, first_host, f"redirected to {current[:120]!r}: bad port") from None
            left = seconds - (time.monotonic() - start)
            if left <= 0:
                raise self.late(host, seconds)
            conn, absolute = self._connection(parts.scheme, parts.hostname, port, left)
            watchdog = Watchdog(conn, left)
            try:
                target = current if absolute else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                send = {"User-Agent": self.user_agent, **(headers or {})}
                if auth is not None:
                    send["Authorization"] = auth
                if self.on_request is not None:
                    self.on_request(method, current)
                try:
                    conn.request(method, target, body=body, headers=send)
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    raise self.failure(exc, host, watchdog, seconds) from None
                if resp.status in REDIRECTS and hop < redirects and resp.getheader("Location"):
                    location = urllib.parse.urljoin(current, resp.getheader("Location") or "")
                    new = urllib.parse.urlsplit(location)
                    if parts.scheme == "https" and new.scheme == "http":
                        raise NetError(self.service, host, f"redirected from https to plain http ({host_of(location)}): refused")
                    if auth is not None and new.netloc.rpartition("@")[2] != host:
                        if not drop_auth_on_redirect:
                            raise NetError(
                                self.service,
                                host,
                                f"redirected a request that carries credentials to another host ({host_of(location)}): refused",
                            )
                        auth = None
                    if resp.status == 303:
                        method, body = "GET", None
                    current = location
                    continue
                yield Stream(self, resp, current, watchdog, seconds)
                return
            finally:
                watchdog.cancel()
                conn.close()
        raise NetError(self.service, first_host, f"more than {redirects} redirects")

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        limit: int,
        what: str = "answer",
        error_limit: int = ERROR_BODY_BYTES,
        **hops: Unpack[Hops],
    ) -> Response:
        """A whole answer: a 2xx body of at most LIMIT bytes (else TooLarge), other bodies cut at
        ERROR_LIMIT (an error page is read for its message, never whole)."""
        with self.open(method, url, headers, body, **hops) as stream:
            if method == "HEAD":
                data = b""
            elif 200 <= stream.status < 300:
                data = stream.read(limit, what)
            else:
                data = stream.read(error_limit, "error answer", truncate=True)
            return Response(stream.status, stream.headers, data, stream.url)

    def read_range(
        self,
        url: str,
        start: int,
        end: int,
        headers: dict[str, str] | None = None,
        **hops: Unpack[Hops],
    ) -> tuple[int, bytes]:
        """Bytes START..END (inclusive) of a file, at most END-START+1 of them whatever the server
        does: a server that ignores Range (200) is read up to END and no further; one that sends
        more than asked is cut. Returns (status, bytes); a non-2xx status comes with no bytes."""
        if start < 0 or end < start:
            raise ValueError(f"bad range {start}-{end}")
        wanted = end - start + 1
        with self.open("GET", url, {**(headers or {}), "Range": f"bytes={start}-{end}"}, **hops) as stream:
            if stream.status == 206:
                return 206, stream.read(wanted, "ranged answer", truncate=True)
            if stream.status == 200:
                return 200, stream.read(end + 1, "file", truncate=True)[start:]
            stream.read(ERROR_BODY_BYTES, "error answer", truncate=True)
            return stream.status, b""
