"""A client registered ahead of time stands in for dynamic registration (``bosun server auth --client-id``)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bosun.catalog.models import RemoteSource
from bosun.gateway.oauth import Registered, _metadata, _signing_algorithm


def _source() -> RemoteSource:
    return RemoteSource.model_validate({"type": "remote", "url": "https://mcp.example.com/mcp", "auth": "oauth",
                                        "scopes": ["read"]})  # fmt: skip


def test_a_confidential_client_authenticates_with_basic_and_keeps_bosuns_metadata() -> None:
    info = Registered("acme-bosun", "s3cret").information(_metadata(_source(), "http://127.0.0.1:5555/callback"))
    assert (info.client_id, info.client_secret, info.token_endpoint_auth_method) == (
        "acme-bosun",
        "s3cret",
        "client_secret_basic",
    )
    assert [str(u) for u in info.redirect_uris or []] == ["http://127.0.0.1:5555/callback"]
    assert info.scope == "read" and "refresh_token" in info.grant_types


def test_a_public_client_sends_no_secret() -> None:
    info = Registered("acme-public").information(_metadata(_source(), "http://127.0.0.1:5555/callback"))
    assert info.client_secret is None and info.token_endpoint_auth_method == "none"


def test_a_client_with_a_private_key_signs_and_its_algorithm_follows_the_key() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    registered = Registered("acme-machine", private_key=pem.decode(), machine=True)
    info = registered.information(_metadata(_source(), "http://127.0.0.1:5555/callback"))
    assert info.token_endpoint_auth_method == "private_key_jwt" and info.client_secret is None
    assert info.grant_types == ["client_credentials"] and info.redirect_uris is None
    assert _signing_algorithm(pem.decode()) == "ES256"
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert _signing_algorithm(rsa_pem.decode()) == "RS256"


def test_a_machine_client_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="secret or its private key"):
        Registered("acme-machine", machine=True)
