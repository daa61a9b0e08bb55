"""An HTTP proxy in front of the S3 endpoint that misbehaves on schedule: 503 SlowDown, connection
resets (before the request reaches S3, and after S3 handled it), GET bodies cut mid-stream."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    slowdown_every: int = 0  # every Nth request answered 503 SlowDown
    reset_every: int = 0  # every Nth request: connection reset (every other one after S3 handled it)
    truncate_every: int = 0  # every Nth GET with a body: half the body, then the connection closes
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what happened)
    _n: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n


def _read_head(sock: socket.socket) -> bytes | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    def __init__(self, upstream: str, faults: Faults) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.faults = faults
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, client: socket.socket) -> None:
        head = _read_head(client)
        if head is None:
            return
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = [ln for ln in lines[1:] if ln]
        lower = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in headers}
        length = int(lower.get("content-length", "0"))
        if lower.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = rest
        while len(body) < length:
            chunk = client.recv(min(1 << 20, length - len(body)))
            if not chunk:
                return
            body += chunk
        f = self.faults
        n = f.next()
        if f.slowdown_every and n % f.slowdown_every == 0:
            msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                + f"Content-Length: {len(msg)}\r\n\r\n".encode()
                + msg
            )
            f.log.append((method, path, "503"))
            client.close()
            return
        reset = f.reset_every and n % f.reset_every == 0
        if reset and (n // f.reset_every) % 2 == 1:
            f.log.append((method, path, "reset-before"))
            _reset(client)
            return
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in ("connection", "expect")]
        request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode() + body
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(request)
            response = b""
            while chunk := up.recv(1 << 20):
                response += chunk
        if reset:
            f.log.append((method, path, "reset-after"))
            _reset(client)
            return
        rhead, _, rbody = response.partition(b"\r\n\r\n")
        status = rhead.split(b" ", 2)[1].decode()
        if method == "GET" and f.truncate_every and len(rbody) > 1024 and n % f.truncate_every == 0:
            client.sendall(rhead + b"\r\n\r\n" + rbody[: len(rbody) // 2])
            f.log.append((method, path, "truncated"))
            _reset(client)
            return
        f.log.append((method, path, status))
        client.sendall(response)
        client.close()
