"""Storage faults between the real google-cloud-storage client and gcp-storage-emulator: a
proxy on 127.0.0.1 forwards every request and can drop connections (the service going
away mid-upload), answer 503 (overloaded) or 403 (no permission). Transient faults are
retried by the client's own policy; persistent ones end in one line naming the URI, and
what the registry held before is left exactly as it was."""

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from helpers import cli

from components import registry, storage
from components.export import export

pytestmark = pytest.mark.slow  # trains, exports or starts a browser

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class FaultyProxy(ThreadingHTTPServer):
    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), Forward)
        self.upstream = urlparse(upstream)
        self.drop_writes = 0  # the next N writes: connection closed, no answer
        self.busy_writes = 0  # the next N writes: 503
        self.forbid = set()  # methods answered 403
        self.faults = []  # (method, path, what was done)
        self.lock = threading.Lock()

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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Forward(BaseHTTPRequestHandler):
    server: FaultyProxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = self.server.fault_for(self.command)
        if fault:
            self.server.faults.append((self.command, self.path, fault))
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if fault in ("403", "503"):
            code = int(fault)
            message = "caller does not have storage.objects access" if code == 403 else "busy"
            self._answer(code, json.dumps({"error": {"code": code, "message": message}}).encode())
            return
        upstream = http.client.HTTPConnection(
            self.server.upstream.hostname, self.server.upstream.port, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    def _answer(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
    """``components.storage`` (and child processes) talk to the emulator through the proxy."""
    import os

    server = FaultyProxy(os.environ["STORAGE_EMULATOR_HOST"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    storage._client.cache_clear()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        storage._client.cache_clear()


def run_export(trained, split_dir, evaluated, registry_uri: str) -> dict:
    return export(
        str(trained),
        str(split_dir),
        evaluated["evaluation_path"],
        evaluated["predictions_path"],
        registry=registry_uri,
        model_name="shapes",
    )


def snapshot(bucket) -> dict[str, str]:
    return {b.name: b.md5_hash for b in bucket.list_blobs()}


def test_an_outage_during_the_upload_is_retried(proxy, bucket, trained, split_dir, evaluated):
    proxy.drop_writes, proxy.busy_writes = 1, 1
    registry_uri = f"gs://{bucket.name}/registry"
    facts = run_export(trained, split_dir, evaluated, registry_uri)
    assert [f[2] for f in proxy.faults] == ["drop", "503"]  # both hit a write, then retried
    assert registry.production_version(registry_uri, "shapes") == facts["version"]
    assert [v["version"] for v in registry.versions(registry_uri, "shapes")] == [facts["version"]]
    names = {b.name for b in bucket.list_blobs()}
    assert f"registry/shapes/{facts['version']}/saved_model/1/saved_model.pb" in names
    assert not [n for n in names if "/.staging/" in n]


def test_no_permission_to_write_fails_clearly_and_changes_nothing(
    proxy, bucket, trained, split_dir, evaluated
):
    bucket.blob("registry/other-model/v1/metadata.json").upload_from_string("{}")
    bucket.blob("registry/other-model/LATEST").upload_from_string("v1\n")
    before = snapshot(bucket)
    proxy.forbid = WRITES
    registry_uri = f"gs://{bucket.name}/registry"
    with pytest.raises(storage.StorageError) as error:
        run_export(trained, split_dir, evaluated, registry_uri)
    message = str(error.value)
    assert message.startswith(f"{registry_uri}/shapes/") and "permission denied" in message
    assert "\n" not in message
    assert snapshot(bucket) == before


def test_the_cli_reports_a_forbidden_registry_in_one_line(proxy, bucket, tmp_path):
    proxy.forbid = {"GET"}
    done = cli("models", "--registry", f"gs://{bucket.name}/registry", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"gs://{bucket.name}/registry" in done.stderr and "Traceback" not in done.stderr
