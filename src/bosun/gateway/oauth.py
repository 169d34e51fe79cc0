"""OAuth 2.1 for remote servers, on the SDK's client (``OAuthClientProvider``): discovery from the
server's protected-resource metadata, dynamic client registration, PKCE, and refresh.

Bosun decides three things around it:

- where tokens live: the secret store, the access and refresh tokens each a secret of its own, so
  redaction finds either anywhere it might surface, and nothing about them reaches a client;
- how a person authorizes: ``bosun server auth NAME`` prints the authorization URL and takes the
  answer on a loopback callback, once, ahead of use; as a client it registers itself, or uses the
  client id (and secret) an administrator registered with an authorization server that has no
  dynamic registration. A client registered for the client-credentials grant needs no person:
  ``bosun server auth`` checks it once and pins the authorization server it met, and the gateway
  asks that server for tokens itself;
- enterprise-managed authorization (SEP-990): where a company's identity provider vouches for the
  gateway, ``bosun server auth --id-token`` pins the authorization server the remote names, and the
  gateway trades the kept ID token at the identity provider (RFC 8693) for an identity assertion grant
  (ID-JAG), which that server takes (RFC 7523) instead of a person's consent;
- what the gateway does without a usable token: it refreshes it when it can, and otherwise fails
  the connection with the command to run. It never starts an interactive flow itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import parse_qs, quote, urlsplit

import httpx2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    validate_metadata_issuer,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    JWT_BEARER_GRANT_TYPE,
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
)
from mcp.shared.exceptions import MCPDeprecationWarning

from bosun.catalog.models import RemoteSource
from bosun.gateway.remote import tls_context
from bosun.secrets.store import SecretError, SecretStore

CALLBACK_PATH = "/callback"
CLIENT_CREDENTIALS = "client_credentials"
CALLBACK_TIMEOUT_S = 300.0
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class NeedsAuthorization(RuntimeError):
    """No usable token: a person must authorize again."""


@dataclass(frozen=True)
class IdentityProvider:
    """The company's identity provider, SEP-990's first leg: where the ID token kept in the secret store
    (``id_token_secret``, read afresh at each exchange, so whatever signs in again can replace it) is
    exchanged for an ID-JAG, as the client ``client_id`` (with its secret, when it has one)."""

    token_endpoint: str
    client_id: str
    id_token_secret: str
    client_secret: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.token_endpoint)
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
        ):
            raise ValueError(
                f"the identity provider's token endpoint must be an https:// URL, not {self.token_endpoint!r}"
            )


async def exchange_id_token(
    http: httpx2.AsyncClient, idp: IdentityProvider, id_token: str, audience: str, resource: str
) -> str:
    """RFC 8693 token exchange at the identity provider: the ID token for an ID-JAG whose audience is the
    remote's authorization server and whose resource is the remote."""
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": id_token, "subject_token_type": ID_TOKEN,
            "requested_token_type": ID_JAG, "audience": audience, "resource": resource}  # fmt: skip
    headers = {}
    if idp.client_secret:  # RFC 6749 2.3.1: each part form-encoded, then the pair in Basic
        pair = f"{quote(idp.client_id, safe='')}:{quote(idp.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        data["client_id"] = idp.client_id
    response = await http.post(idp.token_endpoint, data=data, headers=headers)
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status_code != 200:
        why = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
        raise NeedsAuthorization(f"the identity provider refused the ID token in secret {idp.id_token_secret!r} "
                                 f"({str(why)[:300]}); sign in again and replace it")  # fmt: skip
    grant = body.get("access_token")
    if body.get("issued_token_type") != ID_JAG or not isinstance(grant, str) or not grant:
        raise NeedsAuthorization("the identity provider answered the token exchange without an ID-JAG")
    return grant


