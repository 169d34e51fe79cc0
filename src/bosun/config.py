"""The user's settings in ``BOSUN_HOME/config.yaml``: which servers are enabled, with which grants."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bosun.catalog.models import Entry
from bosun.files import YamlFile


class ConfigError(ValueError):
    pass


# Host paths no server should see unless the user says so explicitly, with what each exposes.
_SENSITIVE_IN_HOME = {
    ".ssh": "SSH keys",
    ".aws": "AWS credentials",
    ".azure": "Azure credentials",
    ".config/gcloud": "Google Cloud credentials",
    ".kube": "Kubernetes credentials",
    ".docker": "Docker registry credentials",
    ".gnupg": "GPG keys",
    ".netrc": "stored passwords",
    ".git-credentials": "Git passwords",
    ".config/gh": "GitHub tokens",
    ".npmrc": "npm tokens",
    ".pypirc": "PyPI tokens",
}
_SENSITIVE_ABSOLUTE = {
    "/etc": "system configuration and password hashes",
    "/var/run/docker.sock": "the Docker socket (root on the host)",
    "/run/docker.sock": "the Docker socket (root on the host)",
    "/proc": "host processes",
    "/sys": "host kernel interfaces",
    "/dev": "host devices",
    "/boot": "the host's boot files",
    "/root": "root's home",
}


def sensitive_reason(path: Path, bosun_home: Path | None = None) -> str | None:
    """Why mounting ``path`` would expose something sensitive, or None.

    A path is sensitive when it is, lies inside, or contains a sensitive location: granting
    ``~`` grants ``~/.ssh`` too.
    """
    path = path.resolve()
    if path == Path("/"):
        return "/ is the whole host filesystem"
    places = {Path(p): what for p, what in _SENSITIVE_ABSOLUTE.items()}
    places |= {(Path.home() / p): what for p, what in _SENSITIVE_IN_HOME.items()}
    if bosun_home is not None:
        places[bosun_home.resolve()] = "Bosun's own state (secrets, keys, tokens)"
    for place, what in places.items():
        if path == place or place in path.parents:
            return f"{path} is inside {place} ({what})"
        if path in place.parents:
            return f"{path} contains {place} ({what})"
    return None


class MountGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path
    target: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str, allow_sensitive: bool = False, bosun_home: Path | None = None) -> MountGrant:
        """``HOST:CONTAINER[:rw|:ro]``; read-only unless ``:rw``; the host path must exist.

        Sensitive host paths (credentials, the Docker socket, ``/``, ``/etc``) are refused unless
        ``allow_sensitive``, and the refusal says what the mount would expose.
        """
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise ConfigError(f"mount {text!r} must look like HOST_PATH:/container/path[:rw]")
        if len(parts) == 3 and parts[2] not in ("rw", "ro"):
            raise ConfigError(f"mount {text!r}: the mode must be rw or ro, not {parts[2]!r}")
        source = Path(parts[0]).expanduser().resolve()
        if not source.exists():
            raise ConfigError(f"mount {text!r}: host path {source} does not exist")
        reason = sensitive_reason(source, bosun_home)
        if reason and not allow_sensitive:
            raise ConfigError(
                f"mount {text!r} refused: {reason}. If the server really needs it, repeat with "
                "--allow-sensitive (the server will be able to read it)"
            )
        return cls(source=source, target=parts[1], read_only=not (len(parts) == 3 and parts[2] == "rw"))


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mounts: list[MountGrant] = []
    call_timeout_s: float | None = Field(default=None, gt=0)  # this server's own limit, over the gateway's


class VulnSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Findings at or above this severity stop a server from starting unless waived.
    block_at: Literal["low", "medium", "high", "critical", "never"] = "high"


JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class OidcSettings(BaseModel):
    """Accept JWTs from an identity provider as agents (``bosun agent oidc``)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)  # this gateway's audience: tokens for anything else are refused
    jwks_file: Path
    agent_claim: str = "sub"
    groups_claim: str | None = "groups"
    # Asymmetric only: with HS256 the public key in the JWKS file would be a shared secret.
    algorithms: list[JwtAlgorithm] = Field(default=["RS256", "ES256", "EdDSA"], min_length=1)


class Settings(YamlFile):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def invalid(cls, path: Path, problem: str) -> Exception:
        return ConfigError(f"{path}: {problem}")

    servers: dict[str, ServerSettings] = Field(default_factory=dict)
    vulnerabilities: VulnSettings = Field(default_factory=VulnSettings)
    # block: a tool whose description looks poisoned is withheld until approved; warn: only logged.
    poisoning: Literal["block", "warn"] = "block"
    oidc: OidcSettings | None = None
    # How the gateway reaches a Bosun-built server's stdin and stdout. fifo: two FIFOs it holds itself,
    # with no engine process relaying (the engine must share this host's files: a local Linux engine);
    # attach: the engine's attach stream, which works with any engine. Images Bosun did not build use attach.
    stdio: Literal["fifo", "attach"] = "fifo"
    # How long a tool call waits for its server's answer; then the server is told the call is cancelled and
    # the agent gets an error. A server whose tools run longer gets its own (servers.NAME.call_timeout_s).
    call_timeout_s: float = Field(default=300, gt=0)

    def enabled(self) -> list[str]:
        return sorted(name for name, s in self.servers.items() if s.enabled)

    def call_timeout(self, name: str) -> float:
        server = self.servers.get(name)
        return server.call_timeout_s if server is not None and server.call_timeout_s else self.call_timeout_s

    def is_enabled(self, name: str) -> bool:
        server = self.servers.get(name)
        return server is not None and server.enabled

    def enable(self, entry: Entry, mounts: list[MountGrant]) -> None:
        targets = {m.target for m in entry.mounts}
        for m in mounts:
            if m.target not in targets:
                asked = ", ".join(sorted(targets)) or "none"
                raise ConfigError(f"{entry.name} does not ask for a mount at {m.target} (it asks for: {asked})")
        current = self.servers.get(entry.name, ServerSettings())
        self.servers[entry.name] = ServerSettings(enabled=True, mounts=mounts or current.mounts)
