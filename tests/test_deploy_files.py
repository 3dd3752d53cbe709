"""Manifests through kustomize and kubernetes-validate --strict, and each overlay's CronJob
run against a recording KFP API; Dockerfiles through hadolint."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp_api import API, cluster_cli, only

from shapes_pipeline.helpers import settings
from shapes_pipeline.runners import parameters

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (it is in the test extras)"
    return path


def validate(manifest: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "-"],
        input=manifest,
        capture_output=True,
        text=True,
    )


KUSTOMIZATIONS = sorted(
    str(p.parent.relative_to(REPO / "manifests"))
    for p in REPO.glob("manifests/**/kustomization.yaml")
)
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]


def kustomize(path: str) -> str:
    return subprocess.run(
        [_tool("kubectl"), "kustomize", str(REPO / "manifests" / path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_manifests_build_and_validate_strictly(path):
    built = kustomize(path)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(built)}
    assert kinds == {"Namespace", "ServiceAccount", "ConfigMap", "CronJob"}
    done = validate(built)
    assert done.returncode == 0, done.stdout + done.stderr


def test_there_is_an_overlay_per_cluster_kind():
    assert OVERLAYS == ["overlays/gke", "overlays/kind", "overlays/minikube"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjob_submits_the_configured_pipeline(overlay, api, tmp_path):
    """The CronJob's command, its ``$(VAR)``s expanded from the ConfigMap as the kubelet
    does, creates a run of the configured pipeline in the project's images."""
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(kustomize(overlay))}
    config = docs["ConfigMap"]["data"]
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    repository, tag = config["SHAPES_IMAGE_REPOSITORY"], config["SHAPES_IMAGE_TAG"]
    assert container["image"] == f"{repository}-cpu:{tag}"  # the image the pipeline names
    assert container["envFrom"] == [
        {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}}
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    assert docs["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["command"] == ["shapes-pipeline"]

    token = tmp_path / "token"
    token.write_text("projected-token")
    env = {**config, "KFP_HOST": api.url}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    done = cluster_cli(
        *args,
        env={k: config[k] for k in ("SHAPES_IMAGE_REPOSITORY", "SHAPES_IMAGE_TAG")}
        | {"KF_PIPELINES_SA_TOKEN_PATH": str(token)},
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run = only(api, "POST", f"{API}/runs")["body"]
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data"] == config["DATA"]
    assert parameters["registry"] == config["REGISTRY"]
    assert parameters["epochs"] == int(config["EPOCHS"])
    assert parameters["min_accuracy"] == float(config["MIN_ACCURACY"])
    # With a platform spec (GPU toleration, node selector) kfp sends both documents:
    pipeline = run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"])
    spec = pipeline["deploymentSpec"]["executors"]
    train = spec["exec-train"]["container"]
    assert train["image"] == f"{repository}-gpu:{tag}"
    assert spec["exec-split"]["container"]["image"] == f"{repository}-cpu:{tag}"
    gpus = int(config["GPUS"])
    assert int(train.get("resources", {}).get("accelerator", {}).get("count", 0)) == gpus
    kubernetes = run["pipeline_spec"].get("platform_spec", {}).get("platforms", {})
    selector = kubernetes.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    wanted = (
        dict([config["GPU_NODE_SELECTOR"].split("=", 1)]) if config["GPU_NODE_SELECTOR"] else {}
    )
    assert selector.get("exec-train", {}).get("nodeSelector", {}).get("labels", {}) == wanted
    assert {r["headers"].get("authorization") for r in api.requests} == {"Bearer projected-token"}


def test_gke_uses_workload_identity_and_no_key_file():
    built = kustomize("overlays/gke")
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(built)}
    annotations = docs["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in built and "Secret" not in docs


def test_the_validator_rejects_an_unknown_field():
    done = validate("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  lables: {}\n")
    assert done.returncode != 0


@pytest.mark.parametrize(
    "dockerfile", sorted(REPO.glob("docker/Dockerfile.*")), ids=lambda p: p.name
)
def test_dockerfiles_pass_hadolint(dockerfile):
    done = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split() for line in dockerfile.read_text().splitlines() if line[:1].isalpha()]
    assert "ENTRYPOINT" not in [line[0] for line in lines]
    users = [line[1] for line in lines if line[0] == "USER"]
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("script", sorted(REPO.glob("scripts/*.sh")), ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script):
    done = subprocess.run(
        [_tool("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR", str(script)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_local_cluster_script_refuses_an_unknown_cluster_kind():
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "local-cluster.sh"), "k3s", "up"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "usage:" in done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_holds_valid_pipeline_parameters_under_their_own_options(overlay):
    """Each ConfigMap key named after a pipeline parameter (its name in capitals) reaches
    the CronJob as that parameter's option, and its value is one the table's type and the
    checks accept: a parameter renamed or retyped in the table fails here, not at 2 a.m."""
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(kustomize(overlay))}
    config = docs["ConfigMap"]["data"]
    (container,) = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    named = {
        key: settings.BY_NAME[key.lower()] for key in config if key.lower() in settings.BY_NAME
    }
    assert {"DATA", "REGISTRY", "EPOCHS", "MIN_ACCURACY"} <= set(named)
    values = settings.defaults()
    for key, p in named.items():
        assert f"{p.option}=$({key})" in container["args"], key
        text = config[key]
        values[p.name] = {bool: lambda t: t == "true", str: str}.get(p.kind, p.kind)(text)
        assert p.kind is not bool or text in ("true", "false"), key
    parameters.check(values)