@dataclass(frozen=True)
class Registered:
    """A client registered with the authorization server ahead of time, used instead of registering one.
    With a secret it is a confidential client and authenticates at the token endpoint with HTTP Basic;
    with a private key (PEM), by a JWT it signs (``private_key_jwt``). ``machine`` clients get their
    tokens with the client-credentials grant, and need one or the other."""

    client_id: str
    client_secret: str | None = None
    private_key: str | None = None
    machine: bool = False
    identity: IdentityProvider | None = None  # gets its tokens with ID-JAGs from this identity provider (SEP-990)

    def __post_init__(self) -> None:
        if self.machine and not (self.client_secret or self.private_key):
            raise ValueError("a client-credentials client needs its secret or its private key")
        if self.identity is not None and (self.machine or self.private_key or not self.client_secret):
            raise ValueError("an identity-assertion client authenticates with its secret, and only that grant")

    def information(self, metadata: OAuthClientMetadata) -> OAuthClientInformationFull:
        method = "private_key_jwt" if self.private_key else "client_secret_basic" if self.client_secret else "none"
        fields = metadata.model_dump(exclude={"token_endpoint_auth_method"})
        if self.machine:
            fields |= {"redirect_uris": None, "grant_types": [CLIENT_CREDENTIALS], "response_types": []}
        if self.identity is not None:
            fields |= {"redirect_uris": None, "grant_types": [JWT_BEARER_GRANT_TYPE], "response_types": []}
        return OAuthClientInformationFull(**fields, client_id=self.client_id, client_secret=self.client_secret,
                                          token_endpoint_auth_method=method)  # fmt: skip


class SecretTokens:
    """The SDK's ``TokenStorage`` over the secret store, for one server."""

    def __init__(self, store: SecretStore, server: str) -> None:
        self._store = store
        self._names = {k: f"oauth-{server}-{k}" for k in ("access", "refresh", "grant", "client", "key", "idp")}

    def _get(self, kind: str) -> str | None:
        try:
            return self._store.get(self._names[kind])
        except SecretError:
            return None

    async def get_tokens(self) -> OAuthToken | None:
        access, grant = self._get("access"), self._get("grant")
        if access is None or grant is None:
            return None
        meta = json.loads(grant)
        expires_at = meta.get("expires_at")
        remaining = max(0, int(expires_at - time.time())) if expires_at is not None else None
        return OAuthToken(access_token=access, refresh_token=self._get("refresh"), scope=meta.get("scope"),
                          expires_in=remaining)  # fmt: skip

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._store.set(self._names["access"], tokens.access_token)
        if tokens.refresh_token:
            self._store.set(self._names["refresh"], tokens.refresh_token)
        expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None
        self._store.set(self._names["grant"], json.dumps({"scope": tokens.scope, "expires_at": expires_at}))

    def private_key(self) -> str | None:
        """A ``private_key_jwt`` client's signing key (PEM)."""
        return self._get("key")

    def set_private_key(self, pem: str) -> None:
        self._store.set(self._names["key"], pem)

    def identity_provider(self) -> IdentityProvider | None:
        """An identity-assertion client's identity provider."""
        raw = self._get("idp")
        return IdentityProvider(**json.loads(raw)) if raw else None

    def set_identity_provider(self, idp: IdentityProvider) -> None:
        self._store.set(self._names["idp"], json.dumps(asdict(idp)))

    def client_info(self) -> OAuthClientInformationFull | None:
        raw = self._get("client")
        return OAuthClientInformationFull.model_validate_json(raw) if raw else None

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info()

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._store.set(self._names["client"], client_info.model_dump_json(exclude_none=True))

    def forget(self) -> None:
        for name in self._names.values():
            self._store.remove(name)


class _KnownExpiry(OAuthClientProvider):
    async def _initialize(self) -> None:
        # The SDK takes a stored token as just issued. Told its real expiry, it refreshes (or asks the
        # client-credentials grant for) an expired one instead of sending it and meeting a 401.
        await super()._initialize()
        if self.context.current_tokens is not None:
            self.context.update_token_expiry(self.context.current_tokens)


class _Provider(_KnownExpiry):
    pass


class _Machine(_KnownExpiry, ClientCredentialsOAuthProvider):
    pass


class _SigningMachine(_KnownExpiry, PrivateKeyJWTOAuthProvider):
    pass


