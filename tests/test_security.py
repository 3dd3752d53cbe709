"""Names and URIs that could leave their bucket prefix or registry folder are refused;
object names that would escape the folder they are downloaded to are refused."""

import pytest
from helpers import FAST, cli_here

from shapes_pipeline.helpers import registry, storage


@pytest.mark.parametrize(
    "uri",
    [
        "gs://shapes-models/registry/../other-team",
        "gs://shapes-models/./registry",
        "gs://shapes-models/a//b",
        "gs://shapes-models/registry\n/x",
        "gs://Not_A_Bucket!/x",
        "gs://../x",
    ],
)
def test_odd_gcs_uris_are_refused(uri):
    with pytest.raises(storage.StorageError):
        storage.split_gcs(uri)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 101, "tab\tname"])
def test_model_and_version_names_are_plain_segments(name, tmp_path):
    with pytest.raises(registry.InputError, match="use letters, digits"):
        registry.path(str(tmp_path), name)
    with pytest.raises(registry.InputError):
        registry.path(str(tmp_path), "shapes", name)


def test_a_model_name_leaving_the_registry_is_refused_before_anything_runs(demo_data, tmp_path):
    done = cli_here(
        "run", "--data", str(demo_data), "--registry", "reg", "--model-name", "../../outside",
        *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and "name '../../outside'" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reg").exists()


def test_a_tampered_latest_cannot_point_outside_the_registry(tmp_path):
    (tmp_path / "reg" / "shapes").mkdir(parents=True)
    (tmp_path / "reg" / "shapes" / "LATEST").write_text("../../../etc\n")
    with pytest.raises(registry.RegistryError, match="names '../../../etc', which is not a"):
        registry.resolve(str(tmp_path / "reg"), "shapes")


def test_object_names_escaping_the_download_folder_are_refused(strict_bucket, tmp_path):
    bucket = strict_bucket  # gcp-storage-emulator refuses such names; GCS and this one do not
    bucket.blob("data/circles/ok.png").upload_from_string(b"x")
    bucket.blob("data/../../escaped.png").upload_from_string(b"x")
    with pytest.raises(storage.StorageError, match="escapes its prefix"):
        storage.download_tree(f"gs://{bucket.name}/data", str(tmp_path / "down"))
    assert not list(tmp_path.parent.glob("escaped.png"))
