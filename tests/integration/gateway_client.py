"""A small keep-alive HTTP client for sending many requests to a gateway in tests and benchmarks."""
from __future__ import annotations

import http.client
import json

SAMPLE = b'{"instances": [1.0, 2.0, 5.0]}'


class GatewayClient:
    def __init__(self, port: int, key: str | None = None, timeout: float = 10) -> None:
        self.port = port
        self.key = key
        self.timeout = timeout
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def score(self, body: bytes = SAMPLE, key: str | None = None, deployment: str | None = None,
              path: str = "/score", headers: dict | None = None) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": "application/json", **(headers or {})}
        key = key if key is not None else self.key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if deployment:
            headers["azureml-model-deployment"] = deployment
        # No retry: a request lost to a closed connection is a failed request, as it is for a
        # client that does not retry (the gateway's edge keeps the connection alive across
        # reloads; a gateway that answers `Connection: close` makes http.client reconnect).
        self.connection.request("POST", path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def predictions(self, **kwargs) -> list:
        status, _, body = self.score(**kwargs)
        assert status == 200, body
        return json.loads(body)["predictions"]

    def close(self) -> None:
        self.connection.close()
