"""The whole pipeline in containers: kfp.local.DockerRunner on podman's Docker-compatible API.

`make e2e-containers` runs this after `make images-offline`. It starts `podman system
service` on a socket of its own, points DOCKER_HOST at it, runs the pipeline with the small
fast settings of the tests on fresh demo data, checks that the run succeeded and that a
model version was exported, and always stops the service it started (by PID).

What differs from a cluster run, on purpose:
- every step runs in the CPU image, extract and train included: the GPU image cannot be
  built offline, and kfp.local ignores accelerator requests anyway. The image is set on
  this run's tasks only (`make_pipeline(images=...)`); no image is retagged, so a real GPU
  image is never shadowed.
- podman stores images built from an unqualified name as `localhost/NAME`, and kfp.local
  looks images up by exact tag (else it pulls), so an unqualified CPU_IMAGE is prefixed
  with `localhost/`.
- DockerRunner mounts only the pipeline root into the containers (at the same path), so the
  demo data and the registry live under it: ROOT/data, ROOT/registry. The images run as
  uid 1000, so ROOT is given to that uid before the run.

Needs root (rootful podman). Exit status 0 only if the run succeeded and exported a model.
"""

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from shapes_pipeline.helpers import settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGE_UID = 1000  # the images' USER
FAST = {
    "backbone": "MobileNetV3Small",
    "weights": "none",
    "image_size": 32,
    "epochs": 3,
    "patience": 5,
    "min_accuracy": 0.0,  # random weights on 36 images: the check is that export runs
}


def log(message: str) -> None:
    print(f"[e2e-containers] {message}", flush=True)


def local_name(image: str) -> str:
    """The name podman lists an image under: unqualified names get `localhost/`."""
    first = image.split("/", 1)[0]
    qualified = "/" in image and ("." in first or ":" in first or first == "localhost")
    return image if qualified else f"localhost/{image}"


def start_service(socket: Path, env: dict) -> subprocess.Popen:
    socket.unlink(missing_ok=True)
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    log(f"podman system service started, PID {service.pid}, socket {socket}")
    import docker

    deadline = time.monotonic() + 30
    while True:
        if service.poll() is not None:
            raise RuntimeError(f"podman system service exited with status {service.returncode}")
        try:
            client = docker.DockerClient(base_url=f"unix://{socket}", timeout=5)
            client.ping()
            version = client.version().get("Version")
            client.close()
            log(f"Docker API answers (podman {version})")
            return service
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def stop_service(service: subprocess.Popen, socket: Path) -> None:
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
    log(f"podman system service (PID {service.pid}) stopped, status {service.returncode}")
    socket.unlink(missing_ok=True)


def remove_containers(label: str) -> None:
    """Removes this run's containers, should one outlive an interrupted run."""
    found = subprocess.run(
        ["podman", "ps", "--all", "--quiet", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=False,
    )
    ids = found.stdout.split()
    if ids:
        subprocess.run(["podman", "rm", "--force", *ids], capture_output=True, check=False)
        log(f"removed {len(ids)} leftover container(s)")


def chown_tree(path: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, uid, uid)


def run_pipeline(root: Path, per_class: int, label: str) -> dict:
    from kfp import local

    from shapes_pipeline.helpers.demo_data import generate
    from shapes_pipeline.kubeflow import pipeline
    from shapes_pipeline.kubeflow.components import kfp_components
    from shapes_pipeline.runners import local_run, parameters
    from shapes_pipeline.steps import preflight

    image = local_name(kfp_components.CPU_IMAGE)
    found = subprocess.run(["podman", "image", "exists", image], check=False)
    if found.returncode != 0:
        raise SystemExit(f"error: image {image} not found: run `make images-offline` first")
    log(f"every step runs in {image} (extract and train too: no GPU image offline)")

    data, registry = root / "data", root / "registry"
    written = generate(str(data), per_class=per_class)
    log(f"{len(written)} demo images in {data}")
    registry.mkdir()
    chown_tree(root, IMAGE_UID)

    params = {**settings.defaults(), **FAST, "data": str(data), "registry": str(registry)}
    parameters.check(params)
    preflight.check_inputs(params)
    # No network in the steps: data and registry are local, nothing is downloaded.
    key, value = label.split("=")
    runner = local.DockerRunner(network_mode="none", labels={key: value})
    summary = local_run.run_locally(
        params, pipeline_root=root.parent, run_dir=root, runner=runner,
        pipeline=functools.partial(pipeline.make_pipeline, retry=False, images=(image, image)),
    )  # fmt: skip

    if not summary["exported"]:
        raise SystemExit(f"error: no model exported: {summary['gate']['reason']}")
    version = Path(summary["model_uri"])
    metadata = json.loads((version / "metadata.json").read_text())
    latest = (registry / params["model_name"] / "LATEST").read_text().strip()
    if latest != version.name or not (version / "saved_model" / "1" / "saved_model.pb").exists():
        raise SystemExit(f"error: export incomplete: LATEST={latest!r}, version {version}")
    summary["registry_metadata"] = metadata
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    log(
        f"run succeeded in {summary['timings_s']['total']:.1f} s "
        f"(steps: {json.dumps({k: v for k, v in summary['timings_s'].items() if k != 'total'})}); "
        f"test accuracy {summary['test_accuracy']:.3f}"
    )
    log(f"exported version {version.name} (LATEST) in {registry}")
    log(f"summary: {root / 'summary.json'}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO / "runs" / "containers" / stamp,
        help="pipeline root, a new folder (default: runs/containers/<UTC time>)",
    )
    parser.add_argument("--per-class", type=int, default=12, help="demo images per class")
    parser.add_argument("--socket", type=Path, default=Path("/run/shapes-podman.sock"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (rootful podman; the pipeline root is given to uid 1000)")
    root = args.root.resolve()
    root.mkdir(parents=True)  # a new folder: the registry must not have a champion yet

    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / "docker" / "containers.conf"))
    os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
    os.environ["DOCKER_HOST"] = f"unix://{args.socket}"
    # SIGTERM (e.g. from `timeout`) must also run the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    label = f"shapes-e2e-containers={root.name}"
    service = None
    try:
        service = start_service(args.socket, env)
        run_pipeline(root, args.per_class, label)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        remove_containers(label)
        if service is not None:
            stop_service(service, args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
