"""Enterprise-managed authorization (SEP-990), Bosun's leg: the ID token traded at the identity provider for
an ID-JAG (RFC 8693), and the client that then takes the jwt-bearer grant. The whole flow runs against the
conformance suite's mock identity provider and authorization server (``scripts/conformance.py --client``)."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import parse_qs

import httpx2
import pytest
from mcp.shared.auth import JWT_BEARER_GRANT_TYPE

from bosun.catalog.models import RemoteSource
from bosun.gateway.oauth import (
    ID_JAG,
    IdentityProvider,
    NeedsAuthorization,
    Registered,
    SecretTokens,
    _metadata,
    exchange_id_token,
)
from bosun.secrets.store import SecretStore

pytestmark = pytest.mark.anyio

ACCESS = "urn:ietf:params:oauth:token-type:access_token"
IDP = IdentityProvider("https://idp.example.com/oauth2/token", "bosun at idp", "acme-id-token", "s3cret:&=")


async def _exchange(idp: IdentityProvider, answer: httpx2.Response) -> tuple[str, httpx2.Request]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answer

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        grant = await exchange_id_token(
            http, idp, "eyJ.id.token", "https://as.example.com/", "https://mcp.example.com/mcp"
        )
    return grant, seen[0]


async def test_the_id_token_is_exchanged_for_an_id_jag_for_that_server_and_resource() -> None:
    grant, request = await _exchange(IDP, httpx2.Response(200, json={"access_token": "jag", "issued_token_type": ID_JAG,
                                                                     "token_type": "N_A"}))  # fmt: skip
    assert grant == "jag"
    assert str(request.url) == IDP.token_endpoint and request.method == "POST"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "eyJ.id.token",
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "requested_token_type": ID_JAG,
        "audience": "https://as.example.com/",
        "resource": "https://mcp.example.com/mcp",
    }
    # A confidential client authenticates with Basic, each part form-encoded first (RFC 6749 2.3.1).
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == "bosun%20at%20idp:s3cret%3A%26%3D"


async def test_a_public_idp_client_names_itself_in_the_form() -> None:
    public = IdentityProvider(IDP.token_endpoint, "bosun", "acme-id-token")
    _, request = await _exchange(
        public, httpx2.Response(200, json={"access_token": "jag", "issued_token_type": ID_JAG})
    )
    assert "authorization" not in request.headers
    assert parse_qs(request.content.decode())["client_id"] == ["bosun"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (httpx2.Response(400, json={"error": "invalid_grant", "error_description": "ID token expired"}),
         "refused the ID token in secret 'acme-id-token' \\(ID token expired\\); sign in again"),
        (httpx2.Response(401, text="<html>no</html>"), "refused .*\\(HTTP 401\\)"),
        (httpx2.Response(200, json={"access_token": "at", "issued_token_type": ACCESS}), "without an ID-JAG"),
        (httpx2.Response(200, json=["not", "an", "object"]), "without an ID-JAG"),
    ],
)  # fmt: skip
async def test_a_refusal_or_a_wrong_answer_says_what_to_do(answer: httpx2.Response, why: str) -> None:
    with pytest.raises(NeedsAuthorization, match=why):
        await _exchange(IDP, answer)


def test_the_identity_provider_is_https_or_on_this_machine() -> None:
    IdentityProvider("http://127.0.0.1:8080/token", "bosun", "t")
    for url in ("http://idp.example.com/token", "ftp://idp.example.com/token", "idp.example.com/token"):
        with pytest.raises(ValueError, match="must be an https:// URL"):
            IdentityProvider(url, "bosun", "t")


def test_an_identity_assertion_client_is_confidential_and_only_takes_the_jwt_bearer_grant(tmp_path: Path) -> None:
    source = RemoteSource.model_validate({"type": "remote", "url": "https://mcp.example.com/mcp", "auth": "oauth"})
    info = Registered("acme", "secret", identity=IDP).information(_metadata(source, "http://127.0.0.1/callback"))
    assert info.grant_types == [JWT_BEARER_GRANT_TYPE] and info.redirect_uris is None
    with pytest.raises(ValueError, match="authenticates with its secret"):
        Registered("acme", identity=IDP)
    with pytest.raises(ValueError, match="only that grant"):
        Registered("acme", "secret", machine=True, identity=IDP)
    # Kept with the tokens, so the gateway can trade the ID token itself when a token runs out.
    tokens = SecretTokens(SecretStore(tmp_path), "acme")
    assert tokens.identity_provider() is None
    tokens.set_identity_provider(IDP)
    assert tokens.identity_provider() == IDP
    tokens.forget()
    assert tokens.identity_provider() is None
