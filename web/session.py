"""One browser session: its broker Connection (zmq_chat.client), the transcript it replays when the
page reconnects, and the state the page shows (who is online, busy marks, your own busy/hidden).

The page talks JSON over the WebSocket (web.server); web.commands runs what it asks. A session
outlives its WebSocket for `resume_seconds`: a page that reconnects with the session's token within
that time gets everything after the last item it saw (`after`), and the broker session goes on. A
private message is acked to the broker only when the page says it rendered it (web.ackcore).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from zmq_chat.client import trust, view
from zmq_chat.client.connection import Connection
from zmq_chat.client.core import BrokerLost, EpochChanged, EventReceived, EventsMissed, MessageReceived, SessionEnded
from zmq_chat.web.ackcore import BrowserAckCore
from zmq_chat.web.items import ENDED, Item, event_item, notice, private_item

log = logging.getLogger(__name__)

KEPT = frozenset({"msg", "bcast", "presence", "mine", "notice"})
"""Item kinds kept in the transcript (numbered `n`, replayed after a reconnect)."""


@dataclass
class Settings:
    """How chat-web reaches the broker: host, port (ROUTER), server_key (Z85 bytes pinned at start,
    None with insecure), insecure (NULL mechanism), key_port (None: port + 2), known (the
    known-brokers file), resume_seconds (how long a session waits for its page to come back),
    transcript (items kept per session for replay), max_sessions (browser sessions at once),
    loopback_only (the page is served on a loopback address: WebSockets must name a loopback Host,
    so a DNS-rebinding page cannot use this server), login_seconds (how long a new browser session
    may stay without logging in before it is closed, so idle pages cannot use up max_sessions)."""

    host: str
    port: int
    server_key: bytes | None
    insecure: bool = False
    key_port: int | None = None
    known: trust.KnownBrokers = field(default_factory=trust.KnownBrokers)
    resume_seconds: float = 60.0
    transcript: int = 2000
    max_sessions: int = 100
    loopback_only: bool = True
    login_seconds: float = 120.0


class WebSession:
    """One browser session (see the module docstring). `token` (str) names it to a page that
    comes back; `on_gone(self)` is called once it is closed for good."""

    def __init__(self, settings: Settings, on_gone: Callable[["WebSession"], None]) -> None:
        self.settings = settings
        self.token = secrets.token_urlsafe(24)
        self.epoch = secrets.token_hex(8)  # changes at each login: the page then starts a clean view
        self.conn: Connection | None = None
        self.user = ""
        self.items: deque[Item] = deque(maxlen=settings.transcript)
        self.n = 0
        self.ws: web.WebSocketResponse | None = None
        self.online: set[str] = set()
        self.recent: list[str] = []
        self.busy_marks: dict[str, str] = {}  # user -> auto-reply text ("" unknown): who, presence, send replies
        self.me_busy, self.me_busy_text, self.me_hidden = False, "", False
        self.ended = ""  # why the last session ended, for a page that comes back
        self.sent: set[str] = set()  # send ids of this session's own messages
        self._on_gone = on_gone
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self.gate = asyncio.Event()  # cleared: what arrives waits (e.g. held messages behind idle's notice)
        self.gate.set()
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self.logging_in = False  # a login request is running (commands.login runs one at a time)

    # ---- the page -------------------------------------------------------------------------

    async def attach(self, ws: web.WebSocketResponse, after: int) -> None:
        """Serve the page on `ws`: the hello with the current state, then every kept item numbered
        above `after` (all of them when the page's epoch differs: it starts a clean view). A page
        already attached is closed (the newest wins)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        old, self.ws = self.ws, ws
        if old is not None and old is not ws:
            with contextlib.suppress(Exception):
                await old.close(code=4000, message=b"replaced by another page")
        async with self._lock:
            await self._send_locked(self.hello())
            for item in list(self.items):
                if item["n"] > after:
                    await self._send_locked(item)

    def expect_login(self) -> None:
        """Close this session unless it logged in within settings.login_seconds (a new session)."""
        def check() -> None:
            if self.conn is None and not self.closed:
                asyncio.ensure_future(self.close())
        asyncio.get_running_loop().call_later(self.settings.login_seconds, check)

    def detach(self, ws: web.WebSocketResponse) -> None:
        """The page's WebSocket closed: wait `resume_seconds` for it to come back, then close."""
        if self.ws is not ws or self.closed:
            return
        self.ws = None
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self.settings.resume_seconds, lambda: asyncio.ensure_future(self.close()))

    def hello(self) -> Item:
        """The state the page shows: who you are (user "" before login), your busy/hidden state, who
        is online, recently online, busy marks, the transcript epoch and the last end."""
        session = self.conn.core.session if self.conn is not None else None
        return {"t": "hello", "token": self.token, "epoch": self.epoch, "user": self.user,
                "max_chars": session.max_message_chars if session else 1000, "ended": self.ended,
                **self.state()}

    def state(self) -> Item:
        """The page's live state: me (busy, busy_text, hidden), online, recent, busy marks."""
        return {"me": {"busy": self.me_busy, "busy_text": self.me_busy_text, "hidden": self.me_hidden},
                "online": sorted(self.online), "recent": [u for u in self.recent if u not in self.online],
                "busy": dict(self.busy_marks)}

    async def emit(self, item: Item) -> None:
        """Send `item` to the page if attached; kinds in KEPT are numbered and kept for replay."""
        async with self._lock:
            if item["t"] in KEPT:
                self.n += 1
                item["n"] = self.n
                self.items.append(item)
            await self._send_locked(item)

    async def _send_locked(self, item: Item) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_json(item)
        except (ConnectionError, RuntimeError):  # the page went away: it resumes from its last `n`
            pass

    # ---- the broker session ---------------------------------------------------------------

    def new_connection(self) -> Connection:
        """A Connection to the broker with the pinned key and the browser-ack core."""
        s = self.settings
        return Connection(s.host, s.port, core=BrowserAckCore(), client_name="chat-web", server_key=s.server_key,
                          insecure=s.insecure, key_port=s.key_port, known=s.known)

    def started(self, conn: Connection) -> None:
        """`conn` has just logged in: forget the password (Connection keeps it for failover, which
        chat-web does not do), start a clean transcript and the pump of what arrives."""
        assert conn.core.session is not None
        conn.credentials = None
        self.conn = conn
        self.user = conn.core.session.user
        self.epoch = secrets.token_hex(8)
        self.items.clear()
        self.online, self.recent, self.busy_marks = {self.user}, [], {}
        self.me_busy, self.me_busy_text, self.me_hidden = False, "", False
        self.ended = ""
        self.sent = set()
        self._pump = asyncio.create_task(self._run_pump(conn))

    async def _run_pump(self, conn: Connection) -> None:
        try:
            while True:
                item = await conn.next_event()
                await self.gate.wait()
                if isinstance(item, (SessionEnded, BrokerLost)):
                    reason = item.reason if isinstance(item, SessionEnded) else "lost"
                    message = item.message if isinstance(item, SessionEnded) else ""
                    await self.end(reason, message, from_pump=True)
                    return
                await self._show(conn, item)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never let one page's trouble go unnoticed
            log.exception("chat-web: the event pump of a session failed")
            await self.end("lost", "", from_pump=True)

    async def _show(self, conn: Connection, item: Any) -> None:
        session = conn.core.session
        if isinstance(item, MessageReceived):
            await self.emit(private_item(item.message, session.since_ts if session else 0.0))
        elif isinstance(item, EventReceived):
            await self._show_event(item)
        elif isinstance(item, EventsMissed):
            await self.emit(notice(f"events {item.after + 1} to {item.resumed - 1} are no longer available"))
        elif isinstance(item, EpochChanged):
            await self.emit(notice(view.EPOCH_LOST, "error"))

    async def _show_event(self, item: EventReceived) -> None:
        event = item.event
        if event.kind == "presence":
            if item.catchup or event.user == self.user:
                return  # the catch-up's joins and quits: `who` says who is online now
            if event.event == "busy":  # (busy and available: the user stays online)
                self.busy_marks.setdefault(event.user, "")
            elif event.event == "available":
                self.busy_marks.pop(event.user, None)
            elif event.event == "login":
                self.online.add(event.user)
                self.busy_marks.pop(event.user, None)
            else:
                self.online.discard(event.user)
                self.busy_marks.pop(event.user, None)
                self.recent = [event.user, *(u for u in self.recent if u != event.user)]
        elif event.user == self.user and event.cid in self.sent:
            return  # your own broadcast: shown from its reply already
        await self.emit(event_item(event, item.catchup))

    async def end(self, reason: str, message: str = "", *, from_pump: bool = False) -> None:
        """The broker session is over (`reason`: a SessionEnded reason, "lost" or "logout"): tell the
        page in plain words, close the Connection; the page shows the login form again."""
        conn, self.conn = self.conn, None
        pump, self._pump = self._pump, None
        if pump is not None and not from_pump:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        self.ended = ENDED.get(reason) or message or f"the session ended ({reason})"
        self.user = ""
        if conn is not None:
            await conn.close(linger=reason == "logout")
        await self.emit({"t": "ended", "reason": reason, "text": self.ended})

    async def close(self) -> None:
        """Close for good: log out (acks of rendered messages first), drop the Connection. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        conn = self.conn
        if conn is not None and conn.core.session is not None:
            with contextlib.suppress(Exception):
                await conn.logout()
        if self.conn is not None or self._pump is not None:
            await self.end("logout")
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        self._on_gone(self)
