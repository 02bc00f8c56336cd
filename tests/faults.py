"""Faults injected between the job and the emulators, on the wire: nothing in the job or in Beam is patched.

* ``HttpFaultProxy`` stands in front of the BigQuery emulator's REST API. A test gives it a rule that looks at
  each ``insertAll`` request and answers for BigQuery: an HTTP error (503 while BigQuery is degraded), a
  connection cut before the request is forwarded (the service unreachable), a connection cut after it was
  forwarded (the rows written, the answer lost), or BigQuery's own answer refusing some rows (a schema
  rejection: the emulator accepts unknown fields silently and answers a bad value with a 500, so BigQuery's
  documented ``insertErrors`` answer is the proxy's to give). Every ``insertAll`` body it sees is kept.
* ``TcpFaultProxy`` stands in front of the Pub/Sub emulator's gRPC port and can be taken down (open connections
  cut, new ones refused) and brought up again: the emulator unreachable mid-run. Stopping the emulator itself
  would lose its topics and subscriptions (it keeps them in memory), and the test would then measure the
  emulator, not the job.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CUT_AFTER", "CUT_BEFORE", "FORWARD", "HttpFaultProxy", "TcpFaultProxy", "http_error", "reply"]


@dataclass(frozen=True)
class Action:
    kind: str  # forward | status | cut_before | cut_after | reply
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)


FORWARD = Action("forward")
CUT_BEFORE = Action("cut_before")
CUT_AFTER = Action("cut_after")


def http_error(status: int, reason: str = "backendError") -> Action:
    """An HTTP error as BigQuery writes one."""
    return Action("status", status, {"error": {"code": status, "message": f"injected {status}",
                                               "errors": [{"reason": reason, "message": f"injected {status}"}]}})


def reply(body: dict[str, Any]) -> Action:
    """A 200 answer with this body, not forwarded (BigQuery's ``insertErrors`` answer)."""
    return Action("reply", 200, body)


#: A rule sees the n-th ``insertAll`` request (from 0) and its JSON body, and says what to do with it.
Rule = Callable[[int, dict[str, Any]], Action]


class HttpFaultProxy:
    """A reverse proxy on 127.0.0.1 for ``upstream`` (``http://host:port``); ``url`` is where clients point."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rule: Rule = lambda n, body: FORWARD
        self.inserts: list[dict[str, Any]] = []  # every insertAll body, in the order received
        self.insert_bytes: list[int] = []  # and its size as sent
        self.actions: list[str] = []  # what was done with each of them
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's session expects

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = FORWARD
                if self.command == "POST" and "/insertAll" in self.path:
                    with proxy._lock:
                        n = len(proxy.inserts)
                        parsed = json.loads(body or b"{}")
                        proxy.inserts.append(parsed)
                        proxy.insert_bytes.append(len(body))
                        action = proxy.rule(n, parsed)
                        proxy.actions.append(action.kind)
                if action.kind == "cut_before":
                    self._cut()
                    return
                if action.kind in ("status", "reply"):
                    self._send(action.status, json.dumps(action.body).encode(), "application/json")
                    return
                status, headers, data = proxy._forward(self.command, self.path, dict(self.headers), body)
                if action.kind == "cut_after":
                    self._cut()
                    return
                self._send(status, data, headers.get("Content-Type", "application/json"))

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _cut(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
            conn.request(method, path, body=body or None, headers=keep)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def rows_sent(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (insertId, row) of every insertAll body received, in order (retries included)."""
        return [(r.get("insertId", ""), r["json"]) for body in self.inserts for r in body.get("rows", [])]

    def __enter__(self) -> HttpFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TcpFaultProxy:
    """A byte-for-byte TCP proxy on 127.0.0.1 for ``host:port``; ``down()`` cuts every open connection and refuses
    new ones (accepted and closed at once) until ``up()``; ``refused`` counts those. ``trip(n, min_bytes, for_s)``:
    the n-th read of at least ``min_bytes`` from a client (a request, not the connection's preamble) is not
    forwarded, and the proxy goes down there, for ``for_s`` seconds: the service lost in the middle of a run."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host or "127.0.0.1", int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._up = threading.Event()
        self._up.set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.refused = 0
        self.cut = 0
        self.tripped = False
        self._trip: tuple[int, int, float] | None = None
        self._big_reads = 0
        self._accepting: threading.Thread | None = None

    def trip(self, n: int, min_bytes: int, for_s: float) -> None:
        self._trip = (n, min_bytes, for_s)

    def down(self) -> None:
        self._up.clear()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                self.cut += 1
            self._open.clear()

    def up(self) -> None:
        self._up.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for a, b, outbound in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, outbound), daemon=True).start()

    def _tripped_by(self, data: bytes) -> bool:
        with self._lock:
            if self._trip is None or self.tripped or len(data) < self._trip[1]:
                return False
            self._big_reads += 1
            if self._big_reads < self._trip[0]:
                return False
            self.tripped = True
        self.down()
        threading.Timer(self._trip[2], self.up).start()
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and self._tripped_by(data):
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.discard(src)

    def __enter__(self) -> TcpFaultProxy:
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
        self._listener.close()
        if self._accepting is not None:
            self._accepting.join(5)
        self.down()
