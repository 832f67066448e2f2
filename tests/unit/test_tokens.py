"""Endpoint tokens for auth_mode aml_token (reconciler/tokens.py): what `endpoint token` issues
and what the gateway accepts (its nginx secure_link check computes the same signature)."""
from __future__ import annotations

import base64
import hashlib

from reconciler.tokens import REFRESH_BEFORE_SECONDS, TOKEN_LIFETIME_SECONDS, check_token, issue_token, signature

SECRET = "s3cr3t-token-signing-key"
NOW = 1_800_000_000


def test_the_token_has_the_shape_az_ml_get_credentials_prints():
    token = issue_token("ep", SECRET, NOW)
    assert set(token) == {"accessToken", "tokenType", "expiryTimeUtc", "refreshAfterTimeUtc"}
    assert token["tokenType"] == "Bearer"
    assert token["expiryTimeUtc"] == NOW + TOKEN_LIFETIME_SECONDS
    assert token["refreshAfterTimeUtc"] == token["expiryTimeUtc"] - REFRESH_BEFORE_SECONDS


def test_the_signature_is_what_nginx_secure_link_md5_computes():
    # openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =   (nginx's documented recipe)
    expected = base64.b64encode(hashlib.md5(f"{NOW} ep {SECRET}".encode()).digest()).decode()
    assert signature(NOW, "ep", SECRET) == expected.replace("+", "-").replace("/", "_").rstrip("=")


def test_valid_expired_and_tampered_tokens():
    token = issue_token("ep", SECRET, NOW)["accessToken"]
    assert check_token(token, "ep", SECRET, NOW + 10) == "ok"
    assert check_token(token, "ep", SECRET, NOW + TOKEN_LIFETIME_SECONDS + 1) == "expired"
    expires, _, given = token.partition(".")
    assert check_token(f"{int(expires) + 3600}.{given}", "ep", SECRET, NOW) == "invalid"  # later expiry
    assert check_token(token, "other-endpoint", SECRET, NOW) == "invalid"
    assert check_token(token, "ep", "another secret", NOW) == "invalid"
    assert check_token("garbage", "ep", SECRET, NOW) == "invalid"
