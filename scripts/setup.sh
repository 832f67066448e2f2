#!/usr/bin/env bash
# Everything reconciler needs on a Debian 12 machine, installed or started only when missing:
#   - Debian's docker.io (the engine), debootstrap (for the offline images), hey (a load
#     client that does not retry, for the zero-failed-requests tests), prometheus (scrapes
#     an endpoint's metrics in tests/integration/test_gateway_metrics.py) and postgresql (only its
#     binaries are used: the tests initdb and start a cluster of their own, tests/pgcluster.py;
#     a system cluster the package may start is never touched), openssh-server,
#     iproute2 and openssl (the remote-engine tests run a second dockerd and an sshd in a
#     network namespace),
#   - the Python package with its test extras (pip, editable),
#   - a running dockerd (started in the background when none answers; ours to leave running),
#   - the offline images (images/build.sh: debootstrap once, then the build cache).
# Idempotent: a second run changes nothing and takes a few seconds.
# Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# hey: the load client that does not retry (tests of zero failed requests during rollouts).
command -v hey >/dev/null 2>&1 || missing+=(hey)
# prometheus: the gateway-metrics test scrapes an endpoint with a real one (on loopback, its own
# data dir; never started as a service here).
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# Debian keeps initdb and pg_ctl under /usr/lib/postgresql/N/bin, out of PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# The remote-engine tests (tests/integration/test_remote_engine.py): sshd, ip netns, openssl.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The multi-node swarm tests (tests/integration/test_swarm_multinode.py): the registry every node
# pulls from. The tests run their own instance (own config and storage, on the test network's
# address and port 5040), so the package's system service on :5000, where one starts, is not used.
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if ((${#missing[@]})); then
  if ((EUID != 0)); then
    log "needs root to install ${missing[*]} (apt-get); run it as root or install them first"
    exit 1
  fi
  log "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "installing the reconciler package (pip install -e '.[test]')"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE=1 Python never writes
# any: every command would compile the package from source at every start (0.05-0.1 s of
# `reconciler validate`, BENCHMARKS.md). A wheel install has it (pip compiles); so does this.
python3 -m compileall -q reconciler >/dev/null

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /tmp/reconciler-dockerd.log)"
  nohup dockerd >/tmp/reconciler-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not start:"
    tail -40 /tmp/reconciler-dockerd.log >&2
    exit 1
  fi
fi

log "building the offline images (images/build.sh)"
images/build.sh >/dev/null
