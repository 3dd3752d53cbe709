"""A recording Kubeflow Pipelines API server on 127.0.0.1, for submit and schedule, and the
command line as a cluster's pod runs it."""

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


class KfpApi(ThreadingHTTPServer):
    """Records every request; answers with what the KFP API server would."""

    def __init__(self, run_states: list[str]):
        self.requests: list[dict] = []
        self.run_states = run_states
        super().__init__(("127.0.0.1", 0), Handler)

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{API}/experiments"):
            return 200, {}  # no experiment of that name yet
        if (method, path) == ("POST", f"{API}/experiments"):
            body = self.requests[-1]["body"]
            return 200, {"experiment_id": "exp-1", "display_name": body["display_name"]}
        if (method, path) == ("POST", f"{API}/runs"):
            return 200, {"run_id": "run-1", "state": "PENDING"}
        if (method, path) == ("GET", f"{API}/runs/run-1"):
            return 200, {"run_id": "run-1", "state": self.run_states.pop(0)}
        if (method, path) == ("POST", f"{API}/recurringruns"):
            return 200, {"recurring_run_id": "rr-1", "status": "ENABLED"}
        return 404, {"error": f"no route {method} {path}"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: KfpApi

    def _handle(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(raw) if raw else None,
            }
        )
        status, answer = self.server.answer(self.command, url.path)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle

    def log_message(self, *args) -> None:
        pass


def cluster_cli(*args: str, env: dict | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    """``shapes-pipeline ARGS`` with a bare environment: only what the CronJob's pod has."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "127.0.0.1"}
    if "PYTHONPATH" in os.environ:  # make mutation: the code under test is a copy
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "shapes_pipeline.runners.cli", *args],
        env={**base, **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def only(api: "KfpApi", method: str, path: str) -> dict:
    """The one request of ``method`` to ``path`` the API server recorded."""
    (found,) = [r for r in api.requests if (r["method"], r["path"]) == (method, path)]
    return found
