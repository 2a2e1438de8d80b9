"""Hostile HTTP peers on 127.0.0.1 for the network clients' tests: a raw socket server whose every
connection gets one behaviour, whatever was asked.

- `drip-headers`: a status line, then one byte of header per second, forever;
- `drip-body`: headers announcing a 1 MB body, then one byte per second;
- `endless-line`: a 200 event stream whose first line never ends (as fast as the socket takes it);
- `oversized`: a 200 whose body is far larger than any real answer, ignoring Range;
- `lying-size`: Content-Length 10 but megabytes follow (the body is read as sent by some clients);
- `cut-short` / `cut-short-chunked`: a STATUS answer that announces BODY (by Content-Length, or one chunk of its
  size) and closes after a third of it, as a gateway does when its upstream hangs up mid-answer;
- `malformed-http`: not HTTP at all;
- `malformed-json`: HTTP 200 with a body that is not JSON (or any other fixed answer);
- `redirect`: 302 to another host (LOCATION).

`sent` counts the bytes written, `most` the most written on one connection, so a test can show
that a client stopped reading early.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

BIG = 64 * 1024 * 1024


@dataclass
class Hostile:
    mode: str
    body: bytes = b"{not json"
    headers: str = "Content-Type: application/json\r\n"
    location: str = ""
    status: str = "200 OK"  # the status line of the cut-short modes
    sent: int = 0
    most: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _send(self, conn: socket.socket, data: bytes, counter: list[int]) -> None:
        conn.sendall(data)
        self.sent += len(data)
        counter[0] += len(data)
        self.most = max(self.most, counter[0])

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append(data.split(b"\r\n", 1)[0])

    def handle(self, conn: socket.socket) -> None:
        here = [0]

        def send(data: bytes) -> None:
            self._send(conn, data, here)

        try:
            self._read_request(conn)
            mode = self.mode
            if mode == "drip-headers":
                send(b"HTTP/1.1 200 OK\r\n")
                while not self._stop.is_set():
                    send(b"X")
                    time.sleep(1)
            elif mode == "drip-body":
                send(f"HTTP/1.1 200 OK\r\n{self.headers}Content-Length: 1000000\r\n\r\n".encode())
                while not self._stop.is_set():
                    send(b"{")
                    time.sleep(1)
            elif mode == "endless-line":
                send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ")
                block = b"a" * 65536
                while not self._stop.is_set() and here[0] < BIG:
                    send(block)
            elif mode in ("oversized", "lying-size"):
                length = 10 if mode == "lying-size" else BIG
                send(f"HTTP/1.1 200 OK\r\n{self.headers}Content-Length: {length}\r\n\r\n".encode())
                block = b"GGUF" + b"\xff" * 65532
                while not self._stop.is_set() and here[0] < BIG:
                    send(block)
            elif mode == "cut-short":  # a proxy whose upstream went away mid-answer: headers, part of the body, FIN
                send(f"HTTP/1.1 {self.status}\r\n{self.headers}Content-Length: {len(self.body)}\r\n\r\n".encode())
                send(self.body[: len(self.body) // 3])
            elif mode == "cut-short-chunked":
                send(f"HTTP/1.1 {self.status}\r\n{self.headers}Transfer-Encoding: chunked\r\n\r\n".encode())
                send(f"{len(self.body):x}\r\n".encode() + self.body[: len(self.body) // 3])
            elif mode == "malformed-http":
                send(b"HELLO THERE\r\n\r\n" + b"\x00" * 100)
            elif mode == "malformed-json":
                head = f"HTTP/1.1 200 OK\r\n{self.headers}Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                send(head.encode() + self.body)
            elif mode == "redirect":
                send(f"HTTP/1.1 302 Found\r\nLocation: {self.location}\r\nContent-Length: 0\r\n\r\n".encode())
            else:  # pragma: no cover
                raise ValueError(mode)
        except OSError:
            pass  # the client hung up: what a bounded client does
        finally:
            conn.close()


@contextmanager
def serve(peer: Hostile) -> Iterator[Hostile]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    peer.port = listener.getsockname()[1]

    def accept() -> None:
        while not peer._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=peer.handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer._stop.set()
        thread.join(5)
        listener.close()
