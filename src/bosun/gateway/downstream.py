"""Relaying a server's requests (sampling, elicitation, roots) and logs to the client that caused them.

An upstream server may ask its client for an LLM completion, for user input, or for roots
while handling a call. Behind a gateway its client is the gateway; the real answer must come
from the agent whose request is being served, and from no other agent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp.types as types
from mcp.client.session import ClientRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel

log = logging.getLogger("bosun.gateway")

ResultT = TypeVar("ResultT", bound=BaseModel)


@dataclass(frozen=True)
class Downstream:
    """One client request being served: the client's session and that request's id."""

    session: ServerSession
    request_id: types.RequestId | None


class Relay:
    """The downstream requests in flight on one upstream, and the callbacks that answer for them.

    With one client in flight the route is certain. With several clients at once on a shared
    server it is not, and guessing would leak one agent's prompt to another: such requests are
    refused with a hint to give the server ``scope: session``.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self._in_flight: list[Downstream] = []

    @contextlib.contextmanager
    def serving(self, downstream: Downstream | None) -> Iterator[None]:
        if downstream is None:
            yield
            return
        self._in_flight.append(downstream)
        try:
            yield
        finally:
            self._in_flight.remove(downstream)

    def _target(self) -> Downstream | types.ErrorData:
        sessions = {id(d.session) for d in self._in_flight}
        if len(sessions) == 1:
            return self._in_flight[-1]
        why = "no client request is in flight" if not sessions else "several clients are calling it at once"
        return types.ErrorData(
            code=types.INVALID_REQUEST,
            message=f"{self.server}: cannot tell which client should answer ({why}); "
            "give this server `scope: session` in its catalog entry",
        )

    async def _ask(self, request: Any, result_type: type[ResultT]) -> ResultT | types.ErrorData:
        target = self._target()
        if isinstance(target, types.ErrorData):
            return target
        try:
            return await target.session.send_request(
                request, result_type, metadata=ServerMessageMetadata(related_request_id=target.request_id)
            )
        except MCPError as e:
            return e.error
        except Exception as e:
            return types.ErrorData(code=types.INTERNAL_ERROR, message=f"the client could not answer: {e}")

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        return await self._ask(types.CreateMessageRequest(params=params), types.CreateMessageResult)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await self._ask(types.ElicitRequest(params=params), types.ElicitResult)

    async def list_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        return await self._ask(types.ListRootsRequest(), types.ListRootsResult)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        target = self._target()
        if isinstance(target, types.ErrorData):
            log.info("server log: %s", params.data, extra={"server": self.server})
            return
        with contextlib.suppress(Exception):
            await target.session.send_log_message(
                params.level, params.data, params.logger or self.server, related_request_id=target.request_id
            )
