"""The aiohttp application of chat-web: the page (`/`, `/static/...`), the WebSocket (`/ws`) and
the security headers of every answer.

    app = make_app(Settings(host="127.0.0.1", port=4119, server_key=b"<40 Z85>"))
    web.run_app(app, host="127.0.0.1", port=8080)

WebSocket exchange (JSON text frames): the page first sends `{"t": "hello", "token": str | null,
"after": int}`; the server answers a `hello` item (web.session.WebSession.hello) with the session's
token, then replays the kept items numbered above `after` (a page that comes back within
`resume_seconds` resumes its session; an unknown token gets a new session). Then the page sends
requests (web.commands) and receives items (web.items). A WebSocket whose Origin is not this server
is refused (403).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from zmq_chat.web import commands
from zmq_chat.web.session import Settings, WebSession

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
"""The page's files (package data of zmq_chat.web)."""

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""Content-Security-Policy of every answer: scripts only from this server's files (no inline
script, no eval), nothing from elsewhere, never framed."""

HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}

MAX_FRAME = 64 * 1024
"""Largest WebSocket message from the page, bytes (a message is at most 1000 characters)."""

SESSIONS: web.AppKey[dict[str, WebSession]] = web.AppKey("sessions", dict)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add HEADERS to every answer, errors included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException) and response.status >= 400:
        raise response
    return response


async def index(request: web.Request) -> web.StreamResponse:
    """The chat page."""
    return web.FileResponse(STATIC / "index.html")


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def loopback_host(request: web.Request) -> bool:
    """True when the request's Host names this machine by a loopback name (a page that a
    DNS-rebinding site loads names its own domain instead)."""
    host = request.host.lower()
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    return name in LOOPBACK_NAMES


def same_origin(request: web.Request) -> bool:
    """True when the request has no Origin header (not a browser page) or one naming this server."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.netloc.lower() == request.host.lower()


async def websocket(request: web.Request) -> web.StreamResponse:
    """The WebSocket of one page (see the module docstring)."""
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-origin WebSocket refused")
    if request.app[SETTINGS].loopback_only and not loopback_host(request):
        raise web.HTTPForbidden(text="served on a loopback address: open it as localhost or 127.0.0.1")
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    session: WebSession | None = None
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            try:
                data = json.loads(frame.data)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if session is None:
                session = await _greet(request.app, ws, data)
                if session is None:
                    break
                continue
            await commands.handle(session, data)
    finally:
        if session is not None:
            session.detach(ws)
    return ws


async def _greet(app: web.Application, ws: web.WebSocketResponse, data: dict) -> WebSession | None:
    """The page's hello: resume the session of its token, or start one. None when full."""
    sessions = app[SESSIONS]
    token = data.get("token")
    session = sessions.get(token) if isinstance(token, str) else None
    after = data.get("after")
    if not isinstance(after, int):
        after = 0
    if session is None or session.closed:
        if len(sessions) >= app[SETTINGS].max_sessions:
            await ws.send_json({"t": "full", "text": "this chat page serves too many people right now; try later"})
            return None
        session = WebSession(app[SETTINGS], lambda gone: _forget(sessions, gone))
        sessions[session.token] = session
        session.expect_login()
        after = 0
    elif data.get("epoch") != session.epoch:
        after = 0
    await session.attach(ws, after)
    return session


def _forget(sessions: dict[str, WebSession], gone: WebSession) -> None:
    sessions.pop(gone.token, None)


async def _close_sessions(app: web.Application) -> None:
    sessions = list(app[SESSIONS].values())
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def make_app(settings: Settings) -> web.Application:
    """The application: routes, security headers, sessions logged out at shutdown."""
    app = web.Application(middlewares=[security_headers], client_max_size=MAX_FRAME)
    app[SETTINGS] = settings
    app[SESSIONS] = {}
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.on_shutdown.append(_close_sessions)
    return app
