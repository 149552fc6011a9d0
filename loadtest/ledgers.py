"""The bookkeeping of one load process: what it sent, what was acknowledged, delivered, lost or
duplicated, and how long deliveries took. No zmq, no sockets, no clocks of its own: callers pass
monotonic nanoseconds in.

    * `PrivateLedger` tracks every private message by its process-local number n (0, 1, 2, ...):
      one byte of state per message, so millions of messages cost megabytes, not objects.
    * `BroadcastLedger` tracks the sender side (acked broadcast -> its broker seq) and the receiving
      side (how many local subscribers got each seq, and each subscriber's login seq).
    Each ledger's `part()` returns a picklable summary (`PrivatePart`, `BroadcastPart`) that the
    process ships to the parent in a `WorkerReport` (merged by loadtest.accounting.merge_reports).
    * The figures that a process reports and the parent's loadtest.accounting results both have
      are shared bases here (`SendCounts`, `LoginCounts`, `RunCounts`, `PhasePace`); the parent adds
      them up with `Counters.add_counts`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zmq_chat.loadtest.latency import LatencyRecorder

SENT, ACKED, FAILED, DELIVERED = 1, 2, 4, 8
"""Bits of a private message's state byte."""


def tally(counts: dict[str, int], key: str, n: int = 1) -> None:
    """Add `n` to counts[key] (a {code or reason: count} dict)."""
    counts[key] = counts.get(key, 0) + n


class Counters:
    """Base of the figures that are merged across processes by adding them up: `add_counts`
    sums the int fields named in SUMMED and tallies the {key: count} dicts among them."""

    SUMMED: ClassVar[tuple[str, ...]] = ()

    def add_counts(self, other: Counters) -> None:
        """Add `other`'s SUMMED fields to these (`other` has at least those fields)."""
        for name in self.SUMMED:
            theirs = getattr(other, name)
            if isinstance(theirs, dict):
                for key, n in theirs.items():
                    tally(getattr(self, name), key, n)
            else:
                setattr(self, name, getattr(self, name) + theirs)