def _signing_algorithm(pem: str) -> str:
    """The JWS algorithm a private key signs with (RFC 7518): ES256/384/512 by curve, RS256, or EdDSA."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    algorithm = None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
    elif isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    if algorithm is None:
        raise ValueError("this key cannot sign client assertions; use an EC (P-256/384/521), RSA or Ed25519 key")
    return algorithm


def _machine(source: RemoteSource, tokens: SecretTokens, info: OAuthClientInformationFull) -> OAuthClientProvider:
    with warnings.catch_warnings():
        # Without an issuer the SDK warns (deprecated): that is the first check, by `bosun server auth`,
        # which learns the issuer and keeps it, so that the gateway shows the client's credentials to that
        # server only.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        if info.token_endpoint_auth_method == "private_key_jwt":
            pem = tokens.private_key()
            if pem is None:
                raise NeedsAuthorization(f"the private key of client {info.client_id} is gone from the secret store")
            signed = SignedJWTParameters(issuer=info.client_id, subject=info.client_id, signing_key=pem,
                                         signing_algorithm=_signing_algorithm(pem))  # fmt: skip
            return _SigningMachine(source.url, tokens, info.client_id, signed.create_assertion_provider(), info.scope,
                                   info.issuer)  # fmt: skip
        method: Literal["client_secret_basic", "client_secret_post"] = (
            "client_secret_post" if info.token_endpoint_auth_method == "client_secret_post" else "client_secret_basic"
        )
        return _Machine(source.url, tokens, info.client_id, info.client_secret or "", method, info.scope,
                        info.issuer)  # fmt: skip


def _asserting(
    store: SecretStore, source: RemoteSource, tokens: SecretTokens, info: OAuthClientInformationFull,
    idp: IdentityProvider,
) -> IdentityAssertionOAuthProvider:  # fmt: skip
    """The SDK's SEP-990 provider, its ID-JAG from ``idp`` each time it needs a token. The authorization
    server is the one ``bosun server auth`` met and pinned (the SDK's provider asks only that one)."""

    async def assertion(audience: str, resource: str) -> str:
        try:
            id_token = store.get(idp.id_token_secret)
        except SecretError as e:
            raise NeedsAuthorization(f"the ID token for {source.url} is gone: {e}") from None
        async with httpx2.AsyncClient(timeout=30, verify=tls_context(source)) as http:
            return await exchange_id_token(http, idp, id_token, audience, resource)

    method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_post" if info.token_endpoint_auth_method == "client_secret_post" else "client_secret_basic"
    )
    return IdentityAssertionOAuthProvider(source.url, tokens, info.client_id or "", info.client_secret or "",
                                          info.issuer or "", assertion, info.scope, method)  # fmt: skip


async def _authorization_server(source: RemoteSource) -> OAuthMetadata:
    """The authorization server the remote names in its protected-resource metadata (RFC 9728), found
    once by ``bosun server auth`` and pinned: an identity assertion is then shown to that server only."""
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": "bosun", "version": "0"}}}  # fmt: skip
    async with httpx2.AsyncClient(timeout=30, verify=tls_context(source)) as http:
        probe = await http.post(source.url, json=hello, headers={"Accept": "application/json, text/event-stream"})
        if probe.status_code != 401:
            raise NeedsAuthorization(f"{source.url} did not ask for authorization (HTTP {probe.status_code})")
        where = extract_resource_metadata_from_www_auth(probe)
        for url in build_protected_resource_metadata_discovery_urls(where, source.url):
            resource = await handle_protected_resource_response(await http.get(url))
            if resource is not None:
                break
        else:
            raise NeedsAuthorization(
                f"{source.url} publishes no protected-resource metadata naming its authorization server"
            )
        issuer = str(resource.authorization_servers[0])
        for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, source.url):
            go_on, metadata = await handle_auth_metadata_response(await http.get(url))
            if metadata is not None:
                validate_metadata_issuer(metadata, issuer)  # RFC 8414 3.3: the server it names, no other
                return metadata
            if not go_on:
                break
    raise NeedsAuthorization(f"the authorization server {issuer} publishes no metadata")


def _metadata(source: RemoteSource, redirect_uri: str) -> OAuthClientMetadata:
    return OAuthClientMetadata.model_validate(
        {
            "client_name": "Bosun gateway",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": " ".join(source.scopes) or None,
        }
    )


