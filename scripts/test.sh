#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole test suite, as CI does (.ci/run runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec python3 -m pytest -q -p no:cacheprovider "$@"
