from __future__ import annotations

import pytest

from bosun.egress.rules import Allowlist, Pattern, refusal


@pytest.mark.parametrize(
    ("pattern", "host", "port", "ok"),
    [
        ("api.example.com", "api.example.com", 443, True),
        ("api.example.com", "API.Example.com.", 80, True),
        ("api.example.com", "api.example.com", 8443, False),
        ("api.example.com:8443", "api.example.com", 8443, True),
        ("api.example.com:8443", "api.example.com", 443, False),
        ("*.example.com", "a.example.com", 443, True),
        ("*.example.com", "a.b.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),  # the apex is not a subdomain
        ("*.example.com", "evilexample.com", 443, False),
        ("*.example.com", "example.com.evil.test", 443, False),
        ("api.example.com", "api.example.com.evil.test", 443, False),
    ],
)
def test_pattern_matching(pattern: str, host: str, port: int, ok: bool) -> None:
    assert Pattern.parse(pattern).matches(host, port) is ok


@pytest.mark.parametrize("bad", ["", ":443", "host:http", "host:70000"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Pattern.parse(bad)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("10.1.2.3", "private"),
        ("172.17.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason


def test_public_addresses_pass_and_only_explicit_private_literals() -> None:
    assert refusal("93.184.215.14") is None
    assert refusal("10.1.2.3", explicitly_allowed_literal=True) is None
    assert refusal("127.0.0.1", explicitly_allowed_literal=True) is not None
    assert refusal("169.254.169.254", explicitly_allowed_literal=True) is not None


def test_allowlist_knows_its_own_literals() -> None:
    allow = Allowlist(["10.0.0.5:8080", "api.example.com"])
    assert allow.names_literal("10.0.0.5")
    assert not allow.names_literal("10.0.0.6")
    assert not allow.names_literal("api.example.com")
