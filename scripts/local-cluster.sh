#!/usr/bin/env bash
# A local Kubeflow Pipelines cluster on kind or minikube (make kind-up / minikube-up):
# create the cluster, install KFP standalone at a pinned version, load the project's
# images (no registry needed), apply the project's overlay, and port-forward the KFP UI
# and API. `down` stops the port-forwards and deletes the cluster.
#
#   scripts/local-cluster.sh kind|minikube up|down
#
# Settings (environment): CLUSTER (name, default shapes), PIPELINE_VERSION (KFP, 2.14.3),
# SHAPES_IMAGE_REPOSITORY / SHAPES_IMAGE_TAG (the images `make images` built, the same
# setting the pipeline compiles in), UI_PORT (8080), API_PORT (8888), MINIKUBE_FLAGS.
set -euo pipefail

usage() {
  echo "usage: $0 kind|minikube up|down" >&2
  exit 2
}
[[ $# -eq 2 ]] || usage
tool=$1
action=$2
[[ $tool == kind || $tool == minikube ]] || usage
[[ $action == up || $action == down ]] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
cluster=${CLUSTER:-shapes}
pipeline_version=${PIPELINE_VERSION:-2.14.3}
repository=${SHAPES_IMAGE_REPOSITORY:-shapes-pipeline}
tag=${SHAPES_IMAGE_TAG:-0.1.0}
ui_port=${UI_PORT:-8080}
api_port=${API_PORT:-8888}
# minikube's docker driver passes the host's GPUs in and enables the NVIDIA device plugin.
minikube_flags=${MINIKUBE_FLAGS:---driver=docker --gpus=all --cpus=4 --memory=12g}
state="$root/.cluster/$tool-$cluster" # port-forward PIDs and logs
kfp_manifests="github.com/kubeflow/pipelines/manifests/kustomize"

need() {
  command -v "$1" >/dev/null || {
    echo "error: $1 is not installed; $2" >&2
    exit 1
  }
}

engine() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null; then
    echo podman
  else
    echo "error: neither a running docker nor podman to take the images from" >&2
    exit 1
  fi
}

stop_port_forwards() {
  local pid_file
  for pid_file in "$state"/*.pid; do
    [[ -e $pid_file ]] || continue
    kill "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
  done
}

up() {
  need kubectl "see https://kubernetes.io/docs/tasks/tools/"
  need "$tool" "see the README, 'A local cluster'"
  case $tool in
    kind) kind create cluster --name "$cluster" --wait 120s ;;
    minikube)
      local flags
      read -r -a flags <<<"$minikube_flags"
      minikube start --profile "$cluster" "${flags[@]}"
      ;;
  esac

  echo "loading images $repository-{cpu,gpu}:$tag (built by make images)"
  local image archive
  archive=$(mktemp --suffix .tar)
  trap 'rm -f "$archive"' RETURN
  for image in "$repository-cpu:$tag" "$repository-gpu:$tag"; do
    "$(engine)" save -o "$archive" "$image"
    case $tool in
      kind) kind load image-archive "$archive" --name "$cluster" ;;
      minikube) minikube image load "$archive" --profile "$cluster" ;;
    esac
  done

  echo "installing Kubeflow Pipelines $pipeline_version (standalone)"
  kubectl apply -k "$kfp_manifests/cluster-scoped-resources?ref=$pipeline_version"
  kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  kubectl apply -k "$kfp_manifests/env/platform-agnostic?ref=$pipeline_version"
  kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout=900s

  kubectl apply -k "$root/manifests/overlays/$tool"

  mkdir -p "$state"
  stop_port_forwards
  kubectl -n kubeflow port-forward svc/ml-pipeline-ui "$ui_port:80" >"$state/ui.log" 2>&1 &
  echo $! >"$state/ui.pid"
  kubectl -n kubeflow port-forward svc/ml-pipeline "$api_port:8888" >"$state/api.log" 2>&1 &
  echo $! >"$state/api.pid"
  echo "KFP UI:  http://localhost:$ui_port"
  echo "KFP API: http://localhost:$api_port"
  echo "submit:  shapes-pipeline submit --host http://localhost:$api_port --data gs://... --registry gs://..."
}

down() {
  stop_port_forwards
  case $tool in
    kind) kind delete cluster --name "$cluster" ;;
    minikube) minikube delete --profile "$cluster" ;;
  esac
}

"$action"
