"""Storage faults between the real google-cloud-storage client and gcp-storage-emulator: a
proxy on 127.0.0.1 forwards every request and can drop connections (the service going
away mid-upload), answer 503 (overloaded) or 403 (no permission). Transient faults are
retried by the client's own policy; persistent ones end in one line naming the URI, and
what the registry held before is left exactly as it was."""

import pytest
from gcs_proxy import WRITES, proxied
from helpers import cli

from shapes_pipeline.helpers import registry, storage
from shapes_pipeline.steps.export import export

pytestmark = pytest.mark.slow  # trains, exports or starts a browser


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
    """The storage helper (and child processes) talk to the emulator through the proxy."""
    yield from proxied(monkeypatch)


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
