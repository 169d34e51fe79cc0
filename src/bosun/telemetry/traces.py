"""OpenTelemetry traces over OTLP/HTTP, when the standard variables configure an endpoint.

The MCP SDK already opens a span for each request a client sends the gateway and a child span for
each request the gateway sends a server (and passes the trace context on to it); Bosun adds who
asked and what was decided to the request's span (``annotate``). Without an endpoint, the SDK's
spans go to OpenTelemetry's no-op tracer and cost next to nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

log = logging.getLogger("bosun.telemetry")

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
    endpoint = next(os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v))
    log.info("exporting traces over OTLP/HTTP to %s", endpoint)
    return provider


def annotate(agent: str, server: str, tool: str, decision: str, outcome: str) -> None:
    """Put Bosun's view of the request on the span the SDK opened for it."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"bosun.agent": agent, "bosun.server": server, "bosun.tool": tool,
                             "bosun.decision": decision, "bosun.outcome": outcome})  # fmt: skip
