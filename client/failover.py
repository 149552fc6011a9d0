"""A terminal client's brokers (several brokers of one chat, client.brokers): connecting to the
first that answers at start, recording the keys of the others while the user can still answer the
first-use question, and failing over when the broker in use stops answering: round robin from the
next one with the backoff of client.brokers.failover_plan, logging in again with the session's
credentials (the core resumes from its last seq, client.core.ClientCore.lose_session).

    brokers = BrokerSet(parse_hosts(["a:4119,b:4119"], 4119), [None, None], accept_key=False)
    conn = Connection(brokers.first.host, brokers.first.port, ...)
    await brokers.connect(conn, say=print)                  # ConnectError when none answers
    ...
    outcome = await brokers.fail_over(conn)                 # FailoverOutcome(address, problem)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from zmq_chat.client import trust, view
from zmq_chat.client.brokers import BrokerAddress, failover_plan
from zmq_chat.client.connection import Connection
from zmq_chat.client.errors import ConnectError, ConnectionClosed, RequestTimeout
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import ErrorReply

log = logging.getLogger(__name__)

FAILOVER_PATIENCE = 60.0
"""Seconds a lost session keeps trying the brokers (rounds with backoff) before it gives up."""
PASSING_CODES = frozenset({ErrorCode.OVERLOADED.value, ErrorCode.SHUTTING_DOWN.value, ErrorCode.INTERNAL.value,
                           ErrorCode.RATE_LIMITED.value})
"""Login errors after which the next broker is tried; any other refusal ends the failover."""


@dataclass(frozen=True)
class FailoverOutcome:
    """What `BrokerSet.fail_over` did: address ("host:port" now in use) or "" when no broker took the
    session; problem: why not (one line), "" on success."""

    address: str
    problem: str = ""


class BrokerSet:
    """The brokers one client may use, in --host order.

    Args:
        brokers: at least one BrokerAddress.
        keys: the key each broker is trusted with (Z85 bytes or None, same length as `brokers`).
        key_port: the key endpoint port of every broker (None: each broker's port + 2).
        accept_key: trust a broker key seen for the first time during a failover without asking
            (--accept-key); otherwise such a broker is skipped (its key is asked at start).
        patience: seconds `fail_over` keeps trying.
    Attributes:
        current: index of the broker in use.
    """

    def __init__(self, brokers: list[BrokerAddress], keys: list[bytes | None], *, key_port: int | None = None,
                 accept_key: bool = False, patience: float = FAILOVER_PATIENCE) -> None:
        if not brokers or len(keys) != len(brokers):
            raise ValueError("one key (or None) per broker, at least one broker")
        self.brokers = brokers
        self.keys = keys
        self.key_port = key_port
        self.accept_key = accept_key
        self.patience = patience
        self.current = 0

    def __len__(self) -> int:
        return len(self.brokers)

    @property
    def first(self) -> BrokerAddress:
        """The broker the client tries first."""
        return self.brokers[0]

    async def connect(self, conn: Connection, say: Callable[[str], None]) -> None:
        """Connect `conn` (made for `first`, with the interactive trust prompt) to the first broker
        that answers, in order; `say` gets one line per broker that did not. Sets `current`.
        Raises ConnectError (the last broker's reason) when none answered."""
        for index, broker in enumerate(self.brokers):
            try:
                if index == 0:
                    await conn.connect()
                else:
                    await conn.switch(broker.host, broker.port, server_key=self.keys[index], key_port=self.key_port,
                                      trust_prompt=conn.trust_prompt)
            except ConnectError as exc:
                if index == len(self.brokers) - 1:
                    raise
                say(f"{exc}; trying {self.brokers[index + 1].address}")
                continue
            self.current = index
            return

    async def learn_keys(self, conn: Connection, say: Callable[[str], None]) -> None:
        """Connect once (hello only) to every other broker whose key is neither given nor recorded,
        so that its key is asked (conn.trust_prompt) and recorded now, at start, rather than during
        a failover, when nobody can be asked. `say` gets one line per broker recorded or not reached."""
        if conn.insecure:
            return
        for index, broker in enumerate(self.brokers):
            try:
                if index == self.current or trust.choose_key(broker.address, self.keys[index], False, conn.known):
                    continue
            except ConnectError as exc:  # a malformed --server-key for this broker
                say(f"{broker.address}: {exc}")
                continue
            probe = Connection(broker.host, broker.port, key_port=self.key_port, known=conn.known,
                               trust_prompt=conn.trust_prompt)
            try:
                await probe.connect()
                say(f"recorded the key of {broker.address} in {conn.known.path}")
            except ConnectError as exc:
                say(f"{exc} (a failover to {broker.address} needs its key: --accept-key or --server-key)")
            finally:
                await probe.close(linger=False)

    async def fail_over(self, conn: Connection) -> FailoverOutcome:
        """The broker in use stopped answering: move `conn` to the next broker that answers and log
        in there again with conn.credentials (round robin from the next one, the lost one last,
        backoff between rounds, for at most `patience` seconds). Requests waiting on `conn` fail
        with ConnectionClosed (send them again afterwards; a send keeps its id).

        Returns:
            FailoverOutcome(address now in use) on success; FailoverOutcome("", problem) when no
            broker took the session in time, a broker refused the login (e.g. the password
            changed), or there are no credentials (no session).
        """
        credentials = conn.credentials
        if credentials is None:
            return FailoverOutcome("", "not logged in")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience
        problems: dict[str, str] = {}
        prompt = trust_anything if self.accept_key else None
        for index, wait in failover_plan(len(self.brokers), self.current):
            if loop.time() + wait >= give_up:
                break
            await asyncio.sleep(wait)
            broker = self.brokers[index]
            try:
                await conn.switch(broker.host, broker.port, server_key=self.keys[index], key_port=self.key_port,
                                  trust_prompt=prompt)
                reply = await conn.login(*credentials)
            except (ConnectError, RequestTimeout, ConnectionClosed) as exc:
                log.info("failover to %s: %s", broker.address, exc)
                problems[broker.address] = str(exc)
                continue
            if isinstance(reply, ErrorReply):
                if reply.code not in PASSING_CODES:
                    return FailoverOutcome("", f"{broker.address} refused the login: {view.error_line(reply)}")
                problems[broker.address] = view.error_line(reply)
                continue
            self.current = index
            return FailoverOutcome(conn.address)
        detail = "; ".join(f"{address}: {why}" for address, why in problems.items())
        return FailoverOutcome("", f"no broker took the session within {self.patience:g} s ({detail})")


async def trust_anything(address: str, fp: str) -> bool:
    """The first-use answer during a failover with --accept-key: yes, saying so in one line."""
    print(f"trusting the key {fp} of {address} (--accept-key)")
    return True
