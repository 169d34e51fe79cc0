"""Relaying a server's requests (sampling, elicitation, roots) and logs to the client that caused them.

An upstream server may ask its client for an LLM completion, for user input, or for roots
while handling a call. Behind a gateway its client is the gateway; the real answer must come
from the agent whose request is being served, and from no other agent.

Two kinds of client exist. A handshake-era client takes such requests on a back channel, so
they are forwarded as they come. A 2026-07-28 client has no back channel: the call must end in
an ``InputRequiredResult`` and the client retries it with the answers. ``InputBridge`` keeps the
upstream call running across those round trips.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import mcp.types as types
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, ValidationError

log = logging.getLogger("bosun.gateway")

ResultT = TypeVar("ResultT", bound=BaseModel)
_SEVERITY: list[types.LoggingLevel] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class _Slot:
    def __init__(self, request: types.InputRequest) -> None:
        self.request = request
        self.sent = False
        self.answered = anyio.Event()
        self.response: types.InputResponse | None = None


class InputBridge:
    """One upstream call serving a 2026-era client across ``InputRequiredResult`` round trips."""

    def __init__(self, owner: str, answer_timeout_s: float = 600) -> None:
        self.owner = owner
        self.answer_timeout_s = answer_timeout_s
        self._slots: dict[str, _Slot] = {}
        self._wake = anyio.Event()
        self.outcome: types.CallToolResult | BaseException | None = None

    async def ask(self, request: types.InputRequest, result_type: type[ResultT]) -> ResultT | types.ErrorData:
        """Called from the upstream's callback: park until the client's retry brings the answer."""
        key = uuid.uuid4().hex[:12]
        slot = self._slots[key] = _Slot(request)
        self._wake.set()
        with anyio.move_on_after(self.answer_timeout_s):
            await slot.answered.wait()
        self._slots.pop(key, None)
        if slot.response is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="the client did not answer in time")
        try:
            return result_type.model_validate(slot.response.model_dump(by_alias=True, exclude_none=True))
        except ValidationError:
            kind = type(slot.response).__name__
            return types.ErrorData(
                code=types.INVALID_PARAMS, message=f"the client answered a {request.method} request with a {kind}"
            )

    def finish(self, outcome: types.CallToolResult | BaseException) -> None:
        self.outcome = outcome
        self._wake.set()

    def answer(self, responses: types.InputResponses) -> None:
        unknown = set(responses) - set(self._slots)
        if unknown:
            raise MCPError(types.INVALID_PARAMS, f"no pending input request with key(s) {', '.join(sorted(unknown))}")
        for key, response in responses.items():
            self._slots[key].response = response
            self._slots[key].answered.set()

    async def next(self) -> types.CallToolResult | types.InputRequests:
        """The call's outcome once it has one, or the input requests the client has not yet seen."""
        while True:
            if self.outcome is not None:
                if isinstance(self.outcome, BaseException):
                    raise self.outcome
                return self.outcome
            fresh = {k: s.request for k, s in self._slots.items() if not s.sent}
            if fresh:
                for k in fresh:
                    self._slots[k].sent = True
                return fresh
            self._wake = anyio.Event()
            await self._wake.wait()


class ClientSide(Protocol):
    """What serving a request needs of the client behind it: the SDK's ``ServerSession``, or the
    HTTP lane's session for the tool calls it serves itself."""

    async def send_request(
        self,
        request: Any,
        result_type: type[ResultT],
        request_read_timeout_seconds: float | None = None,
        metadata: ServerMessageMetadata | None = None,
        progress_callback: Any = None,
    ) -> ResultT: ...

    async def send_log_message(
        self, level: types.LoggingLevel, data: Any, logger: str | None = None,
        related_request_id: types.RequestId | None = None,
    ) -> None: ...  # fmt: skip

    def check_client_capability(self, capability: types.ClientCapabilities) -> bool: ...


@dataclass(frozen=True)
class Downstream:
    """One client request being served: the client's session, that request's id, and its era."""

    session: ClientSide
    request_id: types.RequestId | None
    bridge: InputBridge | None = None
    log_level: types.LoggingLevel | None = None  # the least severe log message the client asked for

    def wants(self, level: types.LoggingLevel) -> bool:
        return self.log_level is None or _SEVERITY.index(level) >= _SEVERITY.index(self.log_level)

    def supports(self, needs: types.ClientCapabilities) -> bool:
        return bool(self.session.check_client_capability(needs))


ELICITATION = types.ClientCapabilities(elicitation=types.ElicitationCapability())


async def request_input(
    target: Downstream, request: Any, result_type: type[ResultT], needs: types.ClientCapabilities
) -> ResultT | types.ErrorData:
    """Put one request to the client behind ``target``, in its era's way; an error, never an exception."""
    if not target.supports(needs):
        message = f"the calling client does not support {request.method}"
        return types.ErrorData(code=types.INVALID_REQUEST, message=message)
    # An exception here would end a relaying upstream's whole session, not just this request.
    try:
        if target.bridge is not None:
            return await target.bridge.ask(request, result_type)
        return await target.session.send_request(
            request, result_type, metadata=ServerMessageMetadata(related_request_id=target.request_id)
        )
    except MCPError as e:
        return e.error
    except Exception as e:
        return types.ErrorData(code=types.INTERNAL_ERROR, message=f"the client could not answer: {e}")


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

    async def _ask(
        self, request: Any, result_type: type[ResultT], needs: types.ClientCapabilities
    ) -> ResultT | types.ErrorData:
        target = self._target()
        if isinstance(target, types.ErrorData):
            return target
        return await request_input(target, request, result_type, needs)

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        needs = types.ClientCapabilities(sampling=types.SamplingCapability())
        return await self._ask(types.CreateMessageRequest(params=params), types.CreateMessageResult, needs)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await self._ask(types.ElicitRequest(params=params), types.ElicitResult, ELICITATION)

    async def list_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        needs = types.ClientCapabilities(roots=types.RootsCapability())
        return await self._ask(types.ListRootsRequest(), types.ListRootsResult, needs)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        target = self._target()
        if isinstance(target, types.ErrorData):
            log.info("server log: %s", params.data, extra={"server": self.server})
            return
        if not target.wants(params.level):
            return
        with contextlib.suppress(Exception):
            await target.session.send_log_message(
                params.level, params.data, params.logger or self.server, related_request_id=target.request_id
            )
