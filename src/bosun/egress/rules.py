"""What the egress proxy lets through: allowlist matching and the addresses it never connects to.

Standard library only: this module runs inside the proxy container, which has no pip packages.

Allowlist patterns (an entry's ``network.allow_hosts``):

- ``api.example.com:8443``: that host, that port only.
- ``api.example.com``: that host on ports 80 and 443.
- ``*.example.com[:port]``: any subdomain at any depth, **not** ``example.com`` itself. The apex
  is a different service often enough (and a takeover target) that it must be listed on its own.
- An IP literal (``10.0.0.5:8080``) is matched as written, never via DNS.

Whatever the allowlist says, a *name* is refused when it resolves to a loopback, private,
link-local, metadata or otherwise non-public address: that is how SSRF and DNS rebinding reach
internal services. Only an IP literal that the allowlist names explicitly may be private, and
never loopback, link-local or unspecified.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORTS = (80, 443)


# Cloud metadata endpoints that are not link-local everywhere.
class Denied(Exception):
    """The proxy refuses a destination; the message says why."""


_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


@dataclass(frozen=True)
class Pattern:
    host: str  # lower case; "*.example.com" keeps its star
    ports: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        text = text.strip().lower()
        host, _, port = text.partition(":")  # the catalog admits no IPv6 literals here
        if not host or (port and not port.isdigit()):
            raise ValueError(f"allow_hosts entry {text!r} must look like host[:port] or *.domain[:port]")
        ports = (int(port),) if port else DEFAULT_PORTS
        if any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"allow_hosts entry {text!r}: port out of range")
        return cls(host, ports)

    def matches(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if port not in self.ports:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host


class Allowlist:
    def __init__(self, entries: list[str]) -> None:
        self.patterns = [Pattern.parse(e) for e in entries]

    def allows(self, host: str, port: int) -> bool:
        return any(p.matches(host, port) for p in self.patterns)

    def names_literal(self, host: str) -> bool:
        """True when ``host`` is an IP literal written in the allowlist itself."""
        return any(p.host == host for p in self.patterns) and is_ip_literal(host)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def refusal(address: str, explicitly_allowed_literal: bool = False) -> str | None:
    """Why the proxy must not connect to ``address``, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local or ip in _METADATA:
        return "link-local or cloud metadata address"
    if ip.is_multicast:
        return "multicast address"
    if explicitly_allowed_literal and ip.is_private:
        return None
    if not ip.is_global:
        return "private or reserved address"
    return None
