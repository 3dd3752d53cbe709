"""Storage against gcp-storage-emulator on 127.0.0.1 with the real google-cloud-storage client."""

import pytest
from helpers import upload_folder

from shapes_pipeline.helpers import storage
from shapes_pipeline.helpers.dataset import DataError, read_manifest
from shapes_pipeline.steps.split import split_dataset


def test_upload_download_roundtrip_and_no_overwrite(bucket, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "top.txt").write_text("hello")
    uri = f"gs://{bucket.name}/models/v1"
    storage.publish_tree(str(src), uri, marker="top.txt")
    assert sorted(b.name for b in bucket.list_blobs()) == [
        "models/v1/a/b/x.bin",
        "models/v1/top.txt",
    ]

    back = tmp_path / "back"
    storage.download_tree(uri, str(back))
    assert (back / "a" / "b" / "x.bin").read_bytes() == b"\x00\x01" * 1000

    (src / "top.txt").write_text("changed")
    with pytest.raises(storage.StorageConflict, match=f"{uri}: already exists"):
        storage.publish_tree(str(src), uri, marker="top.txt")
    assert bucket.blob("models/v1/top.txt").download_as_text() == "hello"


def test_local_publish_refuses_existing_version(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("1")
    storage.publish_tree(str(src), str(tmp_path / "reg" / "v1"), marker="f")
    (src / "f").write_text("2")
    with pytest.raises(storage.StorageConflict, match="already exists"):
        storage.publish_tree(str(src), str(tmp_path / "reg" / "v1"), marker="f")
    assert (tmp_path / "reg" / "v1" / "f").read_text() == "1"
    assert [p.name for p in (tmp_path / "reg").iterdir()] == ["v1"]


def test_missing_bucket_and_prefix(gcs_emulator, bucket):
    with pytest.raises(storage.StorageError, match="no-such-bucket-xyz.*does not exist"):
        storage.check_bucket("gs://no-such-bucket-xyz/models")
    with pytest.raises(storage.StorageError, match=f"gs://{bucket.name}/nothing"):
        storage.check_exists(f"gs://{bucket.name}/nothing")


def test_split_from_gcs_matches_local_split(bucket, demo_data, split_dir, tmp_path):
    uri = upload_folder(bucket, demo_data, "raw/shapes")
    facts = split_dataset(
        uri + "/", str(tmp_path / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
    )
    assert facts["source"] == uri + "/"
    assert read_manifest(tmp_path / "ds") == read_manifest(split_dir)


def test_split_from_gcs_names_missing_bucket_and_bad_file(bucket, demo_data, tmp_path):
    with pytest.raises(DataError, match="gs://no-such-bucket-xyz/raw"):
        split_dataset(
            "gs://no-such-bucket-xyz/raw",
            str(tmp_path / "a"),
            seed=230,
            train_fraction=0.8,
            val_fraction=0.1,
        )
    uri = upload_folder(bucket, demo_data, "raw")
    bucket.blob("raw/squares/broken.png").upload_from_string(b"nope")
    with pytest.raises(DataError, match=f"{uri}/squares/broken.png: not a readable image"):
        split_dataset(uri, str(tmp_path / "b"), seed=230, train_fraction=0.8, val_fraction=0.1)
    assert not (tmp_path / "b").exists()


def test_missing_credentials_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    storage._client.cache_clear()
    try:
        with pytest.raises(
            storage.StorageError, match="gs://some-bucket/data: no Google Cloud credentials"
        ):
            storage.check_bucket("gs://some-bucket/data")
    finally:
        storage._client.cache_clear()
