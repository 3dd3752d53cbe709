#!/usr/bin/env bash
# Builds the CPU image (docker/Dockerfile.cpu) with no container registry, as on the
# development machine: a Debian bookworm base made by debootstrap from the Debian mirror
# and `podman import`ed, then `podman build --build-arg BASE_IMAGE=<that base>`. pip
# still needs the package index. WITH_GPU=1 builds the GPU image on the same base too
# (CUDA TensorFlow's libraries are pip wheels); it is checked, not run on a GPU, here.
#
# Needs root (debootstrap, rootful podman). Installs podman, buildah, debootstrap and runc
# with apt-get when missing. Work files (debootstrap's .deb cache) go to
# $SHAPES_IMAGES_WORK (default /var/tmp/shapes-images); images to podman's own storage.
# REBUILD_BASE=1 makes the base again (for example to take new Debian security updates).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

WORK=${SHAPES_IMAGES_WORK:-/var/tmp/shapes-images}
# The Debian mirrors this machine's own apt uses (no host name is written here);
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override them.
apt_mirror() {  # $1: security (the security archive) or main (any other)
    {
        grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
    } | if [ "$1" = security ]; then grep -e '-security'; else grep -v -e '-security'; fi |
        head -n 1
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror main || true)}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_mirror security || true)}
if [ -z "$MIRROR" ] || [ -z "$SECURITY_MIRROR" ]; then
    echo "error: no Debian mirror in this machine's apt sources; set DEBIAN_MIRROR and" \
        "DEBIAN_SECURITY_MIRROR" >&2
    exit 2
fi
SUITE=bookworm
BASE_IMAGE=${SHAPES_BASE_IMAGE:-localhost/shapes-debian-base:$SUITE}
# Settings podman needs on this kind of machine (host network, ulimits, runc).
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/containers.conf}

if [ "$(id -u)" != 0 ]; then
    echo "error: $0 needs root (debootstrap, rootful podman)" >&2
    exit 2
fi

missing=()
for tool in podman buildah debootstrap runc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" uidmap fuse-overlayfs
fi

image_names
secret_args

if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    echo "making base image $BASE_IMAGE: debootstrap --variant=minbase $SUITE ($MIRROR)"
    rootfs=$WORK/rootfs
    mkdir -p "$WORK/debs"
    rm -rf "$rootfs" "$WORK/rootfs.tar"
    debootstrap --variant=minbase --cache-dir="$WORK/debs" \
        --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    # Security and point-release updates, then nothing apt does not need at run time.
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
    chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -ec \
        'apt-get update -qq && apt-get upgrade -y -qq && apt-get clean'
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$WORK/rootfs.tar" "$BASE_IMAGE"
    rm -rf "$rootfs" "$WORK/rootfs.tar"
else
    echo "base image $BASE_IMAGE exists (REBUILD_BASE=1 makes it again)"
fi

echo "building $CPU_IMAGE from $BASE_IMAGE"
previous=$(podman image inspect --format '{{.Id}}' "$CPU_IMAGE" 2>/dev/null || true)
podman build --build-arg "BASE_IMAGE=$BASE_IMAGE" "${SECRET_ARGS[@]}" \
    -t "$CPU_IMAGE" -f docker/Dockerfile.cpu .
podman run --rm "$CPU_IMAGE" python3 -c \
    'import shapes_pipeline.kubeflow.components, kfp, tensorflow as tf, os; print("image ok: uid", os.getuid(), "kfp", kfp.__version__, "tensorflow", tf.__version__)'
# The image this build replaced, if nothing else names it (it is 2 GB).
if [ -n "$previous" ] && [ "$(podman image inspect --format '{{.Id}}' "$CPU_IMAGE")" != "$previous" ] &&
    [ -z "$(podman image inspect --format '{{.RepoTags}}' "$previous" | tr -d '[]')" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "built $CPU_IMAGE"

# WITH_GPU=1: the GPU image too, on the same base (CUDA TensorFlow's libraries are pip
# wheels, about 4 GB more); checked to be a CUDA build, not run on a GPU here.
if [ "${WITH_GPU:-0}" = 1 ]; then
    echo "building $GPU_IMAGE from $BASE_IMAGE"
    podman build --build-arg "BASE_IMAGE=$BASE_IMAGE" "${SECRET_ARGS[@]}" \
        -t "$GPU_IMAGE" -f docker/Dockerfile.gpu .
    podman run --rm "$GPU_IMAGE" python3 -c \
        'import shapes_pipeline.kubeflow.components, kfp, tensorflow as tf, os; assert tf.test.is_built_with_cuda(); print("image ok: uid", os.getuid(), "tensorflow", tf.__version__, "built with CUDA")'
    echo "built $GPU_IMAGE"
fi
