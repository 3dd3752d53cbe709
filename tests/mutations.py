"""The bugs `make mutation` plants, one at a time, in a copy of the code: each is a way the
product could be wrong while still running, and each must make one of its tests fail.

``old`` must occur exactly once in ``file`` (the runner refuses a stale entry). ``repeat``
runs the tests several times, for protections against races: the race tests force the
interleaving, so they must kill the mutation every time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    repeat: int = 1


EXPORT = "tests/test_export.py"

MUTATIONS = [
    # ------------------------------------------------ registry: races and publishing
    Mutation(
        "local LATEST swapped without the lock",
        "components/storage.py",
        "        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes\n",
        "",
        (f"{EXPORT}::test_two_gates_racing_for_production[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS LATEST written without its generation precondition",
        "components/storage.py",
        "bucket.blob(name).upload_from_string(text, if_generation_match=generation)",
        "bucket.blob(name).upload_from_string(text)",
        (f"{EXPORT}::test_two_gates_racing_for_production[gcs]",),
        repeat=5,
    ),
    Mutation(
        "local version published over an existing one",
        "components/storage.py",
        "os.rename(staging, target)  # fails where",
        "shutil.copytree(staging, target, dirs_exist_ok=True)  # fails where",
        (f"{EXPORT}::test_two_writers_racing_for_the_same_version_name[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS version marker written without its generation precondition",
        "components/storage.py",
        """        bucket.blob(f"{prefix}/{marker}").upload_from_filename(
            str(root / marker), if_generation_match=0
        )""",
        """        bucket.blob(f"{prefix}/{marker}").upload_from_filename(str(root / marker))""",
        (f"{EXPORT}::test_two_writers_racing_for_the_same_version_name[gcs]",),
        repeat=5,
    ),
    # ------------------------------------------------ export's verification
    Mutation(
        "verification compares each image with another image's row",
        "components/verify.py",
        "for path, row in zip(test, served, strict=True):",
        "for path, row in zip(test[1:] + test[:1], served, strict=True):",
        (f"{EXPORT}::test_export_publishes_a_verified_servable_version",),
    ),
    Mutation(
        "verification runs in the exporting process",
        "components/export.py",
        "verification = verify_in_fresh_process(tmp, dataset_dir, predictions_path)",
        "verification = __import__('components.verify').verify.verify("
        "tmp, dataset_dir, predictions_path)",
        (f"{EXPORT}::test_verification_runs_on_the_files_in_a_fresh_process",),
    ),
    Mutation(
        "verification checks the original folder, not the copy to publish",
        "components/export.py",
        "verification = verify_in_fresh_process(tmp, dataset_dir, predictions_path)",
        "verification = verify_in_fresh_process(model_dir, dataset_dir, predictions_path)",
        (f"{EXPORT}::test_verification_checks_the_staged_copy_not_the_original",),
    ),
]
