"""The governance console: server-rendered pages under ``/console`` of the HTTP gateway.

Pages are Jinja2 templates; htmx (vendored, see ``static/vendor/PROVENANCE``) swaps in what changes,
and server-sent events bring the live parts (activity, approvals) without a reload. Every page
needs a signed-in session (``console.auth``); every change needs its CSRF token. Values are shown
as the audit keeps them, already redacted, so no secret is ever rendered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bosun.audit.log import AuditLog, Record
from bosun.config import ConfigError, Settings
from bosun.console import state
from bosun.console.auth import COOKIE, PRE_COOKIE, TTL_S, Login, Logins, csrf_ok, set_cookie
from bosun.gateway.agents import Agents
from bosun.gateway.core import Gateway
from bosun.gateway.upstream import UpstreamError
from bosun.policy.asks import AskError
from bosun.policy.rules import PolicyError
from bosun.policy.rules import load as rules_load

POLL_S = 0.5
FILTERS = ("agent", "server", "tool", "decision", "session")
SECURITY_HEADERS = {
    # Scripts and styles come from the console itself only; no page may frame it.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request, Login], Awaitable[Response]]


class Console:
    def __init__(self, gateway: Gateway, admin_token: str) -> None:
        self.gw = gateway
        self.logins = Logins(admin_token)
        self.audit = AuditLog(gateway.home.audit_db)  # its own connection: the gateway's writes go on meanwhile
        folder = Path(str(resources.files("bosun.console")))
        self.templates = Jinja2Templates(directory=str(folder / "templates"))
        self.static = StaticFiles(directory=str(folder / "static"))

    # -- plumbing -------------------------------------------------------------------------------

    def page(self, request: Request, name: str, login: Login | None, status: int = 200, **context: Any) -> Response:
        context |= {"csrf": login.csrf if login else "", "page": name.split(".")[0].split("_")[0]}
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def signed_in(self, handler: Handler, change: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Only for a signed-in browser; a change also needs the session's CSRF token."""

        async def endpoint(request: Request) -> Response:
            login = self.logins.of(request)
            if login is None:
                if request.headers.get("HX-Request"):
                    return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
                return RedirectResponse("/console/login", status_code=303)
            if change:
                presented = request.headers.get("X-CSRF-Token")
                if presented is None:
                    presented = str((await request.form()).get("csrf", ""))
                if not csrf_ok(login, presented):
                    return Response("the form is stale or forged (CSRF token mismatch); reload the page", 403)
            return await handler(request, login)

        return endpoint

    # -- sign in --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        response = self.page(request, "login.html", None, pre=pre, error="")
        set_cookie(response, PRE_COOKIE, pre, 600)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or form.get("pre") != pre:
            return self.page(request, "login.html", None, 403, pre=pre, error="The form expired; try again.")
        session = self.logins.sign_in(str(form.get("token", "")))
        if session is None:
            self.gw.audit.append(Record(kind="console/login", agent="console", decision="deny", outcome="refused",
                                        reason="wrong admin token"))  # fmt: skip
            return self.page(request, "login.html", None, 401, pre=pre, error="That is not the admin token.")
        self.gw.audit.append(Record(kind="console/login", agent="console"))
        response = RedirectResponse("/console/", status_code=303)
        set_cookie(response, COOKIE, session, TTL_S)
        response.delete_cookie(PRE_COOKIE, path="/console")
        return response

    async def logout(self, request: Request, _login: Login) -> Response:
        self.logins.sign_out(request)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- servers --------------------------------------------------------------------------------

    async def servers(self, request: Request, login: Login) -> Response:
        rows = await anyio.to_thread.run_sync(state.servers, self.gw, state.running(self.gw))

        async def measure(c: state.Container) -> None:
            used = await self.gw.backend.memory_bytes(c.id)
            c.memory = f"{used / 2**20:.0f} MiB" if used is not None else ""

        async with anyio.create_task_group() as tg:
            for c in (c for row in rows for c in row.containers):
                tg.start_soon(measure, c)
        return self.page(request, "servers.html", login, servers=rows, message=request.query_params.get("m", ""))

    async def server_start(self, request: Request, _login: Login) -> Response:
        name = request.path_params["name"]
        try:
            await self.gw.start_server(name)
        except (UpstreamError, MCPError, KeyError) as e:
            return RedirectResponse(f"/console/servers?m=cannot start {name}: {e}", status_code=303)
        self.gw.audit.append(Record(kind="console/server-start", agent="console", server=name))
        return RedirectResponse(f"/console/servers?m=started {name}", status_code=303)

    async def server_stop(self, request: Request, _login: Login) -> Response:
        name = request.path_params["name"]
        stopped = await self.gw.stop_server(name)
        self.gw.audit.append(Record(kind="console/server-stop", agent="console", server=name,
                                    detail={"containers": stopped}))  # fmt: skip
        return RedirectResponse(f"/console/servers?m=stopped {stopped} container(s) of {name}", status_code=303)

    async def server_switch(self, request: Request, login: Login) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        entry = self.gw.catalog.entries.get(name)
        if action not in ("enable", "disable"):
            return Response(f"no action {action!r}: enable or disable", 404)
        if entry is None:
            return Response(f"no catalog entry named {name!r}", 404)
        settings = Settings.load(self.gw.home.config_file)
        try:
            if action == "enable":
                settings.enable(entry, [])
            elif name in settings.servers:
                settings.servers[name].enabled = False
            settings.save(self.gw.home.config_file)
        except ConfigError as e:
            return RedirectResponse(f"/console/servers?m={e}", status_code=303)
        self.gw.audit.append(Record(kind=f"console/server-{action}", agent="console", server=name))
        # The gateway picks the settings up within a second, as after `bosun server enable`.
        return RedirectResponse(f"/console/servers?m={action}d {name}", status_code=303)

    # -- agents ---------------------------------------------------------------------------------

    async def agents(self, request: Request, login: Login, token: str = "", error: str = "") -> Response:
        rows = state.agents(self.gw, self.audit)
        return self.page(request, "agents.html", login, agents=rows, token=token, error=error)

    async def agent_add(self, request: Request, login: Login) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        groups = [g.strip() for g in str(form.get("groups", "")).split(",") if g.strip()]
        directory = Agents.load(self.gw.home.agents_file)
        try:
            token = directory.add(name, groups)
        except (ValueError, ValidationError) as e:
            message = f"{name!r}: not a valid agent name" if isinstance(e, ValidationError) else str(e)
            return await self.agents(request, login, error=message.splitlines()[0])
        directory.save(self.gw.home.agents_file)
        self.gw.audit.append(Record(kind="console/agent-add", agent="console", detail={"name": name, "groups": groups}))
        return await self.agents(request, login, token=f"{name}: {token}")

    async def agent_revoke(self, request: Request, login: Login) -> Response:
        name = request.path_params["name"]
        directory = Agents.load(self.gw.home.agents_file)
        try:
            directory.revoke(name)
        except ValueError as e:
            return await self.agents(request, login, error=str(e))
        directory.save(self.gw.home.agents_file)
        self.gw.audit.append(Record(kind="console/agent-revoke", agent="console", detail={"name": name}))
        return RedirectResponse("/console/agents", status_code=303)

    # -- activity -------------------------------------------------------------------------------

    def _filters(self, request: Request) -> dict[str, str]:
        return {k: request.query_params.get(k, "").strip() for k in FILTERS}

    async def activity(self, request: Request, login: Login) -> Response:
        filters = self._filters(request)
        records = list(reversed(self.audit.find(filters, limit=100)))
        head = self.audit.head()
        query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
        return self.page(request, "activity.html", login, records=records, filters=filters,
                         after=head.seq if head else 0, query=query)  # fmt: skip

    async def activity_stream(self, request: Request, _login: Login) -> Response:
        filters = self._filters(request)
        after = int(request.query_params.get("after", "0") or 0)
        row = self.templates.get_template("_record_row.html")

        async def events() -> AsyncIterator[dict[str, str]]:
            nonlocal after
            while True:
                batch = self.audit.records(after, 200)
                for record in batch:
                    if all(not v or getattr(record, k) == v for k, v in filters.items()):
                        yield {"event": "record", "data": row.render(r=record)}
                if batch:
                    after = batch[-1].seq
                else:
                    await asyncio.sleep(POLL_S)

        return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})

    async def record(self, request: Request, login: Login) -> Response:
        found = self.audit.get(int(request.path_params["seq"]))
        if found is None:
            return self.page(request, "missing.html", login, 404, what=f"audit record {request.path_params['seq']}")
        shown = json.dumps(found.payload() | {"prev": found.prev, "hash": found.hash}, indent=2, default=str)
        return self.page(request, "record.html", login, r=found, shown=shown)

    # -- approvals ------------------------------------------------------------------------------

    async def approvals(self, request: Request, login: Login) -> Response:
        return self.page(request, "approvals.html", login, asks=self.gw.asks.pending(), error="")

    def panel_stream(self, event: str, render: Callable[[], str], every_s: float = POLL_S) -> Response:
        """Server-sent events carrying a panel's HTML each time it changes."""

        async def events() -> AsyncIterator[dict[str, str]]:
            shown = None
            while True:
                html = render()
                if html != shown:
                    shown = html
                    yield {"event": event, "data": html}
                await asyncio.sleep(every_s)

        return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})

    async def approvals_stream(self, _request: Request, login: Login) -> Response:
        listing = self.templates.get_template("_asks.html")
        return self.panel_stream("asks", lambda: listing.render(asks=self.gw.asks.pending(), csrf=login.csrf))

    async def answer(self, request: Request, login: Login) -> Response:
        ask_id, verdict = request.path_params["ask"], request.path_params["verdict"]
        if verdict not in ("approve", "deny"):
            return Response(f"no verdict {verdict!r}: approve or deny", 404)
        try:
            self.gw.asks.answer(ask_id, verdict == "approve", by="console")
        except AskError as e:
            return self.page(request, "approvals.html", login, 409, asks=self.gw.asks.pending(), error=str(e))
        return RedirectResponse("/console/approvals", status_code=303)

    # -- sessions -------------------------------------------------------------------------------

    async def sessions(self, request: Request, login: Login) -> Response:
        return self.page(request, "sessions.html", login, sessions=state.sessions(self.gw))

    async def sessions_stream(self, _request: Request, _login: Login) -> Response:
        panel = self.templates.get_template("_sessions.html")
        return self.panel_stream("sessions", lambda: panel.render(sessions=state.sessions(self.gw)))

    # -- overview -------------------------------------------------------------------------------

    def _overview(self) -> dict[str, Any]:
        series, latencies = state.overview(self.audit)
        peak = max([m.allowed + m.denied for m in series] + [1])
        return {"series": series, "latencies": latencies, "peak": peak}

    async def overview(self, request: Request, login: Login) -> Response:
        return self.page(request, "overview.html", login, **self._overview())

    async def overview_stream(self, _request: Request, _login: Login) -> Response:
        panel = self.templates.get_template("_overview.html")
        return self.panel_stream("overview", lambda: panel.render(**self._overview()), every_s=2)

    # -- policy ---------------------------------------------------------------------------------

    def _policy_context(self) -> dict[str, Any]:
        path = self.gw.home.policy_file
        text = path.read_text() if path.exists() else ""
        try:
            rules_load(path)
            problem = ""
        except (PolicyError, OSError) as e:
            problem = str(e)
        active = self.gw.policy.policy
        return {"text": self.gw.redactor.text(text)[0], "problem": problem, "path": str(path),
                "rules": len(active.rules), "default": active.default}  # fmt: skip

    async def policy(self, request: Request, login: Login) -> Response:
        return self.page(request, "policy.html", login, check=None, asked={}, **self._policy_context())

    async def policy_check(self, request: Request, login: Login) -> Response:
        form = await request.form()
        asked = {k: str(form.get(k, "")).strip() for k in ("agent", "tool", "arguments")}
        server, sep, name = asked["tool"].partition("__")
        check: dict[str, Any]
        try:
            arguments = json.loads(asked["arguments"] or "{}")
            if not sep or not isinstance(arguments, dict):
                raise ValueError("the tool is <server>__<tool>, the arguments a JSON object")
            groups = self.gw.directory.groups(asked["agent"])
            decision = self.gw.policy.decide(asked["agent"], groups, server, name, arguments, explain=True,
                                             record=False)  # fmt: skip
            check = {"effect": decision.effect, "rules": decision.rules, "reason": decision.reason,
                     "trace": decision.trace, "groups": groups}  # fmt: skip
        except ValueError as e:
            check = {"error": str(e)}
        return self.page(request, "policy.html", login, check=check, asked=asked, **self._policy_context())

    # -- audit ----------------------------------------------------------------------------------

    async def audit_page(self, request: Request, login: Login) -> Response:
        return self.page(request, "audit.html", login, head=self.audit.head(), result=None)

    async def audit_verify(self, request: Request, login: Login) -> Response:
        def verify() -> tuple[int, list[Any]]:
            own = AuditLog(self.gw.home.audit_db)
            try:
                return own.verify()
            finally:
                own.close()

        count, problems = await anyio.to_thread.run_sync(verify)
        return self.page(request, "audit.html", login, head=self.audit.head(), result=(count, problems))

    async def _exported(self) -> AsyncIterator[str]:
        own = AuditLog(self.gw.home.audit_db)
        try:
            for r in own.records():
                yield json.dumps(r.payload() | {"prev": r.prev, "hash": r.hash}, default=str) + "\n"
        finally:
            own.close()

    async def audit_export(self, _request: Request, _login: Login) -> Response:
        headers = {"Content-Disposition": 'attachment; filename="bosun-audit.jsonl"', **SECURITY_HEADERS}
        return StreamingResponse(self._exported(), media_type="application/x-ndjson", headers=headers)

    async def home_page(self, _request: Request, _login: Login) -> Response:
        return RedirectResponse("/console/overview", status_code=303)

    def app(self) -> Starlette:
        s = self.signed_in
        return Starlette(routes=[
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", s(self.logout, change=True), methods=["POST"]),
            Route("/", s(self.home_page)),
            Route("/servers", s(self.servers)),
            Route("/servers/{name}/start", s(self.server_start, change=True), methods=["POST"]),
            Route("/servers/{name}/stop", s(self.server_stop, change=True), methods=["POST"]),
            Route("/servers/{name}/{action:str}", s(self.server_switch, change=True), methods=["POST"]),
            Route("/agents", s(self.agents)),
            Route("/agents", s(self.agent_add, change=True), methods=["POST"]),
            Route("/agents/{name}/revoke", s(self.agent_revoke, change=True), methods=["POST"]),
            Route("/activity", s(self.activity)),
            Route("/activity/stream", s(self.activity_stream)),
            Route("/activity/{seq:int}", s(self.record)),
            Route("/approvals", s(self.approvals)),
            Route("/approvals/stream", s(self.approvals_stream)),
            Route("/approvals/{ask}/{verdict:str}", s(self.answer, change=True), methods=["POST"]),
            Route("/sessions", s(self.sessions)),
            Route("/sessions/stream", s(self.sessions_stream)),
            Route("/overview", s(self.overview)),
            Route("/overview/stream", s(self.overview_stream)),
            Route("/policy", s(self.policy)),
            Route("/policy/check", s(self.policy_check, change=True), methods=["POST"]),
            Route("/audit", s(self.audit_page)),
            Route("/audit/verify", s(self.audit_verify, change=True), methods=["POST"]),
            Route("/audit/export", s(self.audit_export)),
            Mount("/static", self.static),
        ])  # fmt: skip


def console_app(gateway: Gateway, admin_token: str) -> Starlette:
    return Console(gateway, admin_token).app()
