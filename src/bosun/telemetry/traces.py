"""OpenTelemetry traces over OTLP/HTTP, when the standard variables configure an endpoint.

The MCP SDK already opens a span for each request a client sends the gateway and a child span for
each request the gateway's sessions send a server (and passes the trace context on to it); the
tool calls Bosun serves and forwards at the message level get the same spans here (``inbound``,
``outbound``). Bosun
adds who asked and what was decided to the request's span (``annotate``). Without an endpoint,
spans go to OpenTelemetry's no-op tracer, and the message-level path makes none at all: even
no-op spans, and asking OpenTelemetry whether a provider is set, cost a few percent of a
forwarded call (measured).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import propagate, trace

log = logging.getLogger("bosun.telemetry")

_tracer = trace.get_tracer("bosun")
_exporting = False  # set by ``configure``: OpenTelemetry's own check reads the environment on every call

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configure(service: str = "bosun-gateway") -> Any | None:
    """Install an exporting tracer provider if an OTLP endpoint is set; returns it (to shut down), or None."""
    if not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _exporting
    _exporting = True
    endpoint = next(os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v))
    log.info("exporting traces over OTLP/HTTP to %s", endpoint)
    return provider


def annotate(agent: str, server: str, tool: str, decision: str, outcome: str) -> None:
    """Put Bosun's view of the request on the span the SDK opened for it."""
    if not _exporting:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"bosun.agent": agent, "bosun.server": server, "bosun.tool": tool,
                             "bosun.decision": decision, "bosun.outcome": outcome})  # fmt: skip


# What ``inbound`` and ``outbound`` give when nothing exports: one shared no-op, as a generator-based context
# manager that only yields still cost a generator and its context manager on each call (about a microsecond).
_UNTRACED: contextlib.nullcontext[None] = contextlib.nullcontext()


def outbound(method: str, target: str, request_id: str, meta: dict[str, Any]) -> AbstractContextManager[None]:
    """A client span for one request sent to a server, named as the SDK names its own, with the trace
    context put into the request's ``_meta`` so the server's spans join the trace."""
    return _outbound(method, target, request_id, meta) if _exporting else _UNTRACED


@contextlib.contextmanager
def _outbound(method: str, target: str, request_id: str, meta: dict[str, Any]) -> Iterator[None]:
    attributes = {"mcp.method.name": method, "jsonrpc.request.id": request_id}
    name = f"MCP send {method} {target}"
    with _tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        propagate.inject(meta)
        yield


def inbound(method: str, target: str, request_id: str | int, meta: dict[str, Any]) -> AbstractContextManager[None]:
    """A server span for one request a client sent, as the SDK opens for the requests it serves: a child
    of the trace context in the request's ``_meta`` when there is one."""
    return _inbound(method, target, request_id, meta) if _exporting else _UNTRACED


@contextlib.contextmanager
def _inbound(method: str, target: str, request_id: str | int, meta: dict[str, Any]) -> Iterator[None]:
    parent = propagate.extract(meta) if meta else None
    if parent is not None and not trace.get_current_span(parent).get_span_context().is_valid:
        parent = None
    attributes = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
    name = f"{method} {target}"
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes):
        yield
