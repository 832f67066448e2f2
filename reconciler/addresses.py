"""Resource addresses such as `endpoint.my-ep`, `deployment.my-ep/blue`, `model.hp2:1`. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from reconciler.errors import ReconcilerError

KINDS = ("model", "deployment", "endpoint")


@dataclass(frozen=True, order=True)
class Address:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> "Address":
        kind, dot, name = text.partition(".")
        if not dot or kind not in KINDS or not name:
            raise ReconcilerError(
                f"not a resource address: {text!r}",
                "addresses look like endpoint.NAME, deployment.ENDPOINT/NAME or model.NAME:VERSION",
            )
        return cls(kind, name)


def model_address(name: str, version: str) -> Address:
    return Address("model", f"{name}:{version}")


def deployment_address(endpoint: str, name: str) -> Address:
    # Azure ML scopes deployment names by endpoint, so the address does too.
    return Address("deployment", f"{endpoint}/{name}")


def endpoint_address(name: str) -> Address:
    return Address("endpoint", name)
