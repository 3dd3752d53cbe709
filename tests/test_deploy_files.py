"""Manifests through kustomize and kubernetes-validate --strict; Dockerfiles through hadolint."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    "overlay", sorted(p.parent.name for p in REPO.glob("manifests/*/kustomization.yaml"))
)
def test_manifests_build_and_validate_strictly(overlay):
    built = subprocess.run(
        [_tool("kubectl"), "kustomize", str(REPO / "manifests" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "kind: Namespace" in built.stdout
    done = validate(built.stdout)
    assert done.returncode == 0, done.stdout + done.stderr


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
