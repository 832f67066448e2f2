#!/bin/bash
# pytorch/torchserve's docker/dockerd-entrypoint.sh: `serve` starts TorchServe with the image's
# config; anything else is eval'd, so an exec-form CMD such as the Azure ML densenet example's
# ["torchserve", "--start", ..., "$AZUREML_MODEL_DIR/torchserve"] has its variables expanded.
# `torchserve --start` returns once the frontend is launched; the script then stays up as the
# upstream one does (tail -f /dev/null), but stops TorchServe and exits on SIGTERM instead of
# waiting out docker's stop timeout (bash as PID 1 ignores SIGTERM without a trap).
set -e
mkdir -p "${TEMP:-/tmp}" "${LOG_LOCATION:-logs}" "${METRICS_LOCATION:-logs}"

if [[ "$1" = "serve" ]]; then
    shift 1
    torchserve --start --ts-config /home/model-server/config.properties --disable-token-auth "$@"
else
    eval "$@"
fi

trap 'torchserve --stop >/dev/null 2>&1 || true; exit 0' TERM INT
tail -f /dev/null &
wait $!
