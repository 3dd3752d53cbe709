# Shared by scripts/images.sh and scripts/images-offline.sh (sourced, not run).
# shellcheck shell=bash

# The repository root; every script runs from it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

# The Python that has this project installed (make's .venv); it names the images.
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

# The image names, from the one place that decides them: pipeline.py's CPU_IMAGE and
# GPU_IMAGE (SHAPES_IMAGE_REPOSITORY / SHAPES_IMAGE_TAG, read from the environment).
image_names() {
    if [ ! -x "$PYTHON" ]; then
        echo "error: $PYTHON not found: run 'make' setup first (or set PYTHON)" >&2
        exit 2
    fi
    read -r CPU_IMAGE GPU_IMAGE < <("$PYTHON" -c 'from shapes_pipeline.kubeflow.components import kfp_components as k; print(k.CPU_IMAGE, k.GPU_IMAGE)')
    export CPU_IMAGE GPU_IMAGE
}

# pip inside a build trusts the host's CA bundle when PIP_CERT or SSL_CERT_FILE names one:
# it goes in as build secret `ca` (mounted for one RUN, never stored in the image).
secret_args() {
    # shellcheck disable=SC2034  # used by the scripts that source this file
    SECRET_ARGS=()
    local ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
    if [ -n "$ca" ]; then
        if [ ! -r "$ca" ]; then
            echo "error: CA bundle $ca (PIP_CERT / SSL_CERT_FILE) is not readable" >&2
            exit 2
        fi
        # shellcheck disable=SC2034
        SECRET_ARGS=(--secret "id=ca,src=$ca")
    fi
}
