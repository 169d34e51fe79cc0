"""Telemetry of a real HTTP gateway: Prometheus metrics for the operator only, OTLP traces with a span
per client request carrying Bosun's decision and a child per upstream request; and the handshake and
malformed requests in the audit."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from _util import audit_log, bosun_cmd, env_for, open_session, post, run_bosun
from conftest import start_http_gateway
from fixtures.processes import free_port
from mcp import Client, StdioServerParameters
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bosun.home import Home

pytestmark = pytest.mark.anyio

POLICY = "rules:\n  - {id: no-convert, effect: deny, tools: [time__convert_time], reason: read the clock only}\n"


def call(i: int, name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


@pytest.fixture
def collector() -> Iterator[tuple[str, list[Span]]]:
    """An OTLP/HTTP trace receiver on loopback, keeping every span it is sent."""
    spans: list[Span] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            spans.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces", spans
    server.shutdown()


def attributes(span: Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_metrics_traces_and_the_audited_handshake(home: Home, collector: tuple[str, list[Span]]) -> None:
    endpoint, spans = collector
    home.policy_file.write_text(POLICY)
    intern = run_bosun(home, "agent", "add", "intern").stdout.strip()
    otel = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with start_http_gateway(home, **otel) as gw:
        sid = {"mcp-session-id": open_session(gw, gw.token)}
        assert post(gw, gw.token, call(2, "time__get_current_time", {"timezone": "UTC"}), **sid).status_code == 200
        refused = post(gw, gw.token, call(3, "time__convert_time", {"source_timezone": "UTC", "time": "10:00",
                                                                     "target_timezone": "UTC"}), **sid)  # fmt: skip
        assert "denied by policy (no-convert)" in refused.text
        bad = post(gw, gw.token, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": 7}}, **sid)
        assert bad.status_code == 200 and '"error"' in bad.text  # a clear JSON-RPC error; the gateway stays up

        auth = {"Authorization": f"Bearer {gw.token}"}
        metrics = httpx.get(f"{gw.base}/metrics", headers=auth, timeout=10)
        assert metrics.status_code == 200
        text = metrics.text
        assert 'bosun_tool_calls_total{decision="allow",outcome="ok",server="time",tool="get_current_time"} 1.0' in text
        assert 'bosun_denials_total{rule="no-convert"} 1.0' in text
        assert 'bosun_containers_running{server="time"} 1.0' in text
        assert 'bosun_tool_call_duration_seconds_count{server="time"} 2.0' in text
        assert 'bosun_requests_total{method="initialize",outcome="ok"} 1.0' in text
        assert 'bosun_requests_total{method="tools/call",outcome="refused"} 2.0' in text  # the denial and the bad call
        forbidden = httpx.get(f"{gw.base}/metrics", headers={"Authorization": f"Bearer {intern}"}, timeout=10)
        assert forbidden.status_code == 403 and "operator" in forbidden.text
        assert httpx.get(f"{gw.base}/metrics", timeout=10).status_code == 401
    # SIGTERM: the gateway flushed its last spans on the way out.

    server_span = next(s for s in spans if s.name == "tools/call time__get_current_time")
    assert server_span.kind == Span.SPAN_KIND_SERVER
    assert {k: v for k, v in attributes(server_span).items() if k.startswith("bosun.")} == {
        "bosun.agent": "operator", "bosun.server": "time", "bosun.tool": "get_current_time",
        "bosun.decision": "allow", "bosun.outcome": "ok",
    }  # fmt: skip
    upstream = {s.name: s for s in spans if s.parent_span_id == server_span.span_id}
    # The first call started the container: its handshake and listing are in this request's trace too.
    assert set(upstream) == {"MCP send initialize", "MCP send tools/list", "MCP send tools/call get_current_time"}
    forwarded = upstream["MCP send tools/call get_current_time"]
    assert forwarded.kind == Span.SPAN_KIND_CLIENT and forwarded.trace_id == server_span.trace_id
    denied = next(s for s in spans if s.name == "tools/call time__convert_time")
    assert attributes(denied)["bosun.decision"] == "deny"
    assert not [s for s in spans if s.parent_span_id == denied.span_id]  # refused before any upstream request

    records = audit_log(home).records()
    hello = next(r for r in records if r.kind == "initialize")
    assert hello.agent == "operator" and hello.outcome == "ok"
    assert hello.detail == {"client": "t", "client_version": "1", "protocol": "2025-06-18", "capabilities": []}
    malformed = records[-1]
    assert (malformed.kind, malformed.decision, malformed.outcome) == ("tools/call", "deny", "refused")
    assert malformed.reason.startswith("invalid params (")


async def test_a_stdio_gateway_serves_metrics_on_loopback(home: Home) -> None:
    port = free_port()
    args = bosun_cmd("gateway", "run", "--metrics-port", str(port))[1:]
    async with Client(StdioServerParameters(command=sys.executable, args=args, env=env_for(home))) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        token, _ = home.gateway_token()
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = await http.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
            anonymous = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert 'bosun_tool_calls_total{decision="allow",outcome="ok",server="time",tool="get_current_time"} 1.0' in (
        metrics.text
    )
    assert anonymous.status_code == 401
