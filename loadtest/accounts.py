"""The preparation step: create the load-test accounts before the measured run.

Registration costs the broker one argon2id hash (~58 ms of CPU) per account, so it is kept out of
the measured window, and it is resumable: an account that exists (E_USER_EXISTS, answered without
hashing) counts as done, so a second call only creates what is missing. The broker accepts one
login/registration in flight per connection, so the work is spread over `concurrency` DEALER
connections in one zmq.Poller loop; E_OVERLOADED answers are retried after a short pause.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import zmq

from zmq_chat.client.core import Output, ReplyReceived
from zmq_chat.client.sync import SyncConnection
from zmq_chat.loadtest.connect import resolve
from zmq_chat.loadtest.ledgers import PhasePace, tally
from zmq_chat.loadtest.options import DEFAULT_PASSWORD, user_names
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.version import PROTOCOL_VERSION

RETRY_DELAY = 0.05
"""Seconds before a registration answered E_OVERLOADED is sent again."""
REQUEST_TIMEOUT = 30.0
"""Seconds one registration may wait for its reply before it counts as failed ("timeout")."""


@dataclass
class PrepareResult(PhasePace):
    """Outcome of `prepare_accounts`.

    Fields: the PhasePace (elapsed_s: seconds; rate: created accounts per second), requested
    (accounts asked for), created (new), existed (E_USER_EXISTS: already there), failed {code or
    "timeout": count}, retries (E_OVERLOADED answers retried).
    """

    requested: int = 0
    created: int = 0
    existed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0

    @property
    def ready(self) -> int:
        """Accounts that exist now (created + existed)."""
        return self.created + self.existed

    @property
    def ok(self) -> bool:
        """True when every requested account exists."""
        return self.ready == self.requested

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "ready": self.ready}


def prepare_accounts(
    host: str,
    port: int,
    count: int,
    prefix: str = "",
    password: str = DEFAULT_PASSWORD,
    *,
    start: int = 0,
    concurrency: int = 64,
    timeout: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    server_key: bytes | None = None,
) -> PrepareResult:
    """Register accounts "lt<prefix><i>" for i in start .. start+count-1, all with `password`.

    Args:
        host, port: broker ROUTER address.
        count: accounts wanted (>= 0).
        prefix: name prefix after "lt" (letters/digits).
        password: their password (must satisfy the broker's minimum length).
        start: first index.
        concurrency: connections registering in parallel (one request in flight each).
        timeout: most seconds for the whole step (None: 60 + 0.2 per account); what is left then
            counts as failed "timeout".
        progress: called as progress(done, count) at most ~10 times a second.
        server_key: the broker's public key (Z85 bytes); None speaks NULL (--insecure broker).
    Returns:
        PrepareResult. An E_USER_EXISTS answer counts as `existed` (the account may have another
        password: the login phase would then fail with E_BAD_CREDENTIALS).
    Raises:
        BrokerUnreachable: the host does not resolve.
    """
    result = PrepareResult(requested=count)
    if count <= 0:
        return result
    address, ipv6 = resolve(host, port)
    deadline = time.monotonic() + (timeout if timeout is not None else 60.0 + 0.2 * count)
    ctx = zmq.Context()
    ctx.max_sockets = max(1024, concurrency + 16)
    poller = zmq.Poller()
    work = _Registrations(result, user_names(prefix, count, start), password)
    conns = [SyncConnection(ctx, poller, address, port, ipv6=ipv6, server_key=server_key, registry=work.owner)
             for _ in range(max(1, min(concurrency, count)))]
    began = time.monotonic()
    try:
        work.run(conns, poller, deadline, progress)
    finally:
        for c in conns:
            c.close()
        ctx.term()
    result.set_pace(time.monotonic() - began, result.created)
    if progress is not None:
        progress(work.answered(), count)
    return result


class _Registrations:
    """The registrations of `prepare_accounts` in flight: one per connection at a time; E_OVERLOADED
    answers are sent again after RETRY_DELAY; `owner` is the SyncConnections' socket registry."""

    def __init__(self, result: PrepareResult, names: list[str], password: str) -> None:
        self.result = result
        self.password = password
        self.todo: deque[str] = deque(names)
        self.busy: dict[SyncConnection, tuple[int, str, float]] = {}  # conn -> (req, name, sent at)
        self.retry: deque[tuple[float, str]] = deque()  # (monotonic s, name)
        self.owner: dict[Any, SyncConnection] = {}

    def unfinished(self) -> bool:
        """True while names wait to be sent, to be retried, or for their answer."""
        return bool(self.todo or self.busy or self.retry)

    def answered(self) -> int:
        """Names done for good: created, existed or failed."""
        return self.result.ready + sum(self.result.failed.values())

    def run(self, conns: list[SyncConnection], poller: zmq.Poller, deadline: float,
            progress: Callable[[int, int], None] | None) -> None:
        """Send on `conns` and read what `poller` reports until every name is answered or `deadline`
        (monotonic s) passes, then count what is left as "timeout"; `progress(answered, requested)`
        at most every 0.1 s."""
        last_progress = 0.0
        while self.unfinished() and time.monotonic() < deadline:
            self.send(conns)
            ready = dict(poller.poll(50))
            for sock in ready:
                conn = self.owner.get(sock)
                if conn is not None:
                    for out in conn.handle(ready):
                        self.answer(conn, out)
            now = time.monotonic()
            self.expire(now)
            if progress is not None and now - last_progress >= 0.1:
                last_progress = now
                progress(self.answered(), self.result.requested)
        self.give_up()

    def send(self, conns: list[SyncConnection]) -> None:
        """Send the next names (retries that are due first) on the idle connections."""
        now = time.monotonic()
        while self.retry and self.retry[0][0] <= now:
            self.todo.appendleft(self.retry.popleft()[1])
        for c in conns:
            if not self.todo:
                break
            if c not in self.busy:
                name = self.todo.popleft()
                req = c.send(m.Register(req=0, version=PROTOCOL_VERSION, user=name, password=self.password))
                self.busy[c] = (req, name, now)

    def answer(self, c: SyncConnection, out: Output) -> None:
        """Count the answer to `c`'s registration (other outputs are ignored)."""
        if not isinstance(out, ReplyReceived) or c not in self.busy or out.req != self.busy[c][0]:
            return
        _, name, _ = self.busy.pop(c)
        if out.ok:
            self.result.created += 1
        elif out.code == ErrorCode.USER_EXISTS:
            self.result.existed += 1
        elif out.code == ErrorCode.OVERLOADED:
            self.result.retries += 1
            self.retry.append((time.monotonic() + RETRY_DELAY, name))
        else:
            tally(self.result.failed, out.code or "error")

    def expire(self, now: float) -> None:
        """Registrations unanswered for REQUEST_TIMEOUT seconds count as failed ("timeout")."""
        for c, (req, _, sent) in list(self.busy.items()):
            if now - sent > REQUEST_TIMEOUT:
                c.core.forget(req)
                del self.busy[c]
                tally(self.result.failed, "timeout")

    def give_up(self) -> None:
        """What is left when the step's time is up counts as failed ("timeout")."""
        left = len(self.todo) + len(self.busy) + len(self.retry)
        if left:
            tally(self.result.failed, "timeout", left)
