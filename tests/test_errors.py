"""Errors that tell the truth: bad input is exit 2 and only before anything is written;
a full or read-only disk is exit 1 naming the cause (made real with a tmpfs and a
read-only bind mount); an output the user names is checked before any step; the steps a
rerun cannot harm are retried by KFP, export is not."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from faults import full_disk, read_only
from helpers import REPO, cli, cli_here
from kfp import compiler

from shapes_pipeline.kubeflow import pipeline
from shapes_pipeline.steps import preflight


@pytest.mark.parametrize("case", ["no-folder", "a-folder"])
def test_an_output_the_user_names_is_checked_before_any_step(demo_data, tmp_path, case):
    """``--summary`` that cannot be written is refused with the other input, by
    ``--dry-run`` too, not after the run has trained and maybe published."""
    summary = tmp_path / "missing" / "s.json" if case == "no-folder" else tmp_path
    done = cli_here(
        "run", "--dry-run", "--data", str(demo_data), "--registry", str(tmp_path / "reg"),
        "--summary", str(summary), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --summary {summary}: ")
    assert not (tmp_path / "reg").exists()


@pytest.mark.parametrize(
    ("fault", "cause"),
    [(full_disk, "No space left on device"), (read_only, "Read-only file system")],
    ids=["full-disk", "read-only"],
)
def test_a_disk_that_fails_is_exit_1_naming_the_cause(tmp_path, fault, cause):
    """Writing into a full tmpfs or a read-only mount: one line with the system's own
    words, exit 1 (no other input would fix it), no traceback."""
    with fault(tmp_path / "disk") as disk:
        done = cli("generate", "--out", str(disk / "demo"), "--per-class", "3", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and cause in line and "Traceback" not in done.stderr


def test_a_path_the_user_can_fix_is_still_bad_input(tmp_path):
    """A name that is a file where a folder goes: exit 2, as before."""
    (tmp_path / "file").write_text("not a folder")
    done = cli("generate", "--out", str(tmp_path / "file" / "demo"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Not a directory" in line


def test_every_step_but_export_is_retried_with_backoff(tmp_path):
    """Read from the compiled spec: a rerun of split, plan, extract, train or evaluate
    only writes its own outputs again; export publishes and must not run twice."""
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline.shapes_pipeline, str(path))
    doc = next(yaml.safe_load_all(path.read_text()))
    policies = {}

    def walk(dag: dict) -> None:
        for name, task in dag["tasks"].items():
            component = doc["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"])
            else:
                policies[name] = task.get("retryPolicy")

    walk(doc["root"]["dag"])
    assert policies.pop("export") is None
    assert set(policies) == {"split", "plan", "extract", "train", "evaluate"}
    for name, policy in policies.items():
        assert policy["maxRetryCount"] == 2 and policy["backoffDuration"] == "30s", name


def test_an_output_file_that_exists_and_can_be_written_is_taken(tmp_path):
    """A rerun writes its summary over the last one: that is no mistake."""
    existing = tmp_path / "summary.json"
    existing.write_text("{}")
    assert preflight.check_output(str(existing), "--summary") is None
    assert preflight.check_output(str(tmp_path / "new.json"), "--summary") is None


AS_USER = """
import json, os, sys
from shapes_pipeline.steps import preflight
tmp = sys.argv[1]
locked, file_locked = os.path.join(tmp, "locked"), os.path.join(tmp, "open", "s.json")
os.mkdir(locked)
os.chmod(locked, 0o555)
os.mkdir(os.path.dirname(file_locked))
open(file_locked, "w").close()
os.chmod(file_locked, 0o444)
out = {}
for path in (os.path.join(locked, "s.json"), file_locked, os.path.join(tmp, "open", "new.json")):
    try:
        out[path] = preflight.check_output(path, "--summary")
    except preflight.InputError as e:
        out[path] = str(e)
print(json.dumps(out))
"""


def test_an_output_this_user_cannot_write_is_refused(tmp_path):
    """As a user without write permission (root gives up the capabilities that override
    it): a read-only folder or a read-only file is refused naming it; a writable folder is not."""
    preflight.check_output(str(tmp_path / "s.json"), "--summary")  # mutmut: this reaches it
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    done = subprocess.run(
        [*(prefix if os.geteuid() == 0 else []), sys.executable, "-c", AS_USER, str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    refusal = "cannot be written (permission denied); name another file"
    locked, file_locked = tmp_path / "locked" / "s.json", tmp_path / "open" / "s.json"
    assert found[str(locked)] == f"--summary {locked}: {refusal}"
    assert found[str(file_locked)] == f"--summary {file_locked}: {refusal}"
    assert found[str(tmp_path / "open" / "new.json")] is None


PLANTED = """
import sys
from shapes_pipeline.helpers import registry
from shapes_pipeline.helpers.step import InfrastructureError
from shapes_pipeline.runners.cli import main

def planted(*args, **kwargs):
    raise {error}

registry.listing = planted
main(["models", "--registry", sys.argv[1]])
"""


@pytest.mark.parametrize(
    "error, code, line",
    [
        ("KeyError('version')", 1, "error: internal error (KeyError: 'version'); the traceback"),
        ("InfrastructureError('gs://b/r: the storage service failed (503)')", 1,
         "error: gs://b/r: the storage service failed (503)"),
        ("ValueError('a broken invariant')", 1, "error: internal error (ValueError: a broken"),
    ],
)  # fmt: skip
def test_a_bug_or_an_outage_is_exit_1_in_one_line(tmp_path, error, code, line):
    """Neither is the user's input: exit 1, not 2. A bug's traceback goes to a log of its
    own, named on the line; the terminal shows none."""
    done = subprocess.run(
        [sys.executable, "-c", PLANTED.format(error=error), str(tmp_path / "reg")],
        capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    (shown,) = done.stderr.strip().splitlines()
    assert shown.startswith(line) and "Traceback" not in done.stderr
    logs = list(tmp_path.glob("shapes-pipeline-models-*.log"))
    if "internal error" in line:
        (log,) = logs
        assert str(log) in shown and "Traceback" in log.read_text()
        assert "planted" in log.read_text()
    else:
        assert not logs


def test_an_outage_left_after_the_clients_retries_is_infrastructure_not_input():
    """The storage service's 5xx or 429, or no connection: a later run may succeed and no
    other input helps, so it is not reported as bad input. A refusal (403, 404, 400) is."""
    import requests
    from google.api_core import exceptions as gexc

    from shapes_pipeline.helpers import storage
    from shapes_pipeline.helpers.step import InfrastructureError

    outages = [gexc.ServiceUnavailable("down"), gexc.InternalServerError("oops"),
               gexc.TooManyRequests("slow down"), requests.ConnectionError("refused")]  # fmt: skip
    for error in outages:
        failed = pytest.raises(InfrastructureError, match="^gs://b/r: the storage service failed")
        with failed, storage._reporting("gs://b/r"):
            raise error
    for error in [gexc.NotFound("gone"), gexc.BadRequest("bad"), gexc.Forbidden("no")]:
        with (
            pytest.raises(storage.StorageError, match="^gs://b/r: "),
            storage._reporting("gs://b/r"),
        ):
            raise error
