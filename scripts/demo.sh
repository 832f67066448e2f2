#!/usr/bin/env bash
# Set up (scripts/setup.sh), apply the demo stack and invoke its endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
reconciler apply stacks/half-plus-two --auto-approve
reconciler invoke half-plus-two --request-file stacks/half-plus-two/sample-request.json