@dataclass
class PhasePace:
    """How long a phase of requests (registrations, logins) took: elapsed_s (seconds) and rate
    (successful requests per second; 0.0 when no time passed)."""

    elapsed_s: float = 0.0
    rate: float = 0.0

    def set_pace(self, elapsed_s: float, done: int) -> None:
        """The phase took `elapsed_s` seconds (less than 0 counts as 0) for `done` successes."""
        self.elapsed_s = max(0.0, elapsed_s)
        self.rate = done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class SendCounts(Counters):
    """How the broker answered the sends of one message kind (counts are messages): sent = acked +
    failed + unanswered; errors {code: count} of the failed ones. Kept per process (KindPart) and
    merged for the run (loadtest.accounting.KindResults)."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    SUMMED = ("sent", "acked", "failed", "unanswered", "errors")


@dataclass
class KindPart(SendCounts):
    """What both parts have: the SendCounts; latency (encoded histogram, us) and seconds
    [(second, count, encoded)] of the deliveries; last_delivery_ns (monotonic ns, 0 when none)."""

    latency: bytes = b""
    seconds: list[tuple[int, int, bytes]] = field(default_factory=list)
    last_delivery_ns: int = 0


@dataclass
class PrivatePart(KindPart):
    """One process's private-message figures. delivered counts first deliveries only (duplicated
    counts the extra ones); lost = acked but not delivered when the run ended; delivered_unacked =
    delivered although the send got an error or no reply; foreign = deliveries of numbers this
    process never sent or could not read."""

    delivered: int = 0
    delivered_unacked: int = 0
    lost: int = 0
    duplicated: int = 0
    foreign: int = 0

    def acked_deliveries(self) -> int:
        """First deliveries of acked messages (what loadtest.accounting.KindResults.delivered counts)."""
        return self.delivered - self.delivered_unacked


@dataclass
class BroadcastPart(KindPart):
    """One process's broadcast figures, to be merged across processes.

    Sender side: acked_seqs (the seq of every acked broadcast). Receiving side: deliveries {seq:
    local deliveries}, login_seqs (one per local subscriber: its login seq), repaired (deliveries
    that came out of a `history` reply, i.e. a repaired gap, including events held behind the
    gap), missed_ranges (EventsMissed reports: events the broker no longer had).
    """

    acked_seqs: list[int] = field(default_factory=list)
    deliveries: dict[int, int] = field(default_factory=dict)
    login_seqs: list[int] = field(default_factory=list)
    repaired: int = 0
    missed_ranges: int = 0


class _Ledger:
    """Counters both ledgers keep: n_sent, n_acked, n_failed, n_delivered, errors, latency."""

    def __init__(self, start_ns: int) -> None:
        self.n_sent = 0
        self.n_acked = 0
        self.n_failed = 0
        self.n_delivered = 0
        self.errors: dict[str, int] = {}
        self.last_delivery_ns = 0
        self.latency = LatencyRecorder(start_ns)

    def _fail(self, code: str) -> None:
        self.n_failed += 1
        tally(self.errors, code)

    def _deliver(self, now_ns: int, latency_ns: int | None) -> None:
        self.n_delivered += 1
        self.last_delivery_ns = now_ns
        if latency_ns is not None:  # None: the text's send time was unreadable
            self.latency.record(now_ns, latency_ns)

    def _common(self) -> dict[str, Any]:
        """The KindPart fields (closes the latency recorder: call once)."""
        encoded, seconds = self.latency.finish()
        return {"sent": self.n_sent, "acked": self.n_acked, "failed": self.n_failed,
                "unanswered": self.n_sent - self.n_acked - self.n_failed, "errors": dict(self.errors),
                "latency": encoded, "seconds": seconds, "last_delivery_ns": self.last_delivery_ns}


class PrivateLedger(_Ledger):
    """State of every private message sent by one process, indexed by message number n.

    Args:
        start_ns: the run start (monotonic ns) for the per-second latency histograms.
    Usage: n = new_message(); acked(n) / failed(n, code) when the reply comes; delivered(n, ...)
    when the recipient (a client of the same process) gets it, in any order.
    """

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__(start_ns)
        self.state = bytearray()
        self.duplicated = 0
        self.foreign = 0

    def new_message(self) -> int:
        """Allocate the next message number (0, 1, 2, ...) and mark it sent."""
        self.state.append(SENT)
        self.n_sent += 1
        return self.n_sent - 1

    def acked(self, n: int) -> None:
        """The broker answered ok to the send of message n. Unknown n is ignored."""
        if 0 <= n < self.n_sent:
            self.state[n] |= ACKED
            self.n_acked += 1

    def failed(self, n: int, code: str) -> None:
        """The broker answered error `code` (e.g. "E_OVERLOADED") to the send of message n."""
        if 0 <= n < self.n_sent:
            self.state[n] |= FAILED
            self._fail(code)

    def delivered(self, n: int, now_ns: int, latency_ns: int) -> bool:
        """The recipient got message n at `now_ns` (monotonic ns) after `latency_ns`.

        Returns False (and counts it) for a duplicate or an n this ledger never sent ("foreign").
        """
        state = self.state
        if not 0 <= n < self.n_sent:
            self.foreign += 1
            return False
        s = state[n]
        if s & DELIVERED:
            self.duplicated += 1
            return False
        state[n] = s | DELIVERED
        self._deliver(now_ns, latency_ns)
        return True

    def undelivered_acked(self) -> int:
        """Acked messages not delivered yet (what a drain waits for). One C-speed pass over the
        state bytes: call it a few times a second at most."""
        return self.state.count(SENT | ACKED)

    def part(self) -> PrivatePart:
        """Final figures of this process (call once, when the run has drained)."""
        full = self.state.count(SENT | ACKED | DELIVERED)
        return PrivatePart(
            **self._common(),
            delivered=self.n_delivered,
            delivered_unacked=self.n_delivered - full,
            lost=self.n_acked - full,
            duplicated=self.duplicated,
            foreign=self.foreign,
        )


class BroadcastLedger(_Ledger):
    """One process's broadcasts: sender side by message number n, receiving side by broker seq.
    `max_seq` is the highest seq seen acked or delivered (the drain's target)."""

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__(start_ns)
        self.acked_seqs = array("q")
        self.deliveries: dict[int, int] = {}
        self.login_seqs: list[int] = []
        self.repaired = 0
        self.missed_ranges = 0
        self.max_seq = 0

    def new_message(self) -> int:
        """Allocate the next broadcast number (0, 1, 2, ...) and count it sent."""
        self.n_sent += 1
        return self.n_sent - 1

    def acked(self, n: int, seq: int) -> None:
        """The broker stored broadcast n as event `seq` (ok reply)."""
        self.acked_seqs.append(seq)
        self.n_acked += 1
        if seq > self.max_seq:
            self.max_seq = seq

    def failed(self, n: int, code: str) -> None:
        """The broker answered error `code` to broadcast n."""
        self._fail(code)

    def add_subscriber(self, login_seq: int) -> None:
        """A local client logged in (login reply `seq`); it must receive every later acked broadcast."""
        self.login_seqs.append(login_seq)

    def delivered(self, seq: int, now_ns: int, latency_ns: int | None, repaired: bool = False) -> None:
        """A local subscriber got broadcast event `seq` (above its login seq) at `now_ns` after
        `latency_ns` (None: unknown, the text's send time was unreadable; counted as delivered,
        no latency recorded); `repaired`: it came out of a `history` reply. The caller guarantees
        at most one call per (subscriber, seq) (ClientCore dedups by seq)."""
        d = self.deliveries
        d[seq] = d.get(seq, 0) + 1
        if repaired:
            self.repaired += 1
        if seq > self.max_seq:
            self.max_seq = seq
        self._deliver(now_ns, latency_ns)

    def part(self) -> BroadcastPart:
        """Final figures of this process (call once, when the run has drained)."""
        return BroadcastPart(
            **self._common(),
            acked_seqs=self.acked_seqs.tolist(),
            deliveries=dict(self.deliveries),
            login_seqs=list(self.login_seqs),
            repaired=self.repaired,
            missed_ranges=self.missed_ranges,
        )


@dataclass
class LoginCounts(Counters):
    """A login phase: ok (sessions started), failed {code or "timeout": count}, retries
    (E_OVERLOADED answers retried), first_ns/last_ns (monotonic ns of the first login sent / the
    last ok reply; 0 when none). Kept per process (LoginPart) and merged for the run
    (loadtest.accounting.LoginResults)."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    first_ns: int = 0
    last_ns: int = 0

    SUMMED = ("ok", "failed", "retries")  # first_ns/last_ns are combined by the caller


@dataclass
class LoginPart(LoginCounts):
    """One process's login phase: the LoginCounts and latency (encoded histogram, us, request to
    ok reply)."""

    latency: bytes = b""


@dataclass
class RunCounts(Counters):
    """What happened to the clients of a run: clients (assigned), logged_in, sessions_ended
    {reason: count}, broker_lost (BrokerLost reports), skipped (rate mode: sends due while every
    window was full), bad_frames (unparseable broker messages), drained (nothing was outstanding at
    the end of the drain), start_ns (monotonic ns: sending started; 0 when it did not), per_broker
    ({"host:port": clients logged in there}; empty with one broker). Kept per process
    (WorkerReport) and merged for the run (loadtest.accounting.Results)."""

    clients: int = 0
    logged_in: int = 0
    sessions_ended: dict[str, int] = field(default_factory=dict)
    broker_lost: int = 0
    skipped: int = 0
    bad_frames: int = 0
    drained: bool = True
    start_ns: int = 0
    per_broker: dict[str, int] = field(default_factory=dict)

    SUMMED = ("clients", "logged_in", "sessions_ended", "broker_lost", "skipped", "bad_frames", "per_broker")

    def add_counts(self, other: Counters) -> None:
        """Add `other`'s (a RunCounts) counts to these; drained only when both are; start_ns the
        earliest set one."""
        assert isinstance(other, RunCounts)
        super().add_counts(other)
        self.drained = self.drained and other.drained
        if other.start_ns and (not self.start_ns or other.start_ns < self.start_ns):
            self.start_ns = other.start_ns


@dataclass
class WorkerReport(RunCounts):
    """Everything one load process sends back at the end (picklable).

    Fields: the RunCounts of its clients; worker (index), login (LoginPart), private
    (PrivatePart), broadcast (BroadcastPart), sent_per_second (messages sent in second i of the
    run, both kinds), end_ns (monotonic ns: sending stopped).
    """

    worker: int = 0
    login: LoginPart = field(default_factory=LoginPart)
    private: PrivatePart = field(default_factory=PrivatePart)
    broadcast: BroadcastPart = field(default_factory=BroadcastPart)
    sent_per_second: list[int] = field(default_factory=list)
    end_ns: int = 0
