#!/usr/bin/env bash
# Build the reconciler's offline images without any container registry.
#
#   reconciler/base:bookworm          debootstrap'd Debian rootfs (python3, nginx)
#   reconciler/demo-tfserving:latest  stdlib stand-in for TensorFlow Serving's REST API
#   reconciler/gateway:latest         nginx (+ Debian's Lua module) in front of deployments
#   reconciler/azureml-inference-base:latest
#                                     stand-in for Azure ML's inference base images: Python venv,
#                                     the Azure ML inference server from PyPI, the host's CA trusted
#   reconciler/torchserve:latest-cpu  stand-in for pytorch/torchserve:latest-cpu (images/torchserve/build.sh:
#                                     Debian's JRE, torch CPU + torchserve wheels resolved on the host)
#
# Usage: images/build.sh [--force]
#   --force         rebuild the base image even if it already exists
#   DEBIAN_MIRROR   Debian mirror for debootstrap (default: http://deb.debian.org/debian)
#   HOST_CA_BUNDLE  CA bundle the images that install from PyPI trust (default: the one the host's
#                   pip uses, `pip config get global.cert`, else /etc/ssl/certs/ca-certificates.crt)
#
# Idempotent: the base image is only bootstrapped when missing; the two app
# images are rebuilt every run but come straight from the build cache when
# nothing changed. Prints "<image> <id>" per image on stdout; logs go to stderr.
set -euo pipefail

readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly BASE_IMAGE=reconciler/base:bookworm
readonly SUITE=bookworm
# Same mirror this host's /etc/apt/sources.list.d/debian.sources points at.
readonly MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-minimal lacks http.server/json, which live in libpython3.11-stdlib.
readonly PACKAGES=python3-minimal,libpython3.11-stdlib,nginx-light,ca-certificates
readonly LABEL=org.reconciler.image=1
# Legacy builder: no buildx on this host, and its -q output is just the image id.
export DOCKER_BUILDKIT=0

log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

rootfs=""
cleanup() {
    [[ -n "$rootfs" && -d "$rootfs" ]] || return 0
    # debootstrap unmounts /proc, /sys etc. itself, but if it was killed they
    # may still be mounted; never let rm walk into the host's /proc.
    awk -v r="$rootfs/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$rootfs"
    rootfs=""
}
trap cleanup EXIT

slim_rootfs() {
    local r="$1"
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
        "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old \
        "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/lintian
    find "$r"/var/log -type f -delete
    # Keep copyright files: they are tiny and the licences require them.
    find "$r"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find "$r"/usr/share/doc -mindepth 1 -type d -empty -delete
    find "$r"/usr/share/locale -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    # The host's resolver config must not leak into the image; Docker
    # bind-mounts its own at run time.
    rm -f "$r"/etc/resolv.conf
    # Anything apt-get installs in derived images stays slim too.
    cat >"$r"/etc/dpkg/dpkg.cfg.d/01-reconciler-slim <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
}

build_base() {
    if ((!force)) && image_id "$BASE_IMAGE" >/dev/null; then
        log "$BASE_IMAGE exists, skipping debootstrap (use --force to rebuild)"
        return
    fi
    ((EUID == 0)) || die "debootstrap needs root"
    command -v debootstrap >/dev/null || die "debootstrap is not installed"

    local started=$SECONDS
    rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/reconciler-rootfs.XXXXXX")"
    log "debootstrap $SUITE from $MIRROR into $rootfs"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
    slim_rootfs "$rootfs"
    tar --numeric-owner -C "$rootfs" -c . |
        docker import \
            --change "LABEL $LABEL" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            --message "debootstrap --variant=minbase $SUITE $MIRROR" \
            - "$BASE_IMAGE" >/dev/null
    cleanup
    log "built $BASE_IMAGE in $((SECONDS - started))s"
}

build_app() {
    local image="$1" context="$HERE/$2"
    log "docker build $image from $context"
    docker build --quiet --label "$LABEL" --tag "$image" "$context" >/dev/null
}

# Containers reach PyPI only through the machine's TLS-intercepting proxy, whose CA is in the
# bundle the host's pip trusts; images that pip-install get a copy of it in their build context
# (same bytes, same build-cache hit).
host_ca_bundle() {
    local bundle="${HOST_CA_BUNDLE:-}"
    [[ -n "$bundle" ]] || bundle="$(python3 -m pip config get global.cert 2>/dev/null || true)"
    [[ -n "$bundle" ]] || bundle=/etc/ssl/certs/ca-certificates.crt
    [[ -r "$bundle" ]] || die "no CA bundle at $bundle (set HOST_CA_BUNDLE)"
    printf '%s\n' "$bundle"
}

build_app_with_host_ca() {
    local image="$1" source="$HERE/$2" context
    context="$(mktemp -d "${TMPDIR:-/tmp}/reconciler-context.XXXXXX")"
    cp -a "$source/." "$context/"
    cp "$(host_ca_bundle)" "$context/host-ca-certificates.crt"
    # Fixed mtime: the legacy builder's cache key for COPY includes file metadata.
    touch -d @0 "$context/host-ca-certificates.crt"
    log "docker build $image from $source (+ the host's CA bundle)"
    local status=0
    docker build --quiet --label "$LABEL" --tag "$image" "$context" >/dev/null || status=$?
    rm -rf "$context"
    ((status == 0)) || die "building $image failed (rerun without --quiet: docker build $source)"
}

docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"
build_base
build_app reconciler/demo-tfserving:latest demo-tfserving
build_app reconciler/gateway:latest gateway
build_app_with_host_ca reconciler/azureml-inference-base:latest azureml-inference-base
"$HERE/torchserve/build.sh" reconciler/torchserve:latest-cpu
# Untagged images left behind by rebuilds; in-use ones are kept by Docker.
docker image prune --force --filter "label=$LABEL" >/dev/null

for image in "$BASE_IMAGE" reconciler/demo-tfserving:latest reconciler/gateway:latest \
    reconciler/azureml-inference-base:latest reconciler/torchserve:latest-cpu; do
    printf '%s %s\n' "$image" "$(image_id "$image")"
done
