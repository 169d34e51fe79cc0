"""OIDC/JWT bearer tokens: agents your identity provider vouches for, next to Bosun's own tokens.

A token is accepted only if its signature verifies against a key of the configured JWKS file (by
``kid``), with an allowed asymmetric algorithm, and it names the configured issuer and audience
and has not expired. A token issued for another audience is refused, so a token meant for some
other service cannot be replayed here; and the gateway never passes a client's token upstream.
The agent is the value of ``agent_claim``; its groups come from ``groups_claim``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import jwt

from bosun.config import OidcSettings

log = logging.getLogger("bosun.gateway")
LEEWAY_S = 30  # clock skew between the identity provider and this host


class OidcError(ValueError):
    """The token is not acceptable; ``str()`` says why (logged, never shown to the caller)."""


@dataclass(frozen=True)
class Identity:
    agent: str
    groups: tuple[str, ...]


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._stamp: int | None = None
        self._keys: dict[str, jwt.PyJWK] = {}

    def keys(self) -> dict[str, jwt.PyJWK]:
        """The JWKS file's usable keys by ``kid``, re-read when the file changes (keys rotate)."""
        path = Path(self.settings.jwks_file)
        try:
            stamp = path.stat().st_mtime_ns
            if stamp != self._stamp:
                keys = jwt.PyJWKSet.from_json(path.read_text()).keys
                self._keys, self._stamp = {k.key_id or "": k for k in keys}, stamp
        except (OSError, jwt.PyJWTError, json.JSONDecodeError) as e:
            raise OidcError(f"cannot read the JWKS file {path}: {e}") from None
        return self._keys

    def _key(self, kid: str | None) -> jwt.PyJWK:
        keys = self.keys()
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        key = keys.get(kid or "")
        if key is None:
            raise OidcError(f"no key with kid {kid!r} in {self.settings.jwks_file}")
        return key

    def verify(self, token: str) -> Identity:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._key(header.get("kid")),
                algorithms=s.algorithms,  # from the configuration only: the token's own `alg` picks nothing
                audience=s.audience,
                issuer=s.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", s.agent_claim]},
            )
        except jwt.PyJWTError as e:
            raise OidcError(str(e)) from None
        agent = claims.get(s.agent_claim)
        if not isinstance(agent, str) or not agent or len(agent) > 200:
            raise OidcError(f"claim {s.agent_claim!r} is not a name")
        groups = claims.get(s.groups_claim, []) if s.groups_claim else []
        if isinstance(groups, str):
            groups = groups.split()
        return Identity(agent, tuple(str(g) for g in groups if isinstance(g, str)))
