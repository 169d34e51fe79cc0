"""The text inside MCP results, read and rewritten the same way for tool calls, prompts and resources:
what flow control remembers and screening scans is exactly what the client would read."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import mcp.types as types

Result = TypeVar("Result", types.CallToolResult, types.GetPromptResult, types.ReadResourceResult)


def _block_text(block: object) -> str | None:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
        return block.resource.text
    if isinstance(block, types.ResourceLink):
        return str(block.uri)
    return None


def text_of(result: types.CallToolResult | types.GetPromptResult | types.ReadResourceResult) -> str:
    """Everything a result says, as one text: text blocks, text resources, links and structured content."""
    if isinstance(result, types.ReadResourceResult):
        parts = [c.text for c in result.contents if isinstance(c, types.TextResourceContents)]
    elif isinstance(result, types.GetPromptResult):
        parts = [t for m in result.messages if (t := _block_text(m.content)) is not None]
    else:
        parts = [t for b in result.content if (t := _block_text(b)) is not None]
        if result.structured_content is not None:
            parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


def map_texts(result: Result, fn: Callable[[str], str]) -> Result:
    """A copy of ``result`` with ``fn`` applied to each text a client reads as prose (not structured content)."""

    def block(b: types.ContentBlock) -> types.ContentBlock:
        if isinstance(b, types.TextContent):
            return b.model_copy(update={"text": fn(b.text)})
        if isinstance(b, types.EmbeddedResource) and isinstance(b.resource, types.TextResourceContents):
            return b.model_copy(update={"resource": b.resource.model_copy(update={"text": fn(b.resource.text)})})
        return b

    if isinstance(result, types.ReadResourceResult):
        contents = [c.model_copy(update={"text": fn(c.text)}) if isinstance(c, types.TextResourceContents) else c
                    for c in result.contents]  # fmt: skip
        return result.model_copy(update={"contents": contents})
    if isinstance(result, types.GetPromptResult):
        messages = [m.model_copy(update={"content": block(m.content)}) for m in result.messages]
        return result.model_copy(update={"messages": messages})
    return result.model_copy(update={"content": [block(b) for b in result.content]})
