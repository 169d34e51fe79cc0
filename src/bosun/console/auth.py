"""Signing in to the console: the operator's gateway token, once, for a session cookie.

Sessions live in the gateway's memory (a restart signs everyone out, the safe default) and expire
after eight hours. The cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` (browsers accept it
over plain http on loopback, the console's usual address). Every form carries the session's CSRF
token, and every state-changing request must present it, as a field or an ``X-CSRF-Token`` header
(htmx sends the latter); the login form, made before any session exists, is protected the same way
by a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "bosun_console"
PRE_COOKIE = "bosun_console_login"
TTL_S = 8 * 3600


@dataclass
class Login:
    csrf: str
    expires: float


class Logins:
    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token
        self._sessions: dict[str, Login] = {}

    def sign_in(self, token: str) -> str | None:
        """A new session id for the right token, else None."""
        if not hmac.compare_digest(token.strip().encode(), self._admin_token.encode()):
            return None
        now = time.time()
        self._sessions = {k: v for k, v in self._sessions.items() if v.expires > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = Login(secrets.token_urlsafe(32), now + TTL_S)
        return session

    def of(self, request: Request) -> Login | None:
        login = self._sessions.get(request.cookies.get(COOKIE, ""))
        if login is None or login.expires < time.time():
            return None
        return login

    def sign_out(self, request: Request) -> None:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", secure=True, httponly=True, samesite="strict")


def csrf_ok(login: Login, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), login.csrf.encode())
