"""Bosun: MCP servers and AI agents in hardened containers behind one governed gateway."""

__version__ = "0.1.0"
