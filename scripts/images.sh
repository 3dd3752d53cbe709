#!/usr/bin/env bash
# Builds both images, docker/Dockerfile.cpu and docker/Dockerfile.gpu, from the pinned
# bases in their default BASE_IMAGE build args (pulled from Docker Hub), with podman or
# docker: CONTAINER_ENGINE if set, else podman if it is on PATH, else docker (docker
# needs BuildKit, the default since Docker 23, for the build secret). The names are
# pipeline.py's CPU_IMAGE and GPU_IMAGE (SHAPES_IMAGE_REPOSITORY, SHAPES_IMAGE_TAG), so
# the compiled pipeline runs exactly what was built; push them to that repository.
# BASE_IMAGE=... builds both from another base (Debian-like, python3 with venv, useradd).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null; then
        engine=docker
    else
        echo "error: neither podman nor docker is on PATH (or set CONTAINER_ENGINE)" >&2
        exit 2
    fi
fi
if [ "$(basename "$engine")" = docker ]; then
    export DOCKER_BUILDKIT=1
fi

image_names
secret_args
base_args=()
if [ -n "${BASE_IMAGE:-}" ]; then
    base_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

for kind in cpu gpu; do
    if [ "$kind" = cpu ]; then image=$CPU_IMAGE; else image=$GPU_IMAGE; fi
    echo "building $image (docker/Dockerfile.$kind) with $engine"
    "$engine" build "${base_args[@]}" "${SECRET_ARGS[@]}" \
        -t "$image" -f "docker/Dockerfile.$kind" .
done
echo "built $CPU_IMAGE and $GPU_IMAGE; push them with: $engine push IMAGE"
