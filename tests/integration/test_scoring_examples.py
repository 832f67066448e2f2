"""The public binary-payloads example answers through its endpoint (issue 14), on the real
Docker Engine: a file in, a file out; then, the scoring script changed, files in, JSON out. Its
environment is built by reconciler from its conda file. It is here and not only a conformance
entry because its requests are multipart uploads, which `reconciler invoke` does not send.
inference-schema and the minimal custom containers built from their own Dockerfiles are
conformance entries (tests/conformance/conformance_examples.py).
"""
from __future__ import annotations

import http.client
import json
import struct
import uuid

import pytest

from scoring import ExampleStack, inference_base_or_skip, map_azureml_images

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def base(docker_client):
    return inference_base_or_skip(docker_client)


def post(stack, endpoint: str, body: bytes, content_type: str, deployment: str = "") -> tuple[int, str, bytes]:
    outputs = stack.endpoint(endpoint)
    headers = {"Authorization": f"Bearer {outputs['keys']['primary']}", "Content-Type": content_type}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    connection = http.client.HTTPConnection("127.0.0.1", outputs["port"], timeout=30)
    try:
        connection.request("POST", "/score", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def multipart(field: str, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
             f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    raise AssertionError("no start-of-frame segment")


def created_endpoint(stack, name: str) -> None:
    """What `az ml online-endpoint create -n NAME` makes."""
    (stack.dir / "endpoint.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n"
        f"name: {name}\nauth_mode: key\n")


def test_binary_payloads_answer_a_file_and_then_json(tmp_path, docker_client, base):
    # As written: its environment (env.yml: pillow) is built on the local inference base.
    stack = ExampleStack(tmp_path, docker_client, "managed/binary-payloads", ["binary-payloads-deployment.yml"],
                         assets=True, fill={"<ENDPOINT_NAME>": "endpt-binary",
                                            "<SCORING_SCRIPT>": "single-file-to-file-score.py"})
    created_endpoint(stack, "endpt-binary")
    map_azureml_images(stack)
    picture = (stack.dir / "input.jpg").read_bytes()
    try:
        stack.apply()   # one deployment and no traffic: it gets all of it (--all-traffic)
        body, content_type = multipart("file", [("input.jpg", picture)])
        status, kind, resized = post(stack, "endpt-binary", body, content_type)
        assert status == 200 and kind.startswith("image/jp") and jpeg_size(resized) == (128, 128), (status, kind)
        # The script's `online-deployment update --set code_configuration.scoring_script=...`.
        stack.edit("binary-payloads-deployment.yml", "single-file-to-file-score.py", "multi-file-to-json-score.py")
        stack.apply()
        body, content_type = multipart("file[]", [("input.jpg", picture), ("output.jpg", resized)])
        status, _, answer = post(stack, "endpt-binary", body, content_type)
        assert status == 200, answer
        assert json.loads(answer) == {"response": [{"filename": "input.jpg", "size": list(jpeg_size(picture))},
                                                   {"filename": "output.jpg", "size": [128, 128]}]}
    finally:
        stack.cleanup()
