"""Short-lived endpoint tokens for `auth_mode: aml_token`. Pure (but for the clock it is given).

Azure ML issues tokens from its own token service (`az ml online-endpoint get-credentials`);
locally `reconciler endpoint token ENDPOINT` issues them, signed with a per-endpoint secret
kept in state like the keys. The gateway checks them with nginx's secure_link module, which
compares `base64url(md5("<expires> <endpoint> <secret>"))` with the signature the client sends
and the expiry with the clock: no token service has to run beside the gateway. The token is
`<expires>.<signature>`, sent as `Authorization: Bearer <token>`.

MD5 with a secret suffix is what secure_link offers; the secret is 32 random bytes, the
message is fixed-format and the token short-lived (an hour, as Azure ML's), so what an
attacker can do with MD5's weaknesses (collisions of chosen messages) does not forge one.
"""
from __future__ import annotations

import base64
import hashlib
import secrets

TOKEN_LIFETIME_SECONDS = 3600
# Azure ML's get-credentials says when to refresh: a quarter of the lifetime before expiry.
REFRESH_BEFORE_SECONDS = TOKEN_LIFETIME_SECONDS // 4


def new_token_secret() -> str:
    return secrets.token_urlsafe(32)


def signing_input(expires: int | str, endpoint: str, secret: str) -> str:
    """What the gateway's secure_link_md5 hashes (the template writes the same expression)."""
    return f"{expires} {endpoint} {secret}"


def signature(expires: int | str, endpoint: str, secret: str) -> str:
    digest = hashlib.md5(signing_input(expires, endpoint, secret).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(endpoint: str, secret: str, now: float, lifetime: int = TOKEN_LIFETIME_SECONDS) -> dict:
    """The token in the shape `az ml online-endpoint get-credentials` prints for token endpoints."""
    expires = int(now) + lifetime
    return {"accessToken": f"{expires}.{signature(expires, endpoint, secret)}", "tokenType": "Bearer",
            "expiryTimeUtc": expires, "refreshAfterTimeUtc": expires - REFRESH_BEFORE_SECONDS}


def check_token(token: str, endpoint: str, secret: str, now: float) -> str:
    """"ok", "expired" or "invalid": the gateway's secure_link verdict on a token, computed
    the same way (the tests hold the two to each other)."""
    expires, dot, given = token.partition(".")
    if not dot or not expires.isdigit() or not secrets.compare_digest(given, signature(expires, endpoint, secret)):
        return "invalid"
    return "ok" if int(expires) > now else "expired"
