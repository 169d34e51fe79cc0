"""Agent kits: what each coding agent needs in its sandbox, and nothing more.

A kit names the agent's npm package at a pinned version (installed into its image), the API its key is
bound to, the variables the agent reads its key and base URL from, and where the agent reads the
configuration an administrator owns, so Bosun can point it at the gateway. The versions are pinned so a
sandbox is the same on every machine; moving one is a change to this file, reviewed like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

GATEWAY_SOCKET = "/run/bosun/gateway.sock"  # the gateway, as the sandbox sees it (see sandbox.relay)
# How an agent in the sandbox starts "the bosun MCP server": socat joins its stdio to the gateway's socket.
BRIDGE = ["socat", "STDIO", f"UNIX-CONNECT:{GATEWAY_SOCKET}"]


@dataclass(frozen=True)
class ApiKey:
    """The agent's API key: kept in Bosun's secret store, put on requests by the egress proxy only."""

    secret: str  # its name in the secret store (`bosun secret set NAME`)
    env: str  # the variable the agent reads its key from: in the sandbox it holds a sentinel
    base_url_env: str  # the variable that points the agent at its API: the proxy's route for the key
    upstream: str  # the real API, https only
    header: str = "x-api-key"
    prefix: str = ""


def claude_managed(_base_url: str | None, gateway: bool) -> str:
    """Claude Code's managed MCP file: the gateway as its one server (its base URL comes from the environment)."""
    server = {"type": "stdio", "command": BRIDGE[0], "args": BRIDGE[1:]}
    return json.dumps({"mcpServers": {"bosun": server}}) if gateway else ""


def codex_managed(base_url: str | None, gateway: bool) -> str:
    """Codex's managed configuration: its base URL (it reads no variable for it) and the gateway."""
    lines = [f"openai_base_url = {json.dumps(base_url)}"] if base_url else []
    if gateway:
        lines += ["[mcp_servers.bosun]", f"command = {json.dumps(BRIDGE[0])}", f"args = {json.dumps(BRIDGE[1:])}"]
    return "\n".join(lines) + "\n" if lines else ""


@dataclass(frozen=True)
class Kit:
    name: str
    description: str
    package: str = ""  # npm spec, pinned
    command: tuple[str, ...] = ("bash",)
    api: ApiKey | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Where the agent reads a configuration the administrator owns (mounted read-only), and what Bosun writes
    # there for one session, given the API's base URL and whether the gateway is wired in ("" for nothing).
    managed_file: str = ""
    managed: Callable[[str | None, bool], str] = lambda _base_url, _gateway: ""


KITS = {
    kit.name: kit
    for kit in (
        Kit("shell", "git, Python, Node and bash; bring your own agent"),
        Kit(
            "claude",
            "Claude Code",
            package="@anthropic-ai/claude-code@2.1.331",
            command=("claude",),
            api=ApiKey("anthropic-api-key", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            # Its installation is read-only, and hosts beyond its API are not allowed unless the user adds them:
            # updates, telemetry and error reports would only wait for a refusal. It also waits for its MCP
            # servers before the first model request: by default it does not, and a first turn sent while the
            # gateway's containers start has none of the governed tools (seen: the model answered without them).
            env={
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "MCP_CONNECTION_NONBLOCKING": "false",
            },
            # Claude Code's managed MCP file on Linux: it takes precedence over the user's and project's, and the
            # agent cannot edit it, so its tools come through the gateway only.
            managed_file="/etc/claude-code/managed-mcp.json",
            managed=claude_managed,
        ),
        Kit(
            "codex",
            "OpenAI Codex CLI",
            package="@openai/codex@0.169.0",
            command=("codex",),
            api=ApiKey(
                "openai-api-key",
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                "https://api.openai.com/v1",
                header="Authorization",
                prefix="Bearer ",
            ),
            # Codex's managed configuration layer: above the user's ~/.codex/config.toml, which stays theirs. Codex
            # takes its base URL from configuration (openai_base_url), not from OPENAI_BASE_URL.
            managed_file="/etc/codex/managed_config.toml",
            managed=codex_managed,
        ),
    )
}