def gateway_auth(store: SecretStore, server: str, source: RemoteSource) -> httpx2.Auth:
    """Auth for the gateway's connection: stored tokens, refreshed (or, for a client-credentials or an
    identity-assertion client, asked for again) as needed; never an interactive flow."""
    tokens = SecretTokens(store, server)
    info = tokens.client_info()
    if info is not None and CLIENT_CREDENTIALS in info.grant_types:
        return _machine(source, tokens, info)
    if info is not None and JWT_BEARER_GRANT_TYPE in info.grant_types and (idp := tokens.identity_provider()):
        return _asserting(store, source, tokens, info, idp)

    why = f"{server} needs authorizing: run `bosun server auth {server}`"

    async def refuse(_: str) -> None:
        raise NeedsAuthorization(why)

    async def no_callback() -> AuthorizationCodeResult:
        # Never reached (``refuse`` raises first); the SDK wants both handlers before it starts a flow.
        raise NeedsAuthorization(why)

    # Refresh needs the registration, not a redirect; the URI is the one registered at `bosun server auth`.
    redirect = f"http://127.0.0.1{CALLBACK_PATH}"
    return _Provider(source.url, _metadata(source, redirect), tokens, refuse, no_callback)


@contextlib.asynccontextmanager
async def _callback() -> AsyncIterator[tuple[str, Callable[[], Awaitable[AuthorizationCodeResult]]]]:
    """A loopback listener for the authorization server's redirect: its URL, and a wait for the answer."""
    answer: asyncio.Future[AuthorizationCodeResult] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
            target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
            parts = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            ok = parts.path == CALLBACK_PATH and "code" in query
            if ok and not answer.done():
                answer.set_result(AuthorizationCodeResult(code=query["code"], state=query.get("state"),
                                                          iss=query.get("iss")))  # fmt: skip
            elif parts.path == CALLBACK_PATH and not answer.done():
                answer.set_exception(NeedsAuthorization(f"authorization refused: {query.get('error', 'no code')}"))
            body = b"Bosun: authorized; you can close this window." if ok else b"Bosun: authorization failed."
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def wait() -> AuthorizationCodeResult:
        return await asyncio.wait_for(answer, CALLBACK_TIMEOUT_S)

    async with server:
        yield f"http://127.0.0.1:{port}{CALLBACK_PATH}", wait


async def authorize(
    store: SecretStore, server: str, source: RemoteSource, open_url: Callable[[str], Awaitable[None]],
    registered: Registered | None = None,
) -> None:  # fmt: skip
    """The authorization code flow, once, with a person: ``open_url`` shows them the authorization URL;
    the tokens are kept for the gateway. Earlier tokens and registration are dropped first; with
    ``registered``, that client is used and none is registered. A client-credentials client needs no
    person: its first token is fetched, and the client kept with the issuer that gave it. Nor does an
    identity-assertion client: the authorization server the remote names is pinned first, and the
    first token is had with an ID-JAG from the identity provider."""
    tokens = SecretTokens(store, server)
    tokens.forget()
    async with _callback() as (redirect, wait):
        metadata = _metadata(source, redirect)
        info = registered.information(metadata) if registered is not None else None
        auth: httpx2.Auth
        if registered is not None and registered.identity is not None and info is not None:
            server_metadata = await _authorization_server(source)
            basic = "client_secret_basic" in (server_metadata.token_endpoint_auth_methods_supported or [])
            info = info.model_copy(update={"issuer": str(server_metadata.issuer),
                                           "token_endpoint_auth_method": "client_secret_basic" if basic
                                           else "client_secret_post"})  # fmt: skip
            await tokens.set_client_info(info)
            tokens.set_identity_provider(registered.identity)
            auth = _asserting(store, source, tokens, info, registered.identity)
        elif info is not None and CLIENT_CREDENTIALS in info.grant_types:
            if registered is not None and registered.private_key:
                tokens.set_private_key(registered.private_key)
            auth = _machine(source, tokens, info)
        else:
            if info is not None:
                await tokens.set_client_info(info)
            auth = _Provider(source.url, metadata, tokens, open_url, wait)
        async with (
            httpx2.AsyncClient(
                auth=auth, timeout=httpx2.Timeout(30, read=CALLBACK_TIMEOUT_S), verify=tls_context(source)
            ) as http,
            streamable_http_client(source.url, http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()  # the first request meets the 401 that starts the flow
    if info is not None and CLIENT_CREDENTIALS in info.grant_types and isinstance(auth, OAuthClientProvider):
        met = auth.context.oauth_metadata
        await tokens.set_client_info(info.model_copy(update={"issuer": str(met.issuer) if met else None}))
