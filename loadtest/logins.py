"""The login phase of one load process: every client of the fleet logs in, at most `parallel` at
once (the broker hashes each password with argon2id); an E_OVERLOADED answer is sent again after
RETRY_DELAY_S, a login unanswered for LOGIN_REPLY_TIMEOUT_S counts as failed ("timeout"), and
whatever is left when the phase's own timeout passes too. Measures the login rate and latency.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from zmq_chat.client.core import ReplyReceived
from zmq_chat.loadtest.fleet import Fleet, SimClient
from zmq_chat.loadtest.latency import new_histogram
from zmq_chat.loadtest.ledgers import LoginPart, tally
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.version import PROTOCOL_VERSION

LOGIN_REPLY_TIMEOUT_S = 30.0
"""Seconds one login may wait for its reply before it counts as failed ("timeout")."""
RETRY_DELAY_S = 0.05
"""Seconds before a login answered E_OVERLOADED is sent again."""
REPORT_EVERY_S = 0.2
"""Seconds between progress reports."""
_NS = 1_000_000_000


class LoginPhase:
    """Log in every client of `fleet` (opening each DEALER just before its first login).

    Args:
        fleet: the Fleet; its login replies come here (fleet.on_login_reply).
        password: the accounts' password.
        parallel: most logins in flight at once in this process (>= 1).
        timeout: most seconds for the whole phase.
    """

    def __init__(self, fleet: Fleet, password: str, parallel: int, timeout: float) -> None:
        self.fleet = fleet
        self.password = password
        self.parallel = parallel
        self.timeout = timeout
        self.part = LoginPart()
        self._hist = new_histogram()
        self._flying: set[SimClient] = set()
        self._retry: deque[tuple[float, SimClient]] = deque()  # (monotonic s, client): E_OVERLOADED
        fleet.on_login_reply = self._reply

    def done(self) -> int:
        """Logins answered so far (ok or failed)."""
        return self.part.ok + sum(self.part.failed.values())

    def run(self, progress: Callable[[int, int], None]) -> LoginPart:
        """Do the phase; `progress(done, ok)` is called every REPORT_EVERY_S and at the end.
        Returns the LoginPart (latency filled in)."""
        fleet = self.fleet
        todo: deque[SimClient] = deque(fleet.clients)
        deadline = time.monotonic() + self.timeout
        last_report = 0.0
        while True:
            now = time.monotonic()
            while self._retry and self._retry[0][0] <= now:
                todo.appendleft(self._retry.popleft()[1])
            while todo and len(self._flying) < self.parallel:
                self._start(todo.popleft())
            if not (todo or self._flying or self._retry) or now >= deadline:
                break
            fleet.poll(10)
            now = time.monotonic()
            self._expire(now, LOGIN_REPLY_TIMEOUT_S)
            fleet.housekeeping(now)
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                progress(self.done(), self.part.ok)
        left = len(todo) + len(self._retry)
        self._retry.clear()
        self._expire(float("inf"), 0.0)  # what is still in flight: "timeout" too
        if left:
            tally(self.part.failed, "timeout", left)
        self.part.latency = self._hist.encode()
        progress(self.done(), self.part.ok)
        return self.part

    def _start(self, c: SimClient) -> None:
        conn = c.conn or self.fleet.open(c)
        c.login_t0 = time.monotonic_ns()
        if not self.part.first_ns:
            self.part.first_ns = c.login_t0
        c.login_req = conn.core.request(
            m.Login(req=0, version=PROTOCOL_VERSION, user=c.name, password=self.password))
        self.fleet.flush(c)
        self._flying.add(c)

    def _expire(self, now: float, patience: float) -> None:
        """Give up on logins sent more than `patience` seconds before `now` (monotonic s)."""
        for c in [c for c in self._flying if now - c.login_t0 / _NS > patience]:
            assert c.conn is not None
            c.conn.core.forget(c.login_req)
            c.login_req = 0
            self._flying.discard(c)
            tally(self.part.failed, "timeout")

    def _reply(self, c: SimClient, o: ReplyReceived) -> None:
        now = time.monotonic_ns()
        c.login_req = 0
        self._flying.discard(c)
        if o.ok and c.conn is not None and c.conn.core.session is not None:
            self.part.ok += 1
            self.part.last_ns = now
            self._hist.record_value(max(1, (now - c.login_t0) // 1000))
            self.fleet.join(c)
        elif o.code == ErrorCode.OVERLOADED:
            self.part.retries += 1
            self._retry.append((time.monotonic() + RETRY_DELAY_S, c))
        else:
            tally(self.part.failed, o.code or "error")
