"""Resource addresses such as `endpoint.my-ep`, `deployment.my-ep/blue`, `model.hp2:1`. Pure.

An Address is typed in memory and a string only when serialised (state and plan files,
Docker labels, CLI arguments, output): `str(address)` writes it, `Address.parse` reads it back.
A deposed record (old containers left by an interrupted replacement) and an orphan record
(containers carrying a resource's labels that state does not know) are addresses of their
resource with a suffix: `deployment.ep/blue~deposed-3`, `deployment.ep/blue~orphan-0123456789ab`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from reconciler.errors import ReconcilerError

KINDS = ("model", "environment", "deployment", "endpoint")
DEPOSED, ORPHAN = "~deposed-", "~orphan-"


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Address:
    kind: str
    name: str
    deposed: str = ""
    orphan: str = ""
    # The serialised form, made once: every dict lookup hashes it (a state of N records is
    # looked up O(N) times per apply step).
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_text", f"{self.kind}.{self.name_with_suffix}")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"

    # Ordered, equal and hashed as the string it serialises to, so that everything sorted by
    # address (state records, plan order) comes out exactly as it did when addresses were
    # strings. Equality with a string is the boundary's convenience: a key read from a label
    # or a JSON output finds its Address.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Address):
            return self._text == other._text
        if isinstance(other, str):
            return self._text == other
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, (Address, str)):
            return self._text < str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)

    @classmethod
    def parse(cls, text: "str | Address") -> "Address":
        if isinstance(text, Address):
            return text
        kind, dot, rest = str(text).partition(".")
        name, deposed, orphan = rest, "", ""
        if DEPOSED in rest:
            name, _, deposed = rest.partition(DEPOSED)
        elif ORPHAN in rest:
            name, _, orphan = rest.partition(ORPHAN)
        if (not dot or kind not in KINDS or not name or "~" in name or "~" in deposed or "~" in orphan
                or (DEPOSED in rest and not deposed) or (ORPHAN in rest and not orphan)):
            raise ReconcilerError(
                f"not a resource address: {text!r}",
                "addresses look like endpoint.NAME, deployment.ENDPOINT/NAME, model.NAME:VERSION or "
                "environment.NAME:VERSION",
            )
        return cls(kind, name, deposed, orphan)

    @property
    def name_with_suffix(self) -> str:
        """The name as output shows it: with the ~deposed-/~orphan- suffix."""
        if self.deposed:
            return f"{self.name}{DEPOSED}{self.deposed}"
        if self.orphan:
            return f"{self.name}{ORPHAN}{self.orphan}"
        return self.name

    @property
    def base(self) -> "Address":
        """The resource itself, without a deposed or orphan suffix."""
        return replace(self, deposed="", orphan="") if self.deposed or self.orphan else self

    def deposed_as(self, key: str) -> "Address":
        return replace(self, deposed=str(key), orphan="")

    def orphan_as(self, key: str) -> "Address":
        return replace(self, deposed="", orphan=str(key))

    @property
    def is_deposed(self) -> bool:
        return bool(self.deposed)

    @property
    def is_orphan(self) -> bool:
        return bool(self.orphan)

    @property
    def is_derived(self) -> bool:
        """A deposed or orphan record's address, not a resource's own."""
        return bool(self.deposed or self.orphan)

    @property
    def endpoint(self) -> str:
        """A deployment's endpoint name (deployment.EP/NAME -> EP); an endpoint's own name."""
        if self.kind == "endpoint":
            return self.name
        if self.kind != "deployment":
            raise ValueError(f"{self} has no endpoint")
        return self.name.partition("/")[0]

    @property
    def short_name(self) -> str:
        """A deployment's name within its endpoint (deployment.EP/NAME -> NAME)."""
        return self.name.rpartition("/")[2]


def model_address(name: str, version: str) -> Address:
    return Address("model", f"{name}:{version}")


def environment_address(name: str, version: str) -> Address:
    return Address("environment", f"{name}:{version}")


def deployment_address(endpoint: str, name: str) -> Address:
    # Azure ML scopes deployment names by endpoint, so the address does too.
    return Address("deployment", f"{endpoint}/{name}")


def endpoint_address(name: str) -> Address:
    return Address("endpoint", name)
