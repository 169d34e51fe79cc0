from __future__ import annotations

import pytest
from mcp.shared.tool_name_validation import validate_tool_name

from bosun.gateway import names


def test_plain_names_are_prefixed_and_split_back() -> None:
    full = names.namespaced("memory", "create_entities")
    assert full == "memory__create_entities"
    assert names.split(full) == ("memory", "create_entities")


def test_tool_names_with_the_separator_split_at_the_server() -> None:
    assert names.split(names.namespaced("git", "a__b")) == ("git", "a__b")


@pytest.mark.parametrize("tool", ["has space", "émoji✨", "x" * 200, "slash/name"])
def test_rewritten_names_are_valid_mcp_names_and_distinct(tool: str) -> None:
    full = names.namespaced("srv", tool)
    assert validate_tool_name(full).is_valid
    assert len(full) <= names.MAX_NAME
    assert full != names.namespaced("srv", tool + "!")


def test_two_servers_never_collide() -> None:
    assert names.namespaced("a", "b__c") != names.namespaced("a-b", "c")


@pytest.mark.parametrize("bad", ["nosep", "__tool", "server__"])
def test_split_rejects_names_without_a_server(bad: str) -> None:
    with pytest.raises(ValueError, match="not a gateway tool name"):
        names.split(bad)
