"""`submit` and `schedule` against a recording HTTP server on 127.0.0.1 that answers as the
Kubeflow Pipelines v2beta1 REST API does: the requests checked are the ones kfp's own
client sends."""

import json
import socket
import threading
from pathlib import Path

import pytest
from kfp_api import API, KfpApi, cluster_cli, only

from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners.cluster import kfp_cron

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["--data", "gs://shapes-data/raw", "--registry", "gs://shapes-models/registry"]


def test_submit_creates_a_run_of_the_compiled_pipeline(api, tmp_path):
    done = cluster_cli(
        "submit", "--host", api.url, "--token", "secret-token", "--experiment", "nightly",
        "--epochs", "50", *PARAMS, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"run run-1: {api.url}/#/runs/details/run-1" in done.stdout
    assert {r["headers"].get("authorization") for r in api.requests} == {"Bearer secret-token"}
    lookup = only(api, "GET", f"{API}/experiments")["query"]["filter"][0]
    assert json.loads(lookup)["predicates"][0]["stringValue"] == "nightly"
    assert only(api, "POST", f"{API}/experiments")["body"]["display_name"] == "nightly"
    run = only(api, "POST", f"{API}/runs")["body"]
    assert run["experiment_id"] == "exp-1"
    assert (
        run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "shapes-transfer-learning"
    )
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data"] == "gs://shapes-data/raw"
    assert parameters["registry"] == "gs://shapes-models/registry"
    assert parameters["epochs"] == 50
    assert parameters["backbone"] == "InceptionResNetV2"  # every parameter, defaults too
    assert "secret-token" not in done.stdout + done.stderr
    assert done.stderr == ""  # no warnings, no noise


@pytest.mark.parametrize(
    ("api", "code", "state"),
    [(["RUNNING", "SUCCEEDED"], 0, "SUCCEEDED"), (["RUNNING", "FAILED"], 1, "FAILED")],
    indirect=["api"],
)
def test_submit_wait_follows_the_run_to_its_end(api, code, state, tmp_path):
    token = tmp_path / "token"
    token.write_text("mounted-sa-token")
    done = cluster_cli(
        "submit", "--host", api.url, "--wait", "--poll-seconds", "0.05", *PARAMS,
        env={"KF_PIPELINES_SA_TOKEN_PATH": str(token)}, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert done.stdout.strip().endswith(f"run run-1: {state}")
    polls = [r for r in api.requests if r["path"] == f"{API}/runs/run-1"]
    assert len(polls) == 2
    # The service account token mounted in the pod, as kfp reads it:
    assert {r["headers"].get("authorization") for r in api.requests} == {"Bearer mounted-sa-token"}


def test_schedule_creates_a_recurring_run_without_catch_up_one_at_a_time(api, tmp_path):
    done = cluster_cli(
        "schedule", "--host", api.url, "--cron", "30 2 * * mon-fri", "--namespace", "team-a",
        *PARAMS, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recurring run rr-1" in done.stdout
    experiment = only(api, "POST", f"{API}/experiments")["body"]
    assert experiment == {"display_name": "shapes-transfer-learning", "namespace": "team-a"}
    recurring = only(api, "POST", f"{API}/recurringruns")["body"]
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * mon-fri"}}
    assert recurring["no_catchup"] is True
    assert int(recurring["max_concurrency"]) == 1
    assert recurring["mode"] == "ENABLE"
    assert recurring["experiment_id"] == "exp-1"
    assert recurring["display_name"] == "shapes-transfer-learning-retraining"
    assert (
        recurring["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"]
        == "shapes-transfer-learning"
    )
    assert recurring["runtime_config"]["parameters"]["data"] == "gs://shapes-data/raw"
    assert "authorization" not in {h for r in api.requests for h in r["headers"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedule", "--cron", "0 25 * * *", *PARAMS], "--cron '0 25 * * *': hour '25'"),
        (["schedule", "--cron", "every night", *PARAMS], "expected 5 fields"),
        (["submit", "--data", "raw", "--registry", "gs://b/r"], "--data raw: a cluster's steps"),
        (["submit", "--backbone-cache", "cache", *PARAMS], "--backbone-cache cache: a cluster's"),
        (["submit", "--epochs", "0", *PARAMS], "--epochs 0: must be between 1 and 100000"),
    ],
)
def test_bad_requests_are_refused_before_any_request(api, args, message, tmp_path):
    command, *rest = args
    done = cluster_cli(command, "--host", api.url, *rest, tmp_path=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert api.requests == []


def test_gpu_node_selector_reaches_the_submitted_spec(api, tmp_path):
    done = cluster_cli(
        "submit", "--host", api.url, "--gpu-node-selector",
        "cloud.google.com/gke-accelerator=nvidia-l4", *PARAMS, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = only(api, "POST", f"{API}/runs")["body"]["pipeline_spec"]
    train = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert train["exec-train"]["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    }


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
        ("*/15 * * JAN,jul sun", "0 */15 * * JAN,jul sun"),
    ],
)
def test_cron_expressions_become_kfps_six_fields(expression, expected):
    assert kfp_cron(expression) == expected


@pytest.mark.parametrize("expression", ["0 3 * * 8", "5-1 * * * *", "0 */0 * * *", "? * * * *"])
def test_malformed_cron_fields_are_named(expression):
    with pytest.raises(InputError, match="is not valid"):
        kfp_cron(expression)


# ------------------------------------------- a cluster that cannot be reached, for real


def one_error_line(done, code: int, *fragments: str, started: bool = False) -> None:
    """Exit ``code``, one line on stderr holding every fragment, and nothing on stdout
    unless the request was ``started`` (kfp's client names the experiment it used)."""
    assert done.returncode == code, done.stderr
    assert started or done.stdout == "", done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr) <= 301, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_port_that_refuses_is_named_as_such(command, tmp_path):
    """A real closed port on 127.0.0.1 (bound, then closed): exit 1 at once, not a
    half-minute of kfp's retries ending in urllib3's traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cron = ["--cron", "0 3 * * *"] if command == "schedule" else []
    done = cluster_cli(command, "--host", f"http://127.0.0.1:{port}", *cron, *PARAMS,
                       tmp_path=tmp_path)  # fmt: skip
    one_error_line(done, 1, f"127.0.0.1:{port}", "connection refused")


def test_a_server_that_never_answers_times_out_in_one_line(tmp_path):
    """A real listening socket that accepts and never answers: kfp's client has no
    timeout and would wait for ever; --connect-timeout bounds it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        host = f"http://127.0.0.1:{server.getsockname()[1]}"
        done = cluster_cli("submit", "--host", host, "--connect-timeout", "0.5", *PARAMS,
                           tmp_path=tmp_path)  # fmt: skip
    one_error_line(done, 1, host, "no answer in 0.5 s")


@pytest.mark.parametrize(
    "host", ["localhost:8080", "htp:/x", "http://", "http://h:99999", "http://a b", "ftp://h", ""]
)
def test_a_host_that_is_not_a_url_is_refused_before_any_request(host, tmp_path):
    done = cluster_cli("submit", "--host", host, *PARAMS, tmp_path=tmp_path)
    one_error_line(done, 2, "--host", "not a URL of the KFP API")


class Refusing(KfpApi):
    """Answers the health check, then refuses to create the run with ``status``."""

    def __init__(self, status: int):
        self.status = status
        super().__init__([])

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        if (method, path) == ("POST", f"{API}/runs"):
            return self.status, {"error": "refused", "code": 7}
        return super().answer(method, path)


@pytest.mark.parametrize(("status", "code", "said"), [(403, 2, "check --token"), (500, 1, "500")])
def test_an_api_refusal_is_one_line_the_users_or_the_clusters(status, code, said, tmp_path):
    server = Refusing(status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = cluster_cli("submit", "--host", server.url, *PARAMS, tmp_path=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    one_error_line(done, code, f"answered {status}", said, started=True)
