#!/usr/bin/env bash
# Build reconciler/torchserve:latest-cpu, the offline stand-in for pytorch/torchserve:latest-cpu.
# Called by images/build.sh; runs alone too (after the base image exists).
#
#   images/torchserve/build.sh [TAG]      default TAG: reconciler/torchserve:latest-cpu
#   TORCH_WHEELS   directory holding the CPU torch wheel (default: /opt/wheels)
#   NO_CACHE=1     build without Docker's layer cache (a cold build; bench/bench_torchserve.py)
#
# The wheels are resolved on the host by `pip download` (the host's pip knows this machine's route
# to PyPI, e.g. a proxy's CA; a container does not) into a temporary build context, and installed
# offline in the image's first stage; no wheel is committed or kept in a layer. Skipped when TAG
# exists and was built from the same recipe and base image (label org.reconciler.recipe), so a
# cached run costs no download; otherwise Docker's layer cache still keeps the JRE layer.
set -euo pipefail

readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly TAG="${1:-reconciler/torchserve:latest-cpu}"
readonly BASE_IMAGE=reconciler/base:bookworm
readonly WHEELS="${TORCH_WHEELS:-/opt/wheels}"
export DOCKER_BUILDKIT=0

log() { printf '[torchserve/build.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

base_id="$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null)" || die "$BASE_IMAGE is missing: run images/build.sh"
recipe="$( (cd "$HERE" && cat Dockerfile requirements.txt config.properties dockerd-entrypoint.sh; echo "$base_id") |
    sha256sum | cut -c1-16)"
if [[ -z "${NO_CACHE:-}" && "$(docker image inspect --format '{{index .Config.Labels "org.reconciler.recipe"}}' "$TAG" 2>/dev/null)" == "$recipe" ]]; then
    log "$TAG is up to date (recipe $recipe)"
    exit 0
fi

command -v pip >/dev/null || command -v pip3 >/dev/null || die "pip is needed on the host to resolve the wheels"
pip="$(command -v pip || command -v pip3)"
context="$(mktemp -d "${TMPDIR:-/var/tmp}/reconciler-torchserve.XXXXXX")"
trap 'rm -rf "$context"' EXIT
cp "$HERE"/Dockerfile "$HERE"/config.properties "$HERE"/dockerd-entrypoint.sh "$context"/
mkdir "$context/wheels"
cp "$HERE"/requirements.txt "$context/wheels/"

started=$SECONDS
log "resolving wheels for Python 3.11 (torch from $WHEELS)"
# For the image's interpreter (Debian 12's CPython 3.11, glibc 2.36), whatever the host runs.
"$pip" download --quiet --disable-pip-version-check --only-binary=:all: --find-links "$WHEELS" \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform any \
    -r "$HERE/requirements.txt" -d "$context/wheels" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
[[ ${PIPESTATUS[0]} == 0 ]] ||
    die "pip download failed: the CPU torch wheel must be in $WHEELS (TORCH_WHEELS) and PyPI reachable from the host"
log "resolved in $((SECONDS - started))s; docker build $TAG"
docker build --quiet ${NO_CACHE:+--no-cache} --label org.reconciler.image=1 --label "org.reconciler.recipe=$recipe" \
    --tag "$TAG" "$context" >/dev/null
log "built $TAG in $((SECONDS - started))s"
