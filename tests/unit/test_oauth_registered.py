"""A client registered ahead of time stands in for dynamic registration (``bosun server auth --client-id``)."""

from __future__ import annotations

from bosun.catalog.models import RemoteSource
from bosun.gateway.oauth import Registered, _metadata


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
