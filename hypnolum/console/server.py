"""The console's web server (aiohttp): the page, its websocket, logins.

Routes:

* ``GET /``: the page (``static/index.html``); without a login, the login page
  (or, on loopback without a users file, the page as a viewer);
* ``GET /login``, ``POST /login``: the login form; ``GET /login?token=...``:
  the operator link printed at start when there is no users file;
* ``POST /logout``;
* ``GET /ws``: the websocket (docs/console.md lists its messages);
* ``GET /api/status``: the broker connection and the counters, as JSON;
* ``/static/...``: the page's script, style and the vendored uPlot.

Control is decided here, per message, from the login: a viewer's websocket
can ask to watch a pod and nothing else. Every response carries a strict
Content-Security-Policy (scripts and styles from this server only); the
websocket and the login form refuse requests whose ``Origin`` is another
site's.
"""
from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .. import __version__
from ..protocol import schema
from .auth import Session, Sessions, Throttle, Users
from .config import WebConfig
from .control import Control
from .live import FLUSH_S, LiveModel
from .mqtt_feed import Feed, Target
from .pages import Page, Pages

log = logging.getLogger("hypnolum.console")

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "hypnolum_console"
MAX_WS_MESSAGE = 1024 * 1024  # larger frames close the socket (1009); up to it, Control answers with an error
RESULTS_KEPT = 50
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class Console:
    """The running console: MQTT feed, live model, control, pages and logins."""

    def __init__(self, web_cfg: WebConfig, target: Target) -> None:
        self.web_cfg = web_cfg
        self.results: deque[dict] = deque(maxlen=RESULTS_KEPT)
        self.pages = Pages(self.snapshot)
        self.model = LiveModel(self.pages.send, self._on_result)
        self.feed = Feed(target, self.model, lambda status: self.pages.send(status))
        self.control = Control(self.feed, self.model, self._broadcast_result)
        self.sessions = Sessions(web_cfg.session_hours * 3600)
        self.users = Users(web_cfg.users_file) if web_cfg.users_file is not None else None
        self.throttle = Throttle()
        # no users file: loopback only; visitors see, and this link makes an operator
        self.operator_token = secrets.token_urlsafe(24) if self.users is None else None
        self.logins_failed = 0
        self.failures = 0  # page messages and updates whose handling failed (a bug), each logged

    # -- plumbing between the parts -------------------------------------------------
    def _on_result(self, pod: str, leaf: str, result: dict) -> None:
        self.control.on_result(pod, leaf, result)

    def _broadcast_result(self, message: dict) -> None:
        self.results.append(message)
        self.pages.send(message)

    def snapshot(self) -> list[dict]:
        return [self.feed.status, *self.model.snapshot(), *self.results]

    def status(self) -> dict[str, Any]:
        return {"version": __version__, "broker": self.feed.status, "pods": len(self.model.pods), "hosts": dict(self.model.hosts),
                "circles": len(self.model.circles), "pages": len(self.pages.open),
                "mqtt": self.model.stats(), "page_messages": self.control.stats(),
                "logins_failed": self.logins_failed, "published": self.feed.published, "failures": self.failures}

    async def ticker(self) -> None:
        """Coalesced updates to the pages; late results. A failure costs one turn, never the loop."""
        last_sweep = 0.0
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.model.flush()
                if time.monotonic() - last_sweep >= 1.0:
                    last_sweep = time.monotonic()
                    self.control.sweep()
            except Exception:  # noqa: BLE001  (a bug here must not freeze every page)
                self.failures += 1
                log.exception("console update failed (%d so far)", self.failures)

    # -- who is asking ---------------------------------------------------------------
    def who(self, request: web.Request) -> Session | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return session
        if self.users is None:
            return Session("", "viewer (not logged in)", "viewer", float("inf"))
        return None

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    def _login_cookie(self, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", secure=self.web_cfg.tls,
                            path="/", max_age=int(self.web_cfg.session_hours * 3600))

    # -- routes ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        if self.who(request) is None:
            raise web.HTTPFound("/login")
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:
            if self.operator_token is None or not hmac.compare_digest(token, self.operator_token):
                self.logins_failed += 1
                return self._login_page("That operator link is not this console's (it changes at every start).",
                                        status=403)
            response = web.HTTPFound("/")
            self._login_cookie(response, self.sessions.create("local operator", "operator"))
            raise response
        return self._login_page("")

    def _login_page(self, problem: str, status: int = 200) -> web.Response:
        if self.users is None:
            note = ("This console has no users file: anyone on this machine sees the session; to steer it, "
                    "open the operator link the console printed when it started.")
            form = ""
        else:
            note = "Operators steer the session; viewers see it."
            form = ('<form method="post" action="/login"><label>user <input name="user" autocomplete="username" '
                    'required autofocus></label><label>password <input name="password" type="password" '
                    'autocomplete="current-password" required></label><button type="submit" id="login">log in'
                    '</button></form>')
        body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>hypnolum console: log in</title><link rel="icon" href="data:,">'
                f'<link rel="stylesheet" href="/static/console.css"></head><body class="login"><main>'
                f'<h1>hypnolum console</h1><p>{html.escape(note)}</p>'
                f'{f"<p class=problem>{html.escape(problem)}</p>" if problem else ""}{form}'
                f'{"<p><a href=/>see the session</a></p>" if self.users is None else ""}</main></body></html>')
        return web.Response(text=body, content_type="text/html", status=status)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.users is None:
            return self._login_page("Log in with the operator link.", status=400)
        if not self._same_origin(request):
            return self._login_page("The login form must come from this console.", status=403)
        address = request.remote or "?"
        wait = self.throttle.wait_s(address)
        if wait:
            return self._login_page(f"Too many failed logins: wait {wait:.0f} s.", status=429)
        form = await request.post()
        name, password = form.get("user"), form.get("password")
        user = None
        if isinstance(name, str) and isinstance(password, str) and len(name) <= 64 and len(password) <= 1024:
            user = await asyncio.to_thread(self.users.verify, name, password)
        if user is None:
            self.throttle.failed(address)
            self.logins_failed += 1
            log.warning("failed console login from %s as %r", address, str(name)[:64])
            return self._login_page("Wrong user or password.", status=401)
        log.info("console login: %s (%s) from %s", user.name, user.role, address)
        response = web.HTTPFound("/")
        self._login_cookie(response, self.sessions.create(user.name, user.role))
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            raise web.HTTPForbidden(text="cross-site logout refused")
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.HTTPFound("/login" if self.users is not None else "/")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def api_status(self, request: web.Request) -> web.StreamResponse:
        if self.who(request) is None:
            raise web.HTTPUnauthorized(text="log in first")
        return web.json_response(self.status())

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        session = self.who(request)
        if session is None:
            raise web.HTTPUnauthorized(text="log in first")
        if not self._same_origin(request):
            raise web.HTTPForbidden(text="websocket from another site refused")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_WS_MESSAGE)
        await ws.prepare(request)
        page = Page(ws, session, self.sessions)
        hello = {"t": "hello", "page": page.id, "user": session.user, "role": session.role, "version": __version__,
                 "effects": list(schema.ENUMS["effect"]), "palettes": list(schema.ENUMS["palette"]),
                 "logins": self.users is not None}
        sender = asyncio.create_task(self.pages.serve(page, [hello, *self.snapshot()]))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        replies = await self.control.handle(page, msg.data)
                    except Exception:  # noqa: BLE001  (a bug costs this message, not the console)
                        self.failures += 1
                        log.exception("page message failed (%d so far)", self.failures)
                        replies = [{"t": "error", "req": None, "field": None,
                                    "error": "the console failed to handle this message (see its log)"}]
                elif msg.type == WSMsgType.BINARY:
                    self.control.refused["binary"] += 1
                    replies = [{"t": "error", "req": None, "error": "binary messages are not accepted: send JSON text",
                                "field": None}]
                else:
                    break
                for reply in replies:
                    page.put(json.dumps(reply, separators=(",", ":")))
        finally:
            if page.watching is not None:
                await self.feed.unwatch(page.watching)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.close()
        return ws


@web.middleware
async def _headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if response.status >= 400 and not response.text:
            response.text = response.reason
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # (no-referrer makes form posts say Origin: null)
    if isinstance(response, web.HTTPException):
        raise response
    return response


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
    app.router.add_get("/", console.index)
    app.router.add_get("/login", console.login_form)
    app.router.add_post("/login", console.login)
    app.router.add_post("/logout", console.logout)
    app.router.add_get("/ws", console.websocket)
    app.router.add_get("/api/status", console.api_status)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app
