"""Agent identity: who is calling. Each agent has a token (only its hash is stored) and groups.

The operator (whoever holds ``BOSUN_HOME/gateway.token``) is the agent ``operator``; every other
caller is an agent added with ``bosun agent add``. The file is re-read when it changes, so a new or
revoked agent takes effect on a running gateway at its next request; a change to an agent's groups,
within ``GROUPS_FRESH_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bosun.files import YamlFile
from bosun.gateway.oidc import OidcError, OidcVerifier, looks_like_jwt

log = logging.getLogger("bosun.gateway")

OPERATOR = "operator"
_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# How old the agents file's groups may be when a call's policy reads them: a stat of the file on every call was
# 2.5 us here, twice per call for an agent (authenticated, then its groups read), for a file that seldom changes.
GROUPS_FRESH_S = 1.0


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a plain hash is enough; a slow KDF would only tax every request.
    return hashlib.sha256(token.encode()).hexdigest()


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    groups: list[str] = []
    token_sha256: str
    created: datetime
    revoked: datetime | None = None


class Agents(YamlFile):
    model_config = ConfigDict(extra="forbid")

    agents: list[Agent] = Field(default_factory=list)

    def get(self, name: str) -> Agent | None:
        return next((a for a in self.agents if a.name == name), None)

    def add(self, name: str, groups: list[str]) -> str:
        """Create the agent and return its token: the only time the token exists in clear."""
        if name == OPERATOR:
            raise ValueError(f"{OPERATOR!r} is the holder of the gateway token; choose another name")
        if self.get(name) is not None:
            raise ValueError(f"an agent named {name!r} exists (revoke it first to replace its token)")
        token = "bsn_" + secrets.token_urlsafe(32)
        self.agents.append(Agent(name=name, groups=groups, token_sha256=token_hash(token), created=datetime.now(UTC)))
        return token

    def revoke(self, name: str) -> None:
        agent = self.get(name)
        if agent is None:
            raise ValueError(f"no agent named {name!r}; see `bosun agent ls`")
        self.agents = [a for a in self.agents if a.name != name] + [
            agent.model_copy(update={"revoked": datetime.now(UTC)})
        ]

    def by_token(self, token: str) -> Agent | None:
        digest = token_hash(token)
        for agent in self.agents:
            if agent.revoked is None and hmac.compare_digest(agent.token_sha256, digest):
                return agent
        return None


class Directory:
    """Who a bearer token names: an agent of the agents file (re-read only when it changed on disk), or,
    when OIDC is configured, the subject of a JWT the identity provider signed."""

    def __init__(self, path: Path, oidc: OidcVerifier | None = None) -> None:
        self.path = path
        self.oidc = oidc
        self._stamp: int | None = None
        self._checked = -GROUPS_FRESH_S  # when the file was last looked at (monotonic)
        self._agents = Agents()
        self._claimed: dict[str, tuple[str, ...]] = {}  # an OIDC agent's groups, as its last token said

    def _current(self, fresh_s: float = 0.0) -> Agents:
        """The agents file's content, looked at again unless it was less than ``fresh_s`` ago."""
        now = time.monotonic()
        if now - self._checked < fresh_s:
            return self._agents
        self._checked = now
        try:  # os.stat, not Path.exists then Path.stat: this runs for every authenticated request
            stamp: int | None = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._agents, self._stamp = Agents.load(self.path), stamp
        return self._agents

    def authenticate(self, token: str) -> str | None:
        """The agent a bearer token names, or None."""
        if self.oidc is not None and looks_like_jwt(token):
            try:
                identity = self.oidc.verify(token)
            except OidcError as e:
                log.warning("bearer JWT refused: %s", e)
                return None
            if identity.agent == OPERATOR or self._current().get(identity.agent) is not None:
                # Two sources for one name would let the identity provider speak for a local agent.
                log.warning("bearer JWT refused: its subject %r is a local agent's name", identity.agent)
                return None
            self._claimed[identity.agent] = identity.groups
            return identity.agent
        agent = self._current().by_token(token)
        return agent.name if agent else None

    def groups(self, name: str) -> list[str]:
        agent = self._current(GROUPS_FRESH_S).get(name)
        return list(agent.groups) if agent else list(self._claimed.get(name, ()))
