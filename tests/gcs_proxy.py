"""A proxy between the real google-cloud-storage client and the GCS emulator, shared by the
storage tests: it forwards and records every request, and where a test asks it to, refuses
one, garbles it, rewrites the emulator's answer or drops the connection, as a real service
may. Also what a bucket holds, to show what a refused call left."""

import http.client
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from shapes_pipeline.helpers import storage

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class GcsProxy(ThreadingHTTPServer):
    """Forwards every request to the emulator and records it in ``seen`` (method, unquoted
    path, body), unless a fault is due:

    - ``rules``: a request matching (method, regex on the unquoted path and query, action)
      gets the action instead: an HTTP status, ``"not json"`` (a 200 whose body is no
      JSON), or a function rewriting the emulator's JSON answer;
    - ``forbid``: methods answered 403;
    - ``drop_writes``, ``busy_writes``: the next N writes get their connection closed with
      no answer, then the next N a 503; each of these three is recorded in ``faults``."""

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlparse(upstream)
        self.rules: list[tuple[str, str, object]] = []
        self.seen: list[tuple[str, str, bytes]] = []
        self.forbid: set[str] = set()
        self.drop_writes = 0
        self.busy_writes = 0
        self.faults: list[tuple[str, str, str]] = []  # method, path, what was done
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def writes(self) -> list[tuple[str, str, bytes]]:
        return [r for r in self.seen if r[0] in WRITES]

    def fault_for(self, method: str) -> str | None:
        with self.lock:
            if method in self.forbid:
                return "403"
            if method in WRITES and self.drop_writes:
                self.drop_writes -= 1
                return "drop"
            if method in WRITES and self.busy_writes:
                self.busy_writes -= 1
                return "503"
        return None


class _Forward(BaseHTTPRequestHandler):
    server: GcsProxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = unquote(self.path)
        with self.server.lock:
            self.server.seen.append((self.command, path, body))
        action = next(
            (a for m, p, a in self.server.rules if m == self.command and re.search(p, path)),
            None,
        )
        fault = self.server.fault_for(self.command)
        if fault:
            self.server.faults.append((self.command, self.path, fault))
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if fault in ("403", "503"):
            message = "caller does not have storage.objects access" if fault == "403" else "busy"
            return self._refuse(int(fault), message)
        if isinstance(action, int):
            return self._refuse(action, f"refused with {action}")
        if action == "not json":
            return self._answer(200, b"<html>not json</html>")
        upstream = http.client.HTTPConnection(
            self.server.upstream.hostname, self.server.upstream.port, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        if callable(action):
            data = json.dumps(action(json.loads(data))).encode()
        hop_by_hop = ("transfer-encoding", "content-length", "connection")
        kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in hop_by_hop]
        self._answer(answer.status, data, kept)

    def _refuse(self, code: int, message: str) -> None:
        self._answer(code, json.dumps({"error": {"code": code, "message": message}}).encode())

    def _answer(self, code: int, data: bytes, headers=(("Content-Type", "application/json"),)):
        self.send_response(code)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args) -> None:
        pass


def proxied(monkeypatch) -> Iterator[GcsProxy]:
    """For a fixture's length (``yield from`` it): ``shapes_pipeline.helpers.storage``, and child
    processes, talk to the emulator through a new ``GcsProxy``."""
    server = GcsProxy(os.environ["STORAGE_EMULATOR_HOST"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    storage._client.cache_clear()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        storage._client.cache_clear()


def objects(bucket) -> dict[str, bytes]:
    """Every object of the bucket, by name."""
    return {b.name: b.download_as_bytes() for b in bucket.list_blobs()}
