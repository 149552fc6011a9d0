"""The zmq side of one client: a DEALER for requests, replies and private messages, a SUB for
broadcasts and presence, driven with asyncio (zmq.asyncio). All protocol decisions are made by
client.core.ClientCore; this module only moves frames and wakes waiters.

    conn = Connection("chat.example.org", 4119)
    hello = await conn.connect()                      # ConnectError -> exit 2
    reply = await conn.login("alice", "secret123")    # LoginReply | ErrorReply; opens the SUB
    reply = await conn.request(m.Who)                 # UsersReply | ErrorReply; RequestTimeout
    async for item in conn:                           # MessageReceived | EventReceived | ...
        ...
    await conn.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import zmq
import zmq.asyncio

from zmq_chat.client import sockets, trust
from zmq_chat.client.adapter import SubFollower, check_hello, hello_request
from zmq_chat.client.core import BrokerLost, ClientCore, Output, ReplyReceived
from zmq_chat.client.errors import ConnectError, ConnectionClosed, RequestTimeout
from zmq_chat.client.requests import SessionRequests
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.replies import HelloReply, Reply
from zmq_chat.protocol.wire import TYPE_OF

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 3.5
"""Seconds to wait for the `hello` reply before declaring the broker unreachable."""
DEFAULT_TIMEOUT = 5.0
"""Request timeout in seconds before a session gives the heartbeat timeout."""


class Connection(SubFollower, SessionRequests):
    """One client connection: owns a zmq.asyncio Context, the DEALER and (in a session) the SUB.

    Args:
        host: broker DNS name or IP literal.
        port: broker ROUTER port (the PUB port comes from the login reply).
        core: the protocol state (a fresh ClientCore when None).
        client_name: sent in `hello` as `client`.
        server_key: the broker's public key (Z85 bytes) to trust; None: CHAT_SERVER_KEY, the
            known-brokers file, or the key endpoint with `trust_prompt` (client.trust).
        insecure: use the NULL mechanism (clear text) instead of CURVE.
        key_port: the broker's key endpoint port (default port + 2).
        known: the known-brokers file (default client.trust.KnownBrokers()).
        trust_prompt: asked before trusting a key seen for the first time; None refuses.
    Attributes:
        core: the ClientCore.
        hello: the ok hello reply (protocol.replies.HelloReply) after connect(), else None.
        address: "host:port" as given, for messages.
        key_choice: the broker key in use after connect() (client.trust.KeyChoice).
    All coroutines must run on one event loop; the object is not thread-safe.
    """

    def __init__(self, host: str, port: int = sockets.DEFAULT_PORT, *, core: ClientCore | None = None,
                 client_name: str = "chat-client", server_key: bytes | None = None, insecure: bool = False,
                 key_port: int | None = None, known: trust.KnownBrokers | None = None,
                 trust_prompt: trust.TrustPrompt | None = None) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.core = core or ClientCore()
        self.hello: HelloReply | None = None
        self.key_choice: trust.KeyChoice | None = None
        self._client_name = client_name
        self._server_key = server_key
        self._insecure = insecure
        self._key_port = key_port or port + 2
        self.known = known or trust.KnownBrokers()
        self._trust_prompt = trust_prompt
        self._keys = sockets.CurveKeys(None)
        self._ctx: zmq.asyncio.Context | None = None
        self._dealer: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._ip = ""
        self._ipv6 = False
        self._waiters: dict[int, asyncio.Future[Reply]] = {}
        self._events: asyncio.Queue[Output] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._closed = False
        self._broken = ""  # why the connection cannot go on (the SUB could not be opened)
        self.generation = 0  # how many times switch() moved to another broker
        self.credentials: tuple[str, str] | None = None  # (user, password) of the session, for failover

    @property
    def trust_prompt(self) -> trust.TrustPrompt | None:
        """What is asked at first use of a broker key (None refuses an unknown key)."""
        return self._trust_prompt

    @property
    def insecure(self) -> bool:
        """True when this connection speaks NULL (--insecure) instead of CURVE."""
        return self._insecure

    # ---- lifecycle ------------------------------------------------------------------------

    async def connect(self, timeout: float = HELLO_TIMEOUT) -> HelloReply:
        """Resolve the host, choose the broker key (client.trust), connect the DEALER and exchange
        `hello`; a key taken on first use is recorded once the handshake succeeded.

        Args:
            timeout: seconds to wait for the hello reply; shortened so that resolving (at most
                2 s) and hello together stay within about 4.5 s.
        Returns:
            the ok hello reply (protocol.replies.HelloReply: version, broker, max_message_chars,
            min_password_chars, curve).
        Raises:
            ConnectError: unresolvable host, no answer in time (nothing listening, wrong port,
                firewall, not a zmq peer), a key that is not the broker's (KeyMismatch when it
                differs from the recorded one), a broker in the other mode (CURVE / --insecure),
                a key not trusted at first use, a reply that is not a chat broker's, or E_VERSION.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        choice = await self._choose_key(started + 4.0)
        self._ctx = zmq.asyncio.Context()
        try:
            self._dealer = sockets.open_dealer(self._ctx, sockets.endpoint(self._ip, self.port, self._ipv6),
                                               self._ipv6, keys=self._keys)
        except zmq.ZMQError as exc:
            raise ConnectError(f"cannot connect to {self.address}: {exc}") from None
        self._tasks = [asyncio.create_task(self._dealer_loop()), asyncio.create_task(self._timer_loop())]
        timeout = max(1.0, min(timeout, started + 4.0 - loop.time()))  # whole connect within ~5 s
        reply = check_hello(await self._hello(self._dealer, choice, timeout, started), self.address)
        if choice.source == "first use" and choice.key is not None:
            try:
                self.known.remember(self.address, choice.key)
            except OSError as exc:
                log.warning("could not record the broker key in %s: %s", self.known.path, exc)
        self.hello = reply
        return reply

    async def _choose_key(self, until: float) -> trust.KeyChoice:
        """Resolve the host and choose the broker key (asking the key endpoint at first use until
        `until`, loop time in s); sets key_choice and the CURVE keys. Raises ConnectError."""
        loop = asyncio.get_running_loop()
        self._ip, self._ipv6 = await loop.run_in_executor(None, sockets.resolve_host, self.host, self.port, 2.0)
        choice = trust.choose_key(self.address, self._server_key, self._insecure, self.known)
        if choice is None:
            choice = await trust.first_use(self.address, self._ip, self._key_port, self._ipv6,
                                           min(trust.KEY_TIMEOUT, until - loop.time()), self._trust_prompt)
        self.key_choice = choice
        self._keys = sockets.CurveKeys.new(choice.key)
        return choice

    async def _hello(self, dealer: zmq.asyncio.Socket, choice: trust.KeyChoice, timeout: float, started: float) -> Reply:
        """Send `hello` on `dealer` (keys from `choice`) and wait up to `timeout` s for the reply,
        watching the handshake. Raises ConnectError explaining a failed handshake or a silence
        (trust.explain, with the time since `started`, loop time in s)."""
        monitor = dealer.get_monitor_socket(trust.HANDSHAKE_EVENTS)
        hello = asyncio.ensure_future(self.request(hello_request(self._client_name), timeout))
        try:
            failed = await trust.hello_failed(hello, monitor)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                dealer.disable_monitor()
            monitor.close(0)
        if failed:
            raise await trust.explain(self.address, self._ip, self._key_port, self._ipv6, choice, self.known,
                                      asyncio.get_running_loop().time() - started)
        return hello.result()

    async def switch(self, host: str, port: int, *, server_key: bytes | None = None, key_port: int | None = None,
                     trust_prompt: trust.TrustPrompt | None = None) -> HelloReply:
        """Leave the current broker and connect to another one of the same chat (failover): the
        core keeps what a resumed session needs (ClientCore.lose_session), waiting requests fail
        with ConnectionClosed, the sockets are dropped (no linger), a queued BrokerLost is
        discarded, and `connect()` runs against host:port with its own key (client.trust, per
        "host:port"). The events already queued stay. Log in again afterwards.

        Args:
            host, port: the other broker's ROUTER endpoint.
            server_key: its key (Z85 bytes) or None (CHAT_SERVER_KEY, known-brokers, first use).
            key_port: its key endpoint port (default port + 2).
            trust_prompt: asked at first use of its key (None refuses an unknown key).
        Returns/Raises: as connect().
        """
        self.core.lose_session()
        await self._shutdown(linger=False)
        self._follow_session()  # no session now: forgets the SUB
        kept = [item for item in self.drain_events() if not isinstance(item, BrokerLost)]
        for item in kept:
            self._events.put_nowait(item)
        self.host, self.port, self.address = host, port, f"{host}:{port}"
        self._server_key, self._key_port = server_key, key_port or port + 2
        self._trust_prompt = trust_prompt
        self.hello = self.key_choice = None
        self._broken = ""
        self._closed = False
        self.generation += 1
        return await self.connect()

    async def close(self, linger: bool = True) -> None:
        """Stop the receive tasks and close the sockets and the context. Idempotent; waiting
        requests fail with ConnectionClosed.

        Args:
            linger: True: queued messages get up to 500 ms to leave; False: drop them at once (use
                when the broker never answered, so closing cannot block).
        """
        if self._closed:
            return
        await self._shutdown(linger)

    async def _shutdown(self, linger: bool) -> None:
        """Cancel the tasks, fail the waiters, close the sockets and the context (see close)."""
        self._closed = True
        tasks = self._tasks + ([self._sub_task] if self._sub_task else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiters(ConnectionClosed("connection closed"))  # each leaves _waiters as it ends
        for sock in (self._sub, self._dealer):
            if sock is not None:
                sock.close(sockets.LINGER_MS if linger else 0)
        self._sub = self._dealer = None
        self._sub_task = None
        self._tasks = []
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # ---- requests -------------------------------------------------------------------------

    async def request(self, msg: m.Request | type[m.Request], timeout: float | None = None, **fields: Any) -> Reply:
        """Send one request and wait for its reply.

        Args:
            msg: a Request instance (its `req` is replaced) or a Request class built with `fields`
                (e.g. request(m.Send, id=..., to=[...], text=...)).
            timeout: seconds to wait; default heartbeat_timeout in a session, else 5 s.
        Returns:
            the typed reply (protocol.replies: the ok Struct of the request's type, or ErrorReply);
            an error reply is returned, not raised.
        Raises:
            RequestTimeout: no reply in time (the late reply, if any, is ignored).
            ConnectionClosed: the connection is closed, or broken (the SUB could not be opened).
        """
        if self._closed or self._dealer is None or self._broken:
            raise ConnectionClosed(self._broken or "connection closed")
        if isinstance(msg, type):
            msg = msg(req=0, **fields)
        if timeout is None:
            timeout = self.core.session.heartbeat_timeout if self.core.session else DEFAULT_TIMEOUT
        return (await self._replies([self.core.request(msg)], TYPE_OF[type(msg)], timeout))[0]

    async def _replies(self, reqs: list[int], type_: bytes, timeout: float) -> list[Reply]:
        """Send what the core queued and wait for the replies to `reqs` (RequestTimeout after
        `timeout` seconds; late replies are ignored)."""
        loop = asyncio.get_running_loop()
        futs = [self._waiters.setdefault(req, loop.create_future()) for req in reqs]
        try:
            await self._flush()
            return list(await asyncio.wait_for(asyncio.gather(*futs), timeout))
        except asyncio.TimeoutError:
            raise RequestTimeout(type_, timeout) from None
        finally:
            for req in reqs:
                self._waiters.pop(req, None)
                self.core.forget(req)
            self._wake_timer()

    # ---- events ---------------------------------------------------------------------------

    async def next_event(self) -> Output:
        """Wait for the next MessageReceived, EventReceived, EventsMissed, SessionEnded or BrokerLost."""
        return await self._events.get()

    def drain_events(self) -> list[Output]:
        """Take the events already queued, without waiting (e.g. the tail of a session that ended)."""
        return [self._events.get_nowait() for _ in range(self._events.qsize())]

    def __aiter__(self) -> "Connection":
        return self

    async def __anext__(self) -> Output:
        return await self.next_event()

    # ---- internals ------------------------------------------------------------------------

    def _open_sub(self, pub_port: int, topics: list[bytes]) -> None:
        assert self._ctx is not None
        self._sub = sockets.open_sub(self._ctx, sockets.endpoint(self._ip, pub_port, self._ipv6), self._ipv6,
                                     keys=self._keys, topics=topics)
        self._sub_task = asyncio.create_task(self._sub_loop(self._sub))

    def _close_sub(self) -> None:
        if self._sub_task is not None:
            self._sub_task.cancel()
            self._sub_task = None
        if self._sub is not None:
            self._sub.close(0)
            self._sub = None

    async def _flush(self) -> None:
        for frames in self.core.data_to_send():
            if self._dealer is None:
                return
            try:
                await self._dealer.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                log.warning("send queue full; dropped a %s request", frames[0].decode(errors="replace"))

    def _dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, ReplyReceived):
                fut = self._waiters.get(out.req)
                if fut is not None and not fut.done():
                    fut.set_result(out.body)
                continue
            self._events.put_nowait(out)

    def _fail_waiters(self, exc: Exception) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _dealer_loop(self) -> None:
        assert self._dealer is not None
        while True:
            frames = await self._dealer.recv_multipart()
            try:
                outputs = self.core.receive_dealer(frames)
            except ProtocolError as exc:
                log.warning("bad message from the broker: %s", exc)
                if self.hello is None:
                    self._fail_waiters(ConnectError(f"{self.address} is not a chat broker ({exc.message})"))
                continue
            try:
                self._follow_session()  # a login opens the SUB, the end of a session closes it
            except zmq.ZMQError as exc:  # e.g. too many open files: a session without its events
                self._broken = f"cannot open the event socket to {self.address}: {exc}"
                log.error("%s", self._broken)
                self._fail_waiters(ConnectionClosed(self._broken))  # before the login's reply is given
                return
            self._dispatch(outputs)
            self._wake_timer()  # acks (or the welcome timeout) may now be due
            await self._flush()

    async def _sub_loop(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            try:
                outputs = self.core.receive_event(frames)
            except ProtocolError as exc:
                log.warning("bad event from the broker: %s", exc)
                continue
            self._dispatch(outputs)
            await self._flush()

    def _wake_timer(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _timer_loop(self) -> None:
        # A bare future + call_later instead of wait_for(Event.wait()): on Python 3.11 wait_for can
        # swallow a cancel that races with the event, which would keep this task alive after close().
        loop = asyncio.get_running_loop()
        while not self._closed:
            delay = min(max(self.core.next_timeout(), 0.01), 1.0)
            self._wake = loop.create_future()
            handle = loop.call_later(delay, self._wake_timer)
            try:
                await self._wake
            finally:
                handle.cancel()
                self._wake = None
            outputs = self.core.tick()
            self._dispatch(outputs)
            await self._flush()
            for out in outputs:
                if isinstance(out, BrokerLost):
                    log.info("broker lost: a request waited %.1f s", out.waited)
