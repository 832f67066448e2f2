"""auth_mode aml_token on the real daemon (#13): the gateway admits short-lived tokens from
`reconciler endpoint token`, and refuses expired, tampered and key credentials with a 401
that says why; `invoke` signs its own token."""
from __future__ import annotations

import json
import time

import pytest

from gateway_client import GatewayClient
from reconciler.tokens import issue_token

pytestmark = pytest.mark.integration


def test_tokens_are_checked_by_the_gateway(stack):
    stack.edit("endpoint.yml", "auth_mode: key", "auth_mode: aml_token")
    stack.apply()
    outputs = stack.endpoint("half-plus-two")
    printed = stack.run("endpoint", "token", "half-plus-two", "--state", str(stack.state))
    assert printed.exit_code == 0, printed.output
    token = json.loads(printed.output)
    assert set(token) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    assert token["expiryTimeUtc"] > time.time() + 3000
    client = GatewayClient(outputs["port"])
    try:
        assert client.predictions(key=token["accessToken"]) == [2.5, 3.0, 4.5]
        status, _, body = client.score(key=outputs["keys"]["primary"])  # keys are no credential here
        assert status == 401 and b"missing or invalid token" in body
        expires, _, signature = token["accessToken"].partition(".")
        tampered = f"{int(expires) + 86400}.{signature}"
        status, _, body = client.score(key=tampered)
        assert status == 401 and b"missing or invalid token" in body
        expired = issue_token("half-plus-two", outputs["keys"]["token"], time.time() - 7200)["accessToken"]
        status, headers, body = client.score(key=expired)
        assert status == 401 and b"token expired" in body and "invalid_token" in headers["www-authenticate"]
    finally:
        client.close()
    invoked = stack.run("invoke", "half-plus-two", "--request-file", str(stack.dir / "sample-request.json"),
                        "--state", str(stack.state))
    assert invoked.exit_code == 0 and json.loads(invoked.output) == {"predictions": [2.5, 3.0, 4.5]}


def test_a_key_endpoint_has_no_tokens(stack):
    stack.apply()
    printed = stack.run("endpoint", "token", "half-plus-two", "--state", str(stack.state))
    assert printed.exit_code == 1 and "uses auth_mode key, not aml_token" in printed.output
