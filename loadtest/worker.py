"""One load process: many simulated clients (loadtest.fleet: client.sync.SyncConnection each, on
one plain zmq.Poller) stepped through the phases of a run by the parent (loadtest.runner) over a
control pipe. No asyncio, no per-message logging.

    worker                                   parent
    log in all clients (loadtest.logins)
      ("login", done, ok, total)     ->      (progress, a few times a second)
      ("ready", ok, {code: n})       ->
                                     <-      ("start", start_ns, end_ns)      monotonic ns
    send until end_ns
      ("progress", dict)             ->      (every PROGRESS_S)
    wait for the replies (<= end_ns + drain)
      ("stopped", max_seq)           ->
                                     <-      ("drain", target_seq, deadline_ns)
    wait until every acked private message arrived and every subscriber reached target_seq
    (asking `history` for the ones behind), or the deadline
      ("report", WorkerReport)       ->
    log out, close
    On a failure: ("error", traceback text). ("abort",) or a closed pipe ends the worker.

Times are time.monotonic_ns(), which is one clock for all processes on Linux, so a latency is
receive time minus the send time carried in the message text (loadtest.texts).
Private recipients are clients of the same process, so private accounting stays local.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from zmq_chat.loadtest.fleet import TICK_S, Fleet
from zmq_chat.loadtest.ledgers import LoginPart, WorkerReport
from zmq_chat.loadtest.logins import LoginPhase
from zmq_chat.loadtest.spawn import raise_fd_limit
from zmq_chat.protocol import messages as m

PROGRESS_S = 0.5
"""Seconds between progress messages to the parent."""
RATE_WINDOW_S = 2.0
"""Live rates are averaged over this many seconds."""
CATCH_UP_EVERY_S = 0.5
"""During the drain: how often a subscriber behind the target seq asks `history` again."""
LOGOUT_WAIT_S = 1.0
"""Seconds to wait for logout replies at the very end."""

_NS = 1_000_000_000


@dataclass
class WorkerConfig:
    """What one load process needs (picklable).

    Fields: worker (index), address/port/ipv6 (numeric broker ROUTER address), users (account
    names of this process's clients), password, rate (messages/s per client, None = closed loop),
    window (most unanswered sends per client), broadcast_ratio (0..1), size (text characters),
    run_tag (letters/digits marking this run's messages), login_parallel (logins in flight in this
    process), login_timeout (seconds for the whole login phase), drain (seconds after end_ns to
    wait for replies), seed (random seed or None), server_key (the broker's public key, Z85 bytes;
    None speaks NULL); with several brokers of one chat: brokers ((label "host:port", numeric address,
    port, ipv6, key) each) and broker_of (the index in `brokers` of each client of `users`), else
    both empty and every client uses address/port/ipv6/server_key.
    """

    worker: int
    address: str
    port: int
    ipv6: bool
    users: list[str]
    password: str
    rate: float | None
    window: int
    broadcast_ratio: float
    size: int
    run_tag: str
    login_parallel: int
    login_timeout: float
    drain: float
    seed: int | None = None
    server_key: bytes | None = None
    brokers: list[tuple[str, str, int, bool, bytes | None]] = field(default_factory=list)
    broker_of: list[int] = field(default_factory=list)


class ParentGone(Exception):
    """The control pipe closed (or the parent said "abort"): stop at once."""


class LoadWorker:
    """The phases of one load process. `run()` does every phase and returns when done.

    Args:
        cfg: WorkerConfig.
        control: the worker's end of the control channel, a multiprocessing.connection.Connection
            (send/recv/poll/fileno); see the module docstring for the messages.
    """

    def __init__(self, cfg: WorkerConfig, control: Any) -> None:
        self.cfg = cfg
        self.ctl = control
        self.inbox: deque[tuple] = deque()
        self.fleet = Fleet(cfg, control.fileno(), self._read_control)
        self.login = LoginPart()
        self.start_ns = 0
        self.end_ns = 0
        self.skipped = 0
        self.next_progress = 0.0
        self._rr = 0  # round robin position of the paced sending
        self._samples: deque[tuple[int, int, int, int]] = deque()  # (ns, sent, p delivered, b delivered)

    # ---- control pipe ------------------------------------------------------------------------

    def _send(self, msg: tuple) -> None:
        try:
            self.ctl.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            raise ParentGone() from None

    def _read_control(self) -> None:
        try:
            while self.ctl.poll(0):
                msg = self.ctl.recv()
                if msg[0] == "abort":
                    raise ParentGone()
                self.inbox.append(msg)
        except (EOFError, OSError):
            raise ParentGone() from None

    def _wait_for(self, kind: str) -> tuple:
        """Keep the sessions going until the parent sends a `kind` message; return it."""
        while True:
            for msg in self.inbox:
                if msg[0] == kind:
                    self.inbox.remove(msg)
                    return msg
            self._pump(10)

    def _pump(self, timeout_ms: float, progress: bool = False) -> None:
        """One poll round, the cores' timers, and (with `progress`) a progress message when due."""
        self.fleet.poll(timeout_ms)
        now_s = time.monotonic()
        self.fleet.housekeeping(now_s)
        if progress and now_s >= self.next_progress:
            self.next_progress = now_s + PROGRESS_S
            self._progress()

    # ---- phases ------------------------------------------------------------------------------

    def _login_phase(self) -> None:
        total = len(self.fleet.clients)
        phase = LoginPhase(self.fleet, self.cfg.password, self.cfg.login_parallel, self.cfg.login_timeout)
        self.login = phase.run(lambda done, ok: self._send(("login", done, ok, total)))

    def _run_phase(self) -> None:
        """Wait for "start", then send until end_ns: closed loop (refill every answered send up to
        the window) or paced at cfg.rate per client."""
        _, self.start_ns, self.end_ns = self._wait_for("start")
        fleet = self.fleet
        fleet.begin(self.start_ns)
        while time.monotonic_ns() < self.start_ns:
            self._pump(min(TICK_S, (self.start_ns - time.monotonic_ns()) / _NS) * 1000)
        fleet.sending = bool(fleet.active)
        now = time.monotonic_ns()
        self._samples.append((now, 0, 0, 0))
        if fleet.refill and fleet.sending:
            for c in list(fleet.active):
                while c.inflight < self.cfg.window:
                    fleet.send_one(c, now)
                fleet.flush(c)
        per_ns = (self.cfg.rate or 0.0) * len(fleet.active) / _NS
        scheduled = 0
        self.next_progress = time.monotonic() + PROGRESS_S
        while (now := time.monotonic_ns()) < self.end_ns:
            if per_ns and fleet.active:
                due = int((now - self.start_ns) * per_ns) - scheduled
                if due > 0:
                    scheduled += due
                    self._send_paced(due, now)
                timeout_ms = 1.0
            else:
                timeout_ms = min(TICK_S, (self.end_ns - now) / _NS) * 1000
            self._pump(timeout_ms, progress=True)
        fleet.sending = False

    def _send_paced(self, due: int, now: int) -> None:
        """Send `due` messages, round robin over the active clients with room in their window;
        a send that finds every window full is `skipped`."""
        fleet = self.fleet
        active = fleet.active
        k = len(active)
        touched = []
        rr = self._rr
        for _ in range(due):
            for _ in range(k):
                rr = (rr + 1) % k
                c = active[rr]
                if c.inflight < self.cfg.window:
                    fleet.send_one(c, now)
                    touched.append(c)
                    break
            else:
                self.skipped += 1
        self._rr = rr
        for c in touched:
            fleet.flush(c)

    def _stop_phase(self) -> None:
        """Wait for the replies of every send (at most until end_ns + drain)."""
        deadline = self.end_ns + int(self.cfg.drain * _NS)
        while self.fleet.inflight_total > 0 and time.monotonic_ns() < deadline:
            self._pump(10, progress=True)
        self._progress()
        self._send(("stopped", self.fleet.bled.max_seq))

    def _drain_phase(self) -> bool:
        """Wait for the deliveries; returns True when nothing was outstanding at the end."""
        _, target, deadline = self._wait_for("drain")
        fleet = self.fleet
        next_check = 0.0
        while True:
            now_s = time.monotonic()
            if now_s >= next_check:
                next_check = now_s + 0.1
                behind = [(c, core) for c, core in fleet.sessions() if (core.last_seq or 0) < target]
                if fleet.inflight_total <= 0 and not behind and fleet.pled.undelivered_acked() == 0:
                    return True
                for c, core in behind:
                    if now_s * _NS >= c.next_catch_up:
                        c.next_catch_up = int((now_s + CATCH_UP_EVERY_S) * _NS)
                        core.catch_up()
                        fleet.flush(c)
            if time.monotonic_ns() >= deadline:
                return False
            self._pump(10, progress=True)

    def _progress(self) -> None:
        """Send counters, rates over the last RATE_WINDOW_S (per second) and last-second p99s."""
        now = time.monotonic_ns()
        pled, bled = self.fleet.pled, self.fleet.bled
        pled.latency.roll_to(now)
        bled.latency.roll_to(now)
        sent = pled.n_sent + bled.n_sent
        samples = self._samples
        samples.append((now, sent, pled.n_delivered, bled.n_delivered))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S * _NS:
            samples.popleft()
        t0, sent0, p0, b0 = samples[0]
        dt = (now - t0) / _NS

        def rate(n: int) -> float:
            return n / dt if dt > 0 else 0.0

        self._send(("progress", {
            "private_sent": pled.n_sent, "private_acked": pled.n_acked, "private_delivered": pled.n_delivered,
            "broadcast_sent": bled.n_sent, "broadcast_acked": bled.n_acked,
            "broadcast_delivered": bled.n_delivered,
            "errors": pled.n_failed + bled.n_failed,
            "inflight": self.fleet.inflight_total,
            "send_rate": rate(sent - sent0),
            "private_rate": rate(pled.n_delivered - p0),
            "broadcast_rate": rate(bled.n_delivered - b0),
            "private_p99_ms": pled.latency.last_second_p99(),
            "broadcast_p99_ms": bled.latency.last_second_p99(),
        }))

    def _report(self, drained: bool) -> WorkerReport:
        fleet = self.fleet
        return WorkerReport(
            worker=self.cfg.worker, clients=len(fleet.clients), logged_in=self.login.ok, login=self.login,
            private=fleet.pled.part(), broadcast=fleet.bled.part(), sent_per_second=fleet.sent_per_second,
            sessions_ended=dict(fleet.sessions_ended), broker_lost=fleet.broker_lost, skipped=self.skipped,
            bad_frames=fleet.bad_frames(), start_ns=self.start_ns, end_ns=self.end_ns, drained=drained,
            per_broker=dict(fleet.per_broker),
        )

    def _logout(self) -> None:
        """Close the SUBs (nobody reads the presence events of the logouts), send each session's
        last acks and then its logout, wait briefly for the replies (the acks' come first)."""
        fleet = self.fleet
        for c in fleet.clients:
            if c.conn is not None:
                c.conn.drop_sub()
        waiting = [(c, c.conn.core) for c in fleet.clients if c.conn is not None and c.conn.core.session is not None]
        for c, core in waiting:
            core.flush_acks()  # else the messages delivered last stay in the mailbox after the run
            core.request(m.Logout(req=0))
            fleet.flush(c)
        deadline = time.monotonic() + LOGOUT_WAIT_S
        while waiting and time.monotonic() < deadline:
            fleet.poll(20)
            waiting = [(c, core) for c, core in waiting if core.session is not None]

    def close(self) -> None:
        """Close every socket (linger 0) and the context. Idempotent."""
        self.fleet.close()

    def run(self) -> None:
        """Every phase, in order; the report goes to the parent before the logouts."""
        self._login_phase()
        self._send(("ready", self.login.ok, dict(self.login.failed)))
        self._run_phase()
        self._stop_phase()
        drained = self._drain_phase()
        self._progress()
        self._send(("report", self._report(drained)))
        self._logout()


def worker_main(cfg: WorkerConfig, control: Any) -> None:
    """Run a LoadWorker on an open control Connection; report failures on it; close it at the end."""
    raise_fd_limit()
    worker = None
    try:
        worker = LoadWorker(cfg, control)
        worker.run()
    except (ParentGone, KeyboardInterrupt):
        pass
    except BaseException:  # report anything else to the parent, then exit
        try:
            control.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        if worker is not None:
            try:
                worker.close()
            except Exception:
                pass
        try:
            control.close()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    """`python -m zmq_chat.loadtest.worker FD`: FD is this process's end of a socketpair; the first
    object received on it is the WorkerConfig. Returns 0 (failures are reported on the pipe)."""
    import sys
    from multiprocessing.connection import Connection

    from zmq_chat.loadtest import worker as this  # run the package module's code, not a __main__ copy

    args = sys.argv[1:] if argv is None else argv
    control = Connection(int(args[0]))
    try:
        cfg = control.recv()
    except (EOFError, OSError):
        return 0
    this.worker_main(cfg, control)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
