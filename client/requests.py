"""The account and session requests of the asyncio client connection (a mixin of
client.connection.Connection): `login` and `register`, retried with backoff while the broker is
overloaded, and `logout`, which first has the acks of the messages shown confirmed. The host
supplies `request`, `_replies`, `core`, `_follow_session` and the state flags named below.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any, Callable

from zmq_chat.client.core import ClientCore
from zmq_chat.client.errors import ConnectionClosed, RequestTimeout
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import UNSET, ErrorReply, Reply
from zmq_chat.protocol.version import PROTOCOL_VERSION

OVERLOADED_PATIENCE = 20.0
"""Seconds a login or registration is retried while the broker answers E_OVERLOADED."""


class SessionRequests:
    """Mixin: login / register / logout on top of the host's `request` (see the module docstring).

    Attributes:
        credentials: (user, password) of the session after an ok login, None after logout; kept
            in memory only, to log in again after a failover (Connection.switch).
    """

    core: ClientCore
    credentials: tuple[str, str] | None = None
    _closed: bool
    _broken: str

    if TYPE_CHECKING:  # supplied by the host class
        async def request(self, msg: Any, timeout: float | None = None, **fields: Any) -> Reply: ...

        async def _replies(self, reqs: list[int], type_: bytes, timeout: float) -> list[Reply]: ...

        def _follow_session(self) -> None: ...

    async def _with_backoff(self, make: Callable[[], m.Request], timeout: float) -> Reply:
        """Send the request `make()` builds; while the broker answers E_OVERLOADED (its login queue
        is full), send it again after retry_after seconds, doubling up to 8 s, for at most
        OVERLOADED_PATIENCE seconds in all; after a first timeout send it once more (a retried
        login or registration gets the first answer, docs 9.2). Returns the last reply."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + OVERLOADED_PATIENCE
        delay = 0.0
        retried = False
        while True:
            try:
                reply = await self.request(make(), timeout)
            except RequestTimeout:
                if retried:
                    raise
                retried = True  # lost with a connection the broker cut while we were idle: once more
                continue
            if not isinstance(reply, ErrorReply) or reply.code != ErrorCode.OVERLOADED or loop.time() >= give_up:
                return reply
            hint = reply.retry_after
            base = hint if hint is not UNSET and hint > 0 else 0.5
            delay = min(8.0, max(base, delay * 2))
            await asyncio.sleep(min(delay * random.uniform(0.8, 1.2), max(0.0, give_up - loop.time())))

    async def login(self, user: str, password: str, timeout: float = 10.0) -> Reply:
        """Log in (retried with backoff while the broker is overloaded); the ok reply opens the SUB
        (client.adapter.SubFollower) and the catch-up history follows the broker's welcome.

        Returns the LoginReply or an ErrorReply (check `.ok`). Raises RequestTimeout / ConnectionClosed.
        An ok login keeps (user, password) in `credentials` until logout, to log in again after a
        failover (switch).
        """
        reply = await self._with_backoff(
            lambda: m.Login(req=0, version=PROTOCOL_VERSION, user=user, password=password), timeout)
        if reply.ok:
            self.credentials = (user, password)
        return reply

    async def register(self, user: str, password: str, timeout: float = 10.0) -> Reply:
        """Create an account (does not log in; retried with backoff while the broker is
        overloaded). Returns the RegisterReply or an ErrorReply. Raises like request()."""
        return await self._with_backoff(
            lambda: m.Register(req=0, version=PROTOCOL_VERSION, user=user, password=password), timeout)

    async def logout(self, timeout: float = 2.0) -> Reply | None:
        """End the session: send `logout`, wait up to `timeout` s, close the SUB. Never raises for a
        missing reply; returns the reply (LogoutReply or ErrorReply) or None."""
        reply: Reply | None = None
        self.credentials = None
        if self.core.session is not None and not self._closed and not self._broken:
            with contextlib.suppress(RequestTimeout, ConnectionClosed):
                await self._flush_acks(timeout)
                reply = await self.request(m.Logout, timeout)
        self.core.end_session()
        self._follow_session()
        return reply

    async def _flush_acks(self, timeout: float) -> None:
        """Send the acks not sent yet and wait for their replies, so that the private messages
        shown in this session are not shown again at the next login."""
        reqs = self.core.flush_acks()
        if reqs:
            await self._replies(reqs, b"ack", timeout)
