"""What the page asks for, run on a WebSession: `login` (with `new` to register first), `send`
(private, group: `to` a list of names; broadcast: `to` null), and the session commands `who`,
`last`, `busy`, `idle`, `hide`, `appear`, `status`, `logout`; `got` (the page rendered these private
messages: ack them now).

Each request is a JSON object with `t`; answers go to the page as items (web.items, web.session).
A password lives only in the login request's dict for the time of the login: never logged, never
kept (web.session.WebSession.started drops the Connection's copy).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from zmq_chat.client.errors import ClientError, ConnectionClosed, RequestTimeout
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.replies import ErrorReply, IdleReply, Reply, StatusReply, UsersReply
from zmq_chat.web.ackcore import BrowserAckCore
from zmq_chat.web.items import Item, error_text, notice, sent_item
from zmq_chat.web.session import WebSession

log = logging.getLogger(__name__)

RECENT_MINUTES = 60
"""Users online in this many last minutes but not now are listed as away."""


async def handle(session: WebSession, data: dict[str, Any]) -> None:
    """Run one request of the page on `session`. Never raises for broker trouble: the page gets a
    notice (or an `ended` item when the broker is gone)."""
    kind = data.get("t")
    try:
        if kind == "login":
            await login(session, data)
        elif session.conn is None or session.conn.core.session is None:
            await session.emit(notice("log in first", "error"))
        elif kind == "got":
            core = session.conn.core
            ids = data.get("ids")
            if isinstance(core, BrowserAckCore) and isinstance(ids, list):
                core.browser_has(ids[:1000])
        elif kind == "send":
            await send(session, data)
        elif kind == "cmd":
            await command(session, str(data.get("name", "")), data)
        else:
            await session.emit(notice(f"unknown request {str(kind)[:40]!r}", "error"))
    except RequestTimeout:
        await session.emit(notice("the chat server did not answer in time", "error"))
    except ConnectionClosed:
        pass  # the session ended meanwhile: the page was told why
    except Exception:  # noqa: BLE001 - a request that failed must not close the page's WebSocket
        log.exception("chat-web: a %r request failed", kind)
        await session.emit(notice("that did not work; the chat server may be restarting", "error"))


async def login(session: WebSession, data: dict[str, Any]) -> None:
    """Connect, register first when `new`, log in; the page gets the hello of the new session or a
    `login_failed` item with one sentence."""
    if session.logging_in:  # (a page that reconnected while its login runs: one login at a time)
        await session.emit(notice("a login is already in progress", "error"))
        return
    session.logging_in = True
    try:
        await _login(session, data)
    finally:
        session.logging_in = False


async def _login(session: WebSession, data: dict[str, Any]) -> None:
    user = str(data.get("user", "")).strip()
    password = str(data.get("password", ""))
    data.pop("password", None)
    if session.conn is not None and session.conn.core.session is not None:
        await session.emit(notice(f"already logged in as {session.user}", "error"))
        return
    conn = session.new_connection()
    try:
        await conn.connect()
        reply = None
        if data.get("new"):
            reply = await conn.register(user, password)
        if reply is None or reply.ok:
            reply = await conn.login(user, password)
    except ClientError as exc:
        await conn.close(linger=False)
        await session.emit({"t": "login_failed", "text": str(exc)})
        return
    finally:
        password = ""  # noqa: F841 - the only copy besides the request, gone with it
    if isinstance(reply, ErrorReply):
        await conn.close(linger=False)
        await session.emit({"t": "login_failed", "text": error_text(reply)})
        return
    session.started(conn)
    log.info("chat-web: %s logged in", session.user)
    await session.emit(session.hello())  # first: the page starts its clean view before any message
    await refresh(session)
    await session.emit({"t": "state", **session.state()})


async def refresh(session: WebSession) -> None:
    """Ask who is online, who was in the last RECENT_MINUTES and your own status."""
    assert session.conn is not None
    who = await session.conn.request(m.Who)
    if isinstance(who, UsersReply):
        session.online = set(who.users) | {session.user}
        session.busy_marks = {u: session.busy_marks.get(u, "") for u in who.busy if u != session.user}
    last = await session.conn.request(m.Last, minutes=RECENT_MINUTES)
    if isinstance(last, UsersReply):
        session.recent = [u for u in last.users if u != session.user]
    status = await session.conn.request(m.Status)
    if isinstance(status, StatusReply):
        session.me_busy, session.me_busy_text, session.me_hidden = status.busy, status.busy_text, status.hidden


async def send(session: WebSession, data: dict[str, Any]) -> None:
    """Send `text` to the names in `to` (a private or group message) or to everyone (`to` null),
    with the page's send id `cid` (so a page that sends again after a reconnect stores it once);
    once more after a timeout, same id. The page gets a "mine" item."""
    assert session.conn is not None
    text = str(data.get("text", ""))
    raw_to = data.get("to")
    to = None if raw_to is None else [str(n).strip() for n in raw_to if str(n).strip()][:100]
    cid = data.get("cid")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
        cid = uuid.uuid4().hex
    session.sent.add(cid)
    msg: m.Request = m.Broadcast(req=0, id=cid, text=text) if to is None else m.Send(req=0, id=cid, to=to, text=text)
    timeout = max(1.0, session.conn.core.session.heartbeat_timeout / 2) if session.conn.core.session else 5.0
    try:
        reply = await session.conn.request(msg, timeout)
    except RequestTimeout:
        reply = await session.conn.request(msg, timeout)
    item = sent_item(cid, to, text, reply)
    for entry in item["busy"]:
        session.busy_marks[entry["user"]] = entry["text"]
    await session.emit(item)
    if item["busy"]:
        await session.emit({"t": "state", **session.state()})


async def command(session: WebSession, name: str, data: dict[str, Any]) -> None:
    """who, last (`minutes`), busy (`text`), idle, hide, appear, status, logout."""
    conn = session.conn
    assert conn is not None
    if name == "logout":
        await conn.logout()
        await session.end("logout")
        return
    if name == "who":
        await refresh(session)
    elif name == "last":
        minutes = data.get("minutes")
        reply = await conn.request(m.Last, minutes=minutes if isinstance(minutes, int) else 0)
        if isinstance(reply, UsersReply):
            await session.emit({"t": "last", "minutes": minutes, "users": reply.users})
        elif isinstance(reply, ErrorReply):
            await session.emit(notice(error_text(reply), "error"))
        return
    elif name in ("busy", "idle", "hide", "appear", "status"):
        if not await _state_command(session, name, str(data.get("text", ""))):
            return
    else:
        await session.emit(notice(f"unknown command {name[:40]!r}", "error"))
        return
    await session.emit({"t": "state", **session.state()})


async def _state_command(session: WebSession, name: str, text: str) -> bool:
    """busy / idle / hide / appear / status: update your own state and say it. False on an error."""
    conn = session.conn
    assert conn is not None
    request: m.Request = {"busy": m.Busy(req=0, text=text), "idle": m.Idle(req=0), "hide": m.Hide(req=0),
                          "appear": m.Appear(req=0), "status": m.Status(req=0)}[name]
    session.gate.clear()  # idle's held messages are pushed right after its reply: they follow its notice
    try:
        reply = await conn.request(request)
        return await _say_state(session, name, text, reply)
    finally:
        session.gate.set()


async def _say_state(session: WebSession, name: str, text: str, reply: Reply) -> bool:
    if isinstance(reply, ErrorReply):
        await session.emit(notice(error_text(reply), "error"))
        return False
    line: Item
    if name == "busy":
        session.me_busy, session.me_busy_text = True, text
        line = notice("you are busy" + (f"; auto-reply: {text}" if text else "") + "; private messages wait until idle")
    elif name == "idle":
        session.me_busy = False
        held = reply.held if isinstance(reply, IdleReply) else 0
        line = notice(f"you are available; {held} held message(s) follow" if held else "you are available")
    elif name in ("hide", "appear"):
        session.me_hidden = name == "hide"
        line = notice("you are hidden from who and last" if session.me_hidden else "you are visible")
    else:
        assert isinstance(reply, StatusReply)
        session.me_busy, session.me_busy_text, session.me_hidden = reply.busy, reply.busy_text, reply.hidden
        line = {"t": "status", "user": reply.user, "busy": reply.busy, "busy_text": reply.busy_text,
                "hidden": reply.hidden, "since_ts": reply.since_ts}
    await session.emit(line)
    return True
