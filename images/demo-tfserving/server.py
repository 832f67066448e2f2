"""Stand-in for TensorFlow Serving's REST API, serving the "half_plus_two" demo.

The Azure ML custom-container how-to runs ``tensorflow/serving`` with the
``half_plus_two`` model. That image is not reachable offline, so this stdlib-only
server answers the same endpoints with the same model layout and JSON shapes:

* ``GET  /v1/models/NAME[/versions/N]``          model status
* ``POST /v1/models/NAME[/versions/N]:predict``  ``{"instances": [...]}`` -> ``{"predictions": [...]}``

Like TF Serving, the model is ``$MODEL_BASE_PATH/$MODEL_NAME/<version>/`` with
the numerically largest all-digit ``<version>`` that contains ``saved_model.pb``.
The "model" is y = a*x + b; ``assets/coefficients.json`` may override the
default a=0.5, b=2.0.

Environment: MODEL_BASE_PATH (/models), MODEL_NAME (model), REST_API_PORT
(8501), READY_AFTER_SECONDS (0: status answers 503 until then, to exercise slow
readiness), DEPLOYMENT_NAME (echoed in ``x-demo-deployment`` so tests can tell
which container answered, together with ``x-demo-hostname``),
SCORING_DELAY_SECONDS (0: every prediction waits this long before answering, to
exercise the gateway's request timeout; a request's ``x-demo-scoring-delay``
header, in seconds, overrides it for that request), SCORING_ERROR_RATE (0: the share of
predictions, 0 to 1, answered with SCORING_ERROR_STATUS, 500 by default, instead, to exercise
the gateway's 424; a request's ``x-demo-error-status`` header answers that status, 400-599,
for that request; an error comes after the delay, as a model that fails late would),
HEALTH_SWITCH_DIR (/tmp): ``GET /-/ready``
and ``GET /-/live`` answer 200 unless a file ``not-ready`` / ``not-live`` is there, so that
tests can fail an instance's readiness or liveness on demand (``docker exec C touch
/tmp/not-ready``; /tmp is a tmpfs, so a restart clears the switch).

SIGTERM stops it gracefully, as uvicorn's and gunicorn's graceful shutdowns do: no new
connections (a proxy that still has this instance in its list gets "connection refused" and
tries another), every request it holds is answered, each with ``Connection: close``, and it
exits once its clients have closed their connections, at most STOP_GRACE_SECONDS (5) later.
A swarm task still gets requests for a moment after its stop began (the service's DNS change
reaches the other nodes by gossip); cutting them would fail those requests.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_BASE_PATH = os.environ.get("MODEL_BASE_PATH", "/models")
MODEL_NAME = os.environ.get("MODEL_NAME", "model")
REST_API_PORT = int(os.environ.get("REST_API_PORT", "8501"))
READY_AFTER_SECONDS = float(os.environ.get("READY_AFTER_SECONDS", "0") or 0)
DEPLOYMENT_NAME = os.environ.get("DEPLOYMENT_NAME", "")
SCORING_DELAY_SECONDS = float(os.environ.get("SCORING_DELAY_SECONDS", "0") or 0)
SCORING_DELAY_HEADER = "x-demo-scoring-delay"
SCORING_ERROR_RATE = float(os.environ.get("SCORING_ERROR_RATE", "0") or 0)
SCORING_ERROR_STATUS = int(os.environ.get("SCORING_ERROR_STATUS", "500") or 500)
SCORING_ERROR_HEADER = "x-demo-error-status"
HEALTH_SWITCH_DIR = Path(os.environ.get("HEALTH_SWITCH_DIR", "/tmp"))
HEALTH_ROUTES = {"/-/ready": "not-ready", "/-/live": "not-live"}
# A typo in a test must not hang a handler thread for hours.
MAX_SCORING_DELAY_SECONDS = 60.0
HOSTNAME = socket.gethostname()
# Under Docker's and swarm's default stop timeout (10 s), after which the engine kills.
STOP_GRACE_SECONDS = float(os.environ.get("STOP_GRACE_SECONDS", "5") or 5)

DEFAULT_A, DEFAULT_B = 0.5, 2.0
URL_RE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<verb>:predict)?$")


@dataclass(frozen=True)
class Model:
    version: str
    a: float
    b: float

    def predict(self, value):
        # TF Serving accepts batched tensors of any rank; map over nested lists.
        if isinstance(value, list):
            return [self.predict(v) for v in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {json.dumps(value)}")
        return self.a * value + self.b


def load_model(base: Path) -> Model:
    """Load the newest version under ``base``; ValueError says what was wrong."""
    if not base.is_dir():
        raise ValueError(f"model base path {base} does not exist or is not a directory")
    versions = sorted((p for p in base.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise ValueError(f"no versions of servable {MODEL_NAME} found under base path {base}")
    newest = versions[-1]
    if not (newest / "saved_model.pb").is_file():
        raise ValueError(f"no saved_model.pb in {newest}")
    a, b = DEFAULT_A, DEFAULT_B
    coefficients = newest / "assets" / "coefficients.json"
    if coefficients.is_file():
        try:
            data = json.loads(coefficients.read_text())
            a, b = float(data.get("a", a)), float(data.get("b", b))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad {coefficients}: {exc}") from None
    # TF Serving reports the version as the integer, e.g. "123" for 00000123/.
    return Model(version=str(int(newest.name)), a=a, b=b)


class OpenConnections:
    """How many client connections are open, so that a stop can wait until they are closed."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def __enter__(self) -> None:
        with self._changed:
            self._count += 1

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_closed(self, timeout: float) -> int:
        """Wait until none is open (at most `timeout` seconds); how many are still open."""
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)
            return self._count


