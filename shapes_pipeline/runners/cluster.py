"""Runs and recurring runs on a Kubeflow Pipelines cluster, through kfp's own client.

Authentication, by the usual means: an explicit token; else the audience-bound service
account token that Kubeflow mounts into pods (``KF_PIPELINES_SA_TOKEN_PATH``, default
``/var/run/secrets/kubeflow/pipelines/token``) where there is one; else none (a
port-forwarded standalone install).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kfp
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from shapes_pipeline.helpers.settings import WEIGHTS
from shapes_pipeline.helpers.step import InfrastructureError, InputError
from shapes_pipeline.runners.parameters import RANGES, option, shown

# A repository may start with a registry host (and port); a tag is Docker's.
IMAGE_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")
IMAGE_TAG = re.compile(r"\w[\w.-]{0,127}")
# The ranges of the fields of KFP's cron format (robfig/cron, seconds first).
CRON_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}


def kfp_cron(expression: str) -> str:
    """KFP's six-field cron (seconds first) for a five- or six-field ``expression``;
    a malformed one is an InputError naming the field, before any request is made."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise InputError(
            f"--cron {expression!r}: expected 5 fields (minute hour day month weekday) "
            "or KFP's 6 (second first)"
        )
    for value, (name, low, high) in zip(fields, CRON_FIELDS, strict=True):
        if not _cron_field_ok(value, name, low, high):
            raise InputError(f"--cron {expression!r}: {name} {value!r} is not valid")
    return " ".join(fields)


def _cron_field_ok(field: str, name: str, low: int, high: int) -> bool:
    """``*``, numbers or names, ranges ``a-b``, steps ``/n`` and lists; ``?`` in the day fields."""
    names = CRON_NAMES.get(name, [])

    def number(text: str) -> int | None:
        if text.lower() in names:
            return names.index(text.lower()) + low
        return int(text) if text.isdigit() else None

    if field == "?":
        return name.startswith("day")
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?", part)
        if not match or match.group(2) == "0":
            return False
        if match.group(1) == "*":
            continue
        ends = [number(v) for v in match.group(1).split("-")]
        if None in ends or not all(low <= v <= high for v in ends) or ends != sorted(ends):
            return False
    return True


def check_host_form(host: str) -> None:
    """``--host`` as a URL of the KFP API: http or https, a host name, a valid port."""
    parts = urllib.parse.urlsplit(host)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in host
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"--host {shown(host)}: not a URL of the KFP API; e.g. http://localhost:8080"
        )


def check_host(host: str, timeout_s: float, token: str | None = None) -> None:
    """The KFP API answers at ``host`` (any HTTP answer will do: kfp's client says more),
    asked once with a timeout before any work: kfp's client would wait for ever on a
    server that never answers, and retry a refused port for half a minute."""
    asked = urllib.request.Request(f"{host.rstrip('/')}/apis/v2beta1/healthz")
    mounted = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH))
    token = token or (mounted.read_text().strip() if mounted.is_file() else None)
    if token:  # as the client will send it
        asked.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(asked, timeout=timeout_s).close()  # noqa: S310 (http(s) only)
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            why = f"no answer in {timeout_s:g} s"
        elif isinstance(reason, ConnectionRefusedError):
            why = "connection refused (is the API running, or its port forwarded?)"
        elif isinstance(reason, socket.gaierror):
            why = f"no such host {urllib.parse.urlsplit(host).hostname}"
        else:
            why = " ".join(str(reason).split())[:120]
        raise InfrastructureError(f"--host {shown(host)}: cannot reach the KFP API: {why}") from e


@contextmanager
def talking_to(host: str) -> Iterator[None]:
    """What the KFP API or the way to it fails with, as one line: a refusal of the
    credentials is the user's to fix (exit 2), the rest is the cluster's (exit 1)."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as e:
        what = f"the KFP API at {shown(host)} answered {e.status} {e.reason}"
        if e.status in (401, 403):
            raise InputError(f"{what}: check --token and --namespace") from e
        raise InfrastructureError(what) from e
    except (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as e:
        why = " ".join(str(e).split())[:120]
        raise InfrastructureError(f"the KFP API at {shown(host)}: {why}") from e


def client(host: str, namespace: str | None, token: str | None) -> kfp.Client:
    credentials = None
    token_path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH)
    if not token and Path(token_path).is_file():
        credentials = ServiceAccountTokenVolumeCredentials(token_path)
    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(
            host=host,
            namespace=namespace or "kubeflow",
            existing_token=token or None,
            credentials=credentials,
        )


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def submit(
    kfp_client: kfp.Client,
    package: str,
    params: dict,
    *,
    experiment: str,
    namespace: str | None,
    run_name: str | None = None,
    service_account: str | None = None,
) -> str:
    """Creates one run of the compiled ``package``; its id."""
    result = kfp_client.create_run_from_pipeline_package(
        package,
        arguments=params,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
    )
    return result.run_id


def wait(kfp_client: kfp.Client, run_id: str, timeout_s: float, poll_s: float) -> str:
    """Follows the run to its end; its final state (``SUCCEEDED``, ``FAILED``, ...)."""
    run = kfp_client.wait_for_run_completion(run_id, timeout=timeout_s, sleep_duration=poll_s)
    return str(run.state)


def schedule(
    kfp_client: kfp.Client,
    package: str,
    params: dict,
    *,
    cron: str,
    experiment: str,
    namespace: str | None,
    name: str,
    service_account: str | None = None,
) -> str:
    """A recurring run: no catch-up after a pause, at most one run at a time; its id."""
    found = kfp_client.create_experiment(experiment, namespace=namespace)
    recurring = kfp_client.create_recurring_run(
        experiment_id=found.experiment_id,
        job_name=name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_package_path=package,
        enabled=True,
        service_account=service_account,
    )
    return recurring.recurring_run_id


def check_compile_options(
    gpus: int, gpu_node_selector: list[str], extract_parallelism: int
) -> dict[str, str]:
    """``--gpus``, ``--extract-parallelism`` and ``--gpu-node-selector`` (an empty one is
    none, as a ConfigMap may leave it) as the node selector to compile with."""
    given = [kv for kv in gpu_node_selector if kv]
    bad = [kv for kv in given if "=" not in kv.strip("=")]
    if bad:
        raise InputError(f"--gpu-node-selector {bad[0]}: expected KEY=VALUE")
    if gpus < 0:
        raise InputError(f"--gpus {gpus}: must be at least 0")
    low, high = RANGES["extract_workers"]
    if not low <= extract_parallelism <= high:
        raise InputError(
            f"--extract-parallelism {extract_parallelism}: must be between {low} and {high}"
        )
    return dict(kv.split("=", 1) for kv in given)


def compile_pipeline(
    output: str,
    gpus: int,
    gpu_node_selector: list[str],
    extract_parallelism: int,
    images: tuple[str, str] | None = None,
) -> None:
    """The spec, its steps in ``images`` (CPU, GPU; None: the components' own)."""
    from kfp import compiler

    from shapes_pipeline.kubeflow.pipeline import make_pipeline

    selector = check_compile_options(gpus, gpu_node_selector, extract_parallelism)
    built = make_pipeline(selector, gpus, extract_parallelism, images=images)
    compiler.Compiler().compile(built, output)


def image_names(repository: str, tag: str) -> tuple[str, str]:
    """The CPU and GPU images of ``repository`` at ``tag``, as ``make images`` names them."""
    if not IMAGE_REPOSITORY.fullmatch(repository):
        raise InputError(f"--image-repository {shown(repository)}: not an image repository")
    if not IMAGE_TAG.fullmatch(tag):
        raise InputError(f"--image-tag {shown(tag)}: not an image tag")
    return f"{repository}-cpu:{tag}", f"{repository}-gpu:{tag}"


@contextmanager
def compiled(
    gpus: int,
    gpu_node_selector: list[str],
    extract_parallelism: int,
    images: tuple[str, str] | None = None,
) -> Iterator[str]:
    """The pipeline compiled for the cluster into a temporary file, which kfp's client
    uploads."""
    with tempfile.TemporaryDirectory() as tmp:
        package = f"{tmp}/pipeline.yaml"
        compile_pipeline(package, gpus, gpu_node_selector, extract_parallelism, images)
        yield package


def check_request(params: dict, cron: str | None) -> str | None:
    """A cluster run's data, registry, backbone cache and weights file (gs:// URIs its pods
    can reach) and KFP's cron."""
    from shapes_pipeline.helpers import registry, storage

    cache = ["backbone_cache"] if params["backbone_cache"] else []  # empty: off
    weights = [] if params["weights"] in WEIGHTS else ["weights"]  # a keyword, not a file
    for name in ["data", "registry", *cache, *weights]:
        if not storage.is_gcs(params[name]):
            raise InputError(
                f"{option(name)} {params[name]}: a cluster's steps need a gs:// URI "
                "(a local path is not in their containers)"
            )
        storage.split_gcs(params[name])
    registry.path(params["registry"], params["model_name"])
    return kfp_cron(cron) if cron else None