CONNECTIONS = OpenConnections()
STOPPING = threading.Event()


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, because nginx reuses upstream connections; every
    # response therefore sets Content-Length.
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes; without TCP_NODELAY, Nagle's algorithm and the
    # peer's delayed ACK add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "demo-tfserving/1"
    model: Model | None = None
    load_error = ""
    started = 0.0

    def handle(self):
        with CONNECTIONS:
            super().handle()

    def end_headers(self):
        if STOPPING.is_set():
            self.send_header("Connection", "close")  # also ends this connection's loop
        self.send_header("x-demo-hostname", HOSTNAME)
        self.send_header("x-demo-deployment", DEPLOYMENT_NAME)
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        print(f"{self.log_date_time_string()} {self.address_string()} {format % args}", flush=True)

    def log_error(self, format, *args):  # noqa: A002
        # stderr, so stdout keeps exactly one line per request.
        print(f"{self.log_date_time_string()} {self.address_string()} {format % args}", file=sys.stderr, flush=True)

    def send_json(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def resolve(self, verb_wanted: bool) -> Model | None:
        """Route and check model state; on failure sends the error and returns None."""
        match = URL_RE.match(self.path.split("?", 1)[0])
        if not match or bool(match["verb"]) != verb_wanted:
            self.send_json(404, {"error": f"Malformed request: {self.command} {self.path}"})
            return None
        name, version = match["name"], match["version"]
        wanted = f"{name}" + (f" version {version}" if version else "")
        if name != MODEL_NAME:
            self.send_json(404, {"error": f"Servable not found for request: Latest({name})"})
            return None
        if time.monotonic() - self.started < READY_AFTER_SECONDS:
            self.send_json(503, {"error": f"Servable {name} is still loading"})
            return None
        if self.model is None:
            self.send_json(404, {"error": f"Servable not found for request: {wanted}: {self.load_error}"})
            return None
        if version and int(version) != int(self.model.version):
            self.send_json(404, {"error": f"Servable not found for request: Specific({name}, {version})"})
            return None
        return self.model

    def do_GET(self):
        switch = HEALTH_ROUTES.get(self.path.split("?", 1)[0])
        if switch:
            failing = (HEALTH_SWITCH_DIR / switch).exists()
            self.send_json(503 if failing else 200, {"status": switch if failing else "ok"})
            return
        model = self.resolve(verb_wanted=False)
        if model:
            status = {"error_code": "OK", "error_message": ""}
            self.send_json(200, {"model_version_status": [{"version": model.version, "state": "AVAILABLE", "status": status}]})

    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Not worth decoding; without reading the body the connection is unusable.
            self.close_connection = True
            self.send_json(411, {"error": "chunked request bodies are not supported; send Content-Length"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        model = self.resolve(verb_wanted=True)
        if not model:
            return
        try:
            request = json.loads(body)
        except ValueError as exc:
            self.send_json(400, {"error": f"JSON Parse error: {exc}"})
            return
        # TF Serving's row format ("instances" -> "predictions") and its columnar format
        # ("inputs" -> "outputs"), which half-plus-two-integrated's sample request uses.
        if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
            self.send_json(400, {"error": 'Missing "instances" key' if not isinstance(request, dict) or
                                 "inputs" not in request else 'Request has both "instances" and "inputs"'})
            return
        row_format = "instances" in request
        try:
            predictions = model.predict(request["instances" if row_format else "inputs"])
        except ValueError as exc:
            self.send_json(400, {"error": str(exc)})
            return
        if not isinstance(predictions, list) and row_format:
            predictions = [predictions]
        delay = self.scoring_delay()
        error = None if delay is None else self.scoring_error()
        if error is None:
            return
        time.sleep(delay)
        if error:
            self.send_json(error, {"error": f"demo model failed on demand with HTTP {error}"})
            return
        self.send_json(200, {"predictions" if row_format else "outputs": predictions})

    def scoring_delay(self) -> float | None:
        """Seconds to wait before answering a prediction; None after answering 400 for a bad header."""
        raw = self.headers.get(SCORING_DELAY_HEADER)
        if raw is None:
            return min(SCORING_DELAY_SECONDS, MAX_SCORING_DELAY_SECONDS)
        try:
            delay = float(raw)
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= MAX_SCORING_DELAY_SECONDS:
            self.send_json(400, {"error": f"{SCORING_DELAY_HEADER} must be seconds between 0 and "
                                          f"{MAX_SCORING_DELAY_SECONDS:g}, got {raw!r}"})
            return None
        return delay


    def scoring_error(self) -> int | None:
        """The error status to answer instead of a prediction (0: none); None after answering 400
        for a bad header."""
        raw = self.headers.get(SCORING_ERROR_HEADER)
        if raw is None:
            return SCORING_ERROR_STATUS if SCORING_ERROR_RATE and random.random() < SCORING_ERROR_RATE else 0
        if not (raw.isdigit() and 400 <= int(raw) <= 599):
            self.send_json(400, {"error": f"{SCORING_ERROR_HEADER} must be an HTTP status 400-599, got {raw!r}"})
            return None
        return int(raw)


def main() -> None:
    Handler.started = time.monotonic()
    base = Path(MODEL_BASE_PATH) / MODEL_NAME
    try:
        Handler.model = load_model(base)
        print(f"loaded {MODEL_NAME} version {Handler.model.version} from {base} "
              f"(a={Handler.model.a}, b={Handler.model.b})", flush=True)
    except ValueError as exc:
        # Keep serving so a wrong mount shows up as failing readiness, not a crash loop.
        Handler.load_error = str(exc)
        print(f"error: cannot load model {MODEL_NAME}: {exc}", file=sys.stderr, flush=True)

    server = ThreadingHTTPServer(("", REST_API_PORT), Handler)

    def stop(signum, _frame):
        print(f"received signal {signum}, shutting down", flush=True)
        STOPPING.set()
        # shutdown() waits for serve_forever(), which runs on this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    # As PID 1 in a container, SIGTERM is ignored unless handled explicitly.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving REST API on port {REST_API_PORT}", flush=True)
    # serve_forever notices shutdown() only between polls: a short poll keeps `docker stop`
    # (each rollout's old container) near the engine's own time, as a native server's exit is.
    server.serve_forever(poll_interval=0.05)
    server.server_close()  # no new connections
    # Handler threads are daemons: whatever is still open after the grace period ends with
    # the process.
    left = CONNECTIONS.wait_closed(STOP_GRACE_SECONDS)
    if left:
        print(f"closing {left} connection(s) still open after {STOP_GRACE_SECONDS:g} s", flush=True)


if __name__ == "__main__":
    main()
