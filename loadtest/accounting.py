"""Pure bookkeeping of a load run: what was sent, acknowledged, delivered, lost or duplicated, and
how long deliveries took. No zmq, no sockets, no clocks of its own: callers pass times in.

Per load process (worker):
    * `PrivateLedger` tracks every private message by its process-local number n (0, 1, 2, ...):
      one byte of state per message, so millions of messages cost megabytes, not objects.
    * `BroadcastLedger` tracks the sender side (acked broadcast -> its broker seq) and the receiving
      side (how many local subscribers got each seq, and each subscriber's login seq).
    * `LatencyRecorder` keeps an HDR histogram of end-to-end latency (microseconds) per second of
      the run and for the whole run.
    Each ledger's `part()` returns a picklable summary (`PrivatePart`, `BroadcastPart`) that the
    worker ships to the parent in a `WorkerReport`.

In the parent: `merge_reports(reports, ...)` -> `Results` adds the parts up, decides the broadcast
expectations across processes (a subscriber must get every acked broadcast whose seq is above its
login seq) and computes throughput and latency percentiles.

Message text layout: "<head> <send_ns> <padding>", see `make_text` / `parse_text`. `head` is the send
id (unique per sender, 1..64 chars) and starts with the run tag, so leftovers of other runs (e.g.
old mailbox contents pushed at login) are recognised and ignored.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from hdrh.histogram import HdrHistogram

# ---- latency histograms --------------------------------------------------------------------------

LATENCY_LOWEST_US = 1
LATENCY_HIGHEST_US = 3_600_000_000
"""Latencies are recorded in microseconds, 1 us .. 1 hour (larger values are clamped)."""
LATENCY_DIGITS = 3
"""Significant decimal digits of the HDR histograms (0.1 % value resolution)."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    """A fresh latency histogram: values in microseconds, 1 us .. 1 h, 3 significant digits."""
    return HdrHistogram(LATENCY_LOWEST_US, LATENCY_HIGHEST_US, LATENCY_DIGITS)


def decode_histogram(encoded: bytes | str | None) -> HdrHistogram:
    """Decode a histogram produced by `HdrHistogram.encode()` (None or b"" -> an empty histogram)."""
    hist = new_histogram()
    if encoded:
        hist.decode_and_add(encoded)
    return hist


def merge_histograms(encoded: Iterable[bytes | str | None]) -> HdrHistogram:
    """Add up encoded histograms (e.g. one per worker) into one new histogram."""
    hist = new_histogram()
    for blob in encoded:
        if blob:
            hist.decode_and_add(blob)
    return hist


@dataclass
class LatencySummary:
    """Percentiles of one latency histogram, in milliseconds (float); all 0.0 when count is 0.

    Fields: count (int, values recorded), p50, p90, p99, p99_9, max, mean (ms).
    """

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    p99_9: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @classmethod
    def of(cls, hist: HdrHistogram) -> "LatencySummary":
        """Summarise a microsecond histogram (one pass over its counts)."""
        count = hist.get_total_count()
        if not count:
            return cls()
        values = hist.get_percentile_to_value_dict(list(PERCENTILES))
        ms = [values.get(p, 0) / 1000.0 for p in PERCENTILES]
        return cls(count, *ms, max=hist.get_max_value() / 1000.0, mean=hist.get_mean_value() / 1000.0)


def quantize_us(us: int) -> int:
    """Round a microsecond value down to 11 significant bits, the resolution of a 3-digit HDR
    histogram, so that equal buckets can be counted before recording (see LatencyRecorder)."""
    b = us.bit_length() - 11
    return us >> b << b if b > 0 else us


class LatencyRecorder:
    """End-to-end latency of one message kind: one histogram per second of the run, and the total.

    Args:
        start_ns: the run's start, monotonic nanoseconds (second 0 begins here).
    `record` is cheap (~0.2 us): it appends the value, rounded to the histogram's resolution, to
    a list; the list is counted (collections.Counter, C speed) into the second's histogram when
    the second ends. `record` must be called with non-decreasing `now_ns`; a value for an earlier
    second is added to the current one.
    """

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.total = new_histogram()
        self.seconds: list[tuple[int, int, bytes]] = []  # (second, count, encoded histogram)
        self._sec = 0
        self._next_ns = start_ns + 1_000_000_000
        self._values: list[int] = []
        self._last_p99 = 0.0

    def record(self, now_ns: int, latency_ns: int) -> None:
        """Record one delivery at `now_ns` (monotonic ns) that took `latency_ns` (ns, clamped to
        1 us .. 1 h)."""
        if now_ns >= self._next_ns:
            self._roll((now_ns - self.start_ns) // 1_000_000_000)
        us = latency_ns // 1000
        b = us.bit_length() - 11
        if b > 0:
            us = us >> b << b
        elif us < 1:
            us = 1
        self._values.append(us)

    def roll_to(self, now_ns: int) -> None:
        """Close the seconds that ended before `now_ns` (call about once a second, cheap otherwise)."""
        if now_ns >= self._next_ns:
            self._roll((now_ns - self.start_ns) // 1_000_000_000)

    def last_second_p99(self) -> float:
        """p99 (ms) of the last closed second that had values, 0.0 if none."""
        return self._last_p99

    def _roll(self, sec: int) -> None:
        if self._values:
            hist = new_histogram()
            for us, n in Counter(self._values).items():
                hist.record_value(us if us <= LATENCY_HIGHEST_US else LATENCY_HIGHEST_US, n)
            self.total.add(hist)
            self._last_p99 = hist.get_value_at_percentile(99.0) / 1000.0
            self.seconds.append((self._sec, len(self._values), hist.encode()))
            self._values = []
        self._sec = max(sec, self._sec)
        self._next_ns = self.start_ns + (self._sec + 1) * 1_000_000_000

    def finish(self) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """Close the current second. Returns (encoded total histogram, [(second, count, encoded)])."""
        self._roll(self._sec + 1)
        return self.total.encode(), self.seconds


# ---- message text --------------------------------------------------------------------------------

def make_text(head: str, send_ns: int, size: int, pad: str = "") -> str:
    """Message text "<head> <send_ns> <padding>" of `size` characters (longer if the header alone
    is longer). `pad` is a string of at least `size` padding characters (made when "")."""
    base = f"{head} {send_ns}"
    k = size - len(base) - 1
    if k <= 0:
        return base
    return f"{base} {(pad or 'x' * size)[:k]}"


def parse_text(text: str) -> tuple[str, int] | None:
    """Inverse of `make_text`: (head, send_ns), or None when the text is not of that form."""
    head, _, rest = text.partition(" ")
    ns, _, _ = rest.partition(" ")
    try:
        return head, int(ns)
    except ValueError:
        return None


def send_ns_of(text: str) -> int:
    """The send_ns field of a `make_text` text (0 when unreadable); the cheap form of parse_text."""
    try:
        return int(text.split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0


# ---- private messages ----------------------------------------------------------------------------

SENT, ACKED, FAILED, DELIVERED = 1, 2, 4, 8


@dataclass
class PrivatePart:
    """One worker's private-message figures (counts are messages).

    sent = acked + failed + unanswered. delivered counts first deliveries only (duplicated counts
    the extra ones). lost = acked but not delivered when the run ended; delivered_unacked =
    delivered although the send got an error or no reply.
    """

    sent: int = 0
    acked: int = 0
    failed: int = 0
    unanswered: int = 0
    delivered: int = 0
    delivered_unacked: int = 0
    lost: int = 0
    duplicated: int = 0
    foreign: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: bytes = b""
    seconds: list[tuple[int, int, bytes]] = field(default_factory=list)
    last_delivery_ns: int = 0


class PrivateLedger:
    """State of every private message sent by one worker, indexed by message number n.

    Args:
        start_ns: the run start (monotonic ns) for the per-second latency histograms.
    Usage: n = new_message(); acked(n) / failed(n, code) when the reply comes; delivered(n, ...)
    when the recipient (a client of the same worker) gets it, in any order.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self.state = bytearray()
        self.errors: dict[str, int] = {}
        self.duplicated = 0
        self.foreign = 0
        self.last_delivery_ns = 0
        self.latency = LatencyRecorder(start_ns)
        self.n_acked = 0
        self.n_failed = 0
        self.n_delivered = 0

    def new_message(self) -> int:
        """Allocate the next message number (0, 1, 2, ...) and mark it sent."""
        self.state.append(SENT)
        return len(self.state) - 1

    def acked(self, n: int) -> None:
        """The broker answered ok to the send of message n. Unknown n is ignored."""
        if 0 <= n < len(self.state):
            self.state[n] |= ACKED
            self.n_acked += 1

    def failed(self, n: int, code: str) -> None:
        """The broker answered error `code` (e.g. "E_OVERLOADED") to the send of message n."""
        if 0 <= n < len(self.state):
            self.state[n] |= FAILED
            self.n_failed += 1
            self.errors[code] = self.errors.get(code, 0) + 1

    def delivered(self, n: int, now_ns: int, latency_ns: int) -> bool:
        """The recipient got message n at `now_ns` (monotonic ns) after `latency_ns`.

        Returns False (and counts it) for a duplicate or an n this ledger never sent ("foreign").
        """
        state = self.state
        if not 0 <= n < len(state):
            self.foreign += 1
            return False
        s = state[n]
        if s & DELIVERED:
            self.duplicated += 1
            return False
        state[n] = s | DELIVERED
        self.n_delivered += 1
        self.last_delivery_ns = now_ns
        self.latency.record(now_ns, latency_ns)
        return True

    def undelivered_acked(self) -> int:
        """Acked messages not delivered yet (what a drain waits for). One C-speed pass over the
        state bytes: call it a few times a second at most."""
        return self.state.count(SENT | ACKED)

    def part(self) -> PrivatePart:
        """Final figures of this worker (call once, when the run has drained)."""
        st = self.state
        full = st.count(SENT | ACKED | DELIVERED)
        acked = self.n_acked
        failed = self.n_failed
        delivered = self.n_delivered
        encoded, seconds = self.latency.finish()
        return PrivatePart(
            sent=len(st),
            acked=acked,
            failed=failed,
            unanswered=len(st) - acked - failed,
            delivered=delivered,
            delivered_unacked=delivered - full,
            lost=acked - full,
            duplicated=self.duplicated,
            foreign=self.foreign,
            errors=dict(self.errors),
            latency=encoded,
            seconds=seconds,
            last_delivery_ns=self.last_delivery_ns,
        )


# ---- broadcasts ----------------------------------------------------------------------------------

@dataclass
class BroadcastPart:
    """One worker's broadcast figures, to be merged across workers by `merge_reports`.

    Sender side: sent, acked, failed, unanswered (counts), errors {code: count}, acked_seqs (seq of
    every acked broadcast). Receiving side: deliveries {seq: local deliveries}, login_seqs (one
    per local subscriber: its login seq), repaired (deliveries that came out of a `history` reply,
    i.e. a repaired gap, including events held behind the gap), missed_ranges (EventsMissed
    reports: events the broker no longer had), latency/seconds as for PrivatePart.
    """

    sent: int = 0
    acked: int = 0
    failed: int = 0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    acked_seqs: list[int] = field(default_factory=list)
    deliveries: dict[int, int] = field(default_factory=dict)
    login_seqs: list[int] = field(default_factory=list)
    repaired: int = 0
    missed_ranges: int = 0
    latency: bytes = b""
    seconds: list[tuple[int, int, bytes]] = field(default_factory=list)
    last_delivery_ns: int = 0


class BroadcastLedger:
    """One worker's broadcasts: sender side by message number n, receiving side by broker seq."""

    def __init__(self, start_ns: int = 0) -> None:
        self.sent = 0
        self.acked_seqs = array("q")
        self.n_failed = 0
        self.errors: dict[str, int] = {}
        self.deliveries: dict[int, int] = {}
        self.login_seqs: list[int] = []
        self.repaired = 0
        self.missed_ranges = 0
        self.last_delivery_ns = 0
        self.max_seq = 0
        self.n_delivered = 0
        self.latency = LatencyRecorder(start_ns)

    @property
    def n_acked(self) -> int:
        """Broadcasts acknowledged so far."""
        return len(self.acked_seqs)

    def new_message(self) -> int:
        """Allocate the next broadcast number (0, 1, 2, ...) and count it sent."""
        self.sent += 1
        return self.sent - 1

    def acked(self, n: int, seq: int) -> None:
        """The broker stored broadcast n as event `seq` (ok reply)."""
        self.acked_seqs.append(seq)
        if seq > self.max_seq:
            self.max_seq = seq

    def failed(self, n: int, code: str) -> None:
        """The broker answered error `code` to broadcast n."""
        self.n_failed += 1
        self.errors[code] = self.errors.get(code, 0) + 1

    def add_subscriber(self, login_seq: int) -> None:
        """A local client logged in (login reply `seq`); it must receive every later acked broadcast."""
        self.login_seqs.append(login_seq)

    def delivered(self, seq: int, now_ns: int, latency_ns: int, repaired: bool = False) -> None:
        """A local subscriber got broadcast event `seq` (above its login seq) at `now_ns`.

        The caller guarantees at most one call per (subscriber, seq) (ClientCore dedups by seq).
        """
        d = self.deliveries
        d[seq] = d.get(seq, 0) + 1
        self.n_delivered += 1
        if repaired:
            self.repaired += 1
        if seq > self.max_seq:
            self.max_seq = seq
        self.last_delivery_ns = now_ns
        self.latency.record(now_ns, latency_ns)

    def part(self) -> BroadcastPart:
        """Final figures of this worker (call once, when the run has drained)."""
        encoded, seconds = self.latency.finish()
        acked = len(self.acked_seqs)
        return BroadcastPart(
            sent=self.sent,
            acked=acked,
            failed=self.n_failed,
            unanswered=self.sent - acked - self.n_failed,
            errors=dict(self.errors),
            acked_seqs=self.acked_seqs.tolist(),
            deliveries=dict(self.deliveries),
            login_seqs=list(self.login_seqs),
            repaired=self.repaired,
            missed_ranges=self.missed_ranges,
            latency=encoded,
            seconds=seconds,
            last_delivery_ns=self.last_delivery_ns,
        )


# ---- login ---------------------------------------------------------------------------------------

@dataclass
class LoginPart:
    """One worker's login phase: ok (sessions started), failed {code or "timeout": count}, retries
    (E_OVERLOADED answers retried), latency (encoded histogram, us, request to ok reply),
    first_ns/last_ns (monotonic ns of the first login sent / the last reply)."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    latency: bytes = b""
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class WorkerReport:
    """Everything one load process sends back at the end (picklable).

    Fields: worker (index), clients (assigned), logged_in, login (LoginPart), private
    (PrivatePart), broadcast (BroadcastPart), sent_per_second (messages sent in second i of the
    run, both kinds), sessions_ended {reason: count}, broker_lost (BrokerLost reports), skipped
    (rate mode: sends due while every window was full), bad_frames (unparseable broker messages),
    start_ns/end_ns (monotonic ns: sending started/stopped), drained (True when nothing was
    outstanding at the end of the drain).
    """

    worker: int = 0
    clients: int = 0
    logged_in: int = 0
    login: LoginPart = field(default_factory=LoginPart)
    private: PrivatePart = field(default_factory=PrivatePart)
    broadcast: BroadcastPart = field(default_factory=BroadcastPart)
    sent_per_second: list[int] = field(default_factory=list)
    sessions_ended: dict[str, int] = field(default_factory=dict)
    broker_lost: int = 0
    skipped: int = 0
    bad_frames: int = 0
    start_ns: int = 0
    end_ns: int = 0
    drained: bool = True


# ---- merged results ------------------------------------------------------------------------------

@dataclass
class LoginResults:
    """Login phase over all workers: ok, failed {code: count}, retries, elapsed_s (first login sent
    to last reply, seconds), rate (ok logins per second), latency (LatencySummary, ms),
    first_ns/last_ns (monotonic ns of the first login sent / the last reply; 0 when none)."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    first_ns: int = 0
    last_ns: int = 0
    elapsed_s: float = 0.0
    rate: float = 0.0
    latency: LatencySummary = field(default_factory=LatencySummary)


@dataclass
class KindResults:
    """Figures of one message kind ("private" or "broadcast").

    Messages: sent, acked, failed, unanswered (sent = acked + failed + unanswered), errors {code:
    count}. Deliveries (private: one per message; broadcast: one per subscriber and message):
    expected (broadcast: acked x subscribers logged in before it; private: = acked), delivered
    (deliveries of acked messages), delivered_unacked, lost (expected - delivered), duplicated,
    repaired (broadcast: via history), throughput (deliveries per second over the active time),
    send_rate (messages sent per second of the sending window), latency (LatencySummary, ms).
    """

    sent: int = 0
    acked: int = 0
    failed: int = 0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    expected: int = 0
    delivered: int = 0
    delivered_unacked: int = 0
    lost: int = 0
    duplicated: int = 0
    repaired: int = 0
    throughput: float = 0.0
    send_rate: float = 0.0
    latency: LatencySummary = field(default_factory=LatencySummary)


@dataclass
class SecondStats:
    """One second of the run: t (seconds since start), sent (messages), private / broadcast
    (deliveries in that second) and their latency percentiles (ms; None when nothing arrived)."""

    t: int
    sent: int = 0
    private: int = 0
    broadcast: int = 0
    private_latency: LatencySummary | None = None
    broadcast_latency: LatencySummary | None = None


@dataclass
class Results:
    """The figures of one load run (what `run_load` returns; `to_dict()` is the JSON form).

    Fields: clients (requested), logged_in, processes, duration_s (sending window, s), active_s
    (start to last delivery, s), drain_s (stop of sending to end of drain, s), login
    (LoginResults), private / broadcast (KindResults), subscribers (logged-in SUB clients),
    timeline (list of SecondStats), sessions_ended {reason: count}, broker_lost, skipped,
    bad_frames, drained (all workers ended with nothing outstanding), options (dict of the
    options used), prepare (dict from the account preparation, if it ran), null_run (the figures of
    the --compare-insecure run, if any), start_ns (monotonic ns
    at which second 0 of the timeline begins). Not in to_dict: the per-second latency histograms
    behind `latency_between`.
    """

    clients: int = 0
    logged_in: int = 0
    processes: int = 0
    duration_s: float = 0.0
    active_s: float = 0.0
    drain_s: float = 0.0
    login: LoginResults = field(default_factory=LoginResults)
    private: KindResults = field(default_factory=KindResults)
    broadcast: KindResults = field(default_factory=KindResults)
    subscribers: int = 0
    timeline: list[SecondStats] = field(default_factory=list)
    sessions_ended: dict[str, int] = field(default_factory=dict)
    broker_lost: int = 0
    skipped: int = 0
    bad_frames: int = 0
    drained: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    null_run: dict[str, Any] | None = None  # --compare-insecure: the same load without encryption
    start_ns: int = 0
    seconds: dict[str, dict[int, list[bytes]]] = field(default_factory=dict, repr=False)

    def latency_between(self, kind: str, t0_ns: int, t1_ns: int) -> LatencySummary:
        """Latency of `kind` ("private" or "broadcast") over the whole seconds of the timeline that
        lie inside [t0_ns, t1_ns] (monotonic ns), from the merged per-second HDR histograms, so
        percentiles are exact for that span (e.g. "others' p99 during a login storm"). Deliveries
        are counted in the second they arrived. An empty span gives an empty LatencySummary."""
        per = self.seconds.get(kind, {})
        first = -((self.start_ns - t0_ns) // 1_000_000_000)  # ceil: the first whole second
        last = (t1_ns - self.start_ns) // 1_000_000_000 - 1  # the last second ending by t1
        blobs = [b for t, bs in per.items() if first <= t <= last for b in bs]
        return LatencySummary.of(merge_histograms(blobs)) if blobs else LatencySummary()

    @property
    def lost(self) -> int:
        """Acknowledged deliveries that never happened (private + broadcast)."""
        return self.private.lost + self.broadcast.lost

    @property
    def ok(self) -> bool:
        """True when no acknowledged message was lost (the CLI exits 1 otherwise)."""
        return self.lost == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every figure (latencies in ms, rates per second)."""
        d = asdict(self)
        d.pop("seconds", None)
        d["lost"] = self.lost
        d["ok"] = self.ok
        return d


def _add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def broadcast_expectations(acked_seqs: Iterable[int], login_seqs: Iterable[int]) -> dict[int, int]:
    """For each acked broadcast seq, how many subscribers must receive it: those whose login seq is
    below it (their session began before the broadcast was stored). Returns {seq: subscribers}."""
    lows = sorted(login_seqs)
    return {seq: bisect.bisect_left(lows, seq) for seq in acked_seqs}


def merge_broadcasts(parts: list[BroadcastPart]) -> tuple[KindResults, int]:
    """Add up the workers' broadcast parts. Returns (KindResults without rates/latency, subscribers).

    expected = sum over acked seqs of the subscribers logged in before it; delivered = deliveries
    of acked seqs, each capped at its expectation (the excess is `duplicated`); deliveries of seqs
    nobody acked (errors/unanswered sends that were stored anyway) are `delivered_unacked`.
    """
    r = KindResults()
    deliveries: dict[int, int] = {}
    acked: list[int] = []
    logins: list[int] = []
    for p in parts:
        r.sent += p.sent
        r.acked += p.acked
        r.failed += p.failed
        r.unanswered += p.unanswered
        r.repaired += p.repaired
        _add_counts(r.errors, p.errors)
        acked.extend(p.acked_seqs)
        logins.extend(p.login_seqs)
        for seq, n in p.deliveries.items():
            deliveries[seq] = deliveries.get(seq, 0) + n
    expect = broadcast_expectations(acked, logins)
    for seq, want in expect.items():
        got = deliveries.pop(seq, 0)
        r.expected += want
        if got > want:
            r.duplicated += got - want
            got = want
        r.delivered += got
        r.lost += want - got
    r.delivered_unacked = sum(deliveries.values())
    return r, len(logins)


def merge_reports(reports: list[WorkerReport], duration_s: float, drain_s: float = 0.0) -> Results:
    """Merge the workers' reports into Results.

    Args:
        reports: one WorkerReport per load process (any order).
        duration_s: the configured sending window, seconds (for send rates).
        drain_s: seconds the drain took (reported only).
    Returns:
        Results (options/prepare left empty for the caller). Throughput is deliveries divided by
        the active time = from the start to the last delivery, at least duration_s.
    """
    res = Results(processes=len(reports), duration_s=duration_s, drain_s=drain_s)
    if not reports:
        return res
    start_ns = min(r.start_ns for r in reports if r.start_ns) if any(r.start_ns for r in reports) else 0
    # login
    lg = res.login
    firsts, lasts = [], []
    for r in reports:
        res.clients += r.clients
        res.logged_in += r.logged_in
        lg.ok += r.login.ok
        lg.retries += r.login.retries
        _add_counts(lg.failed, r.login.failed)
        if r.login.first_ns:
            firsts.append(r.login.first_ns)
        if r.login.last_ns:
            lasts.append(r.login.last_ns)
        _add_counts(res.sessions_ended, r.sessions_ended)
        res.broker_lost += r.broker_lost
        res.skipped += r.skipped
        res.bad_frames += r.bad_frames
        res.drained = res.drained and r.drained
    res.start_ns = start_ns
    if firsts and lasts:
        lg.first_ns, lg.last_ns = min(firsts), max(lasts)
        lg.elapsed_s = max(0.0, (max(lasts) - min(firsts)) / 1e9)
        lg.rate = lg.ok / lg.elapsed_s if lg.elapsed_s > 0 else 0.0
    lg.latency = LatencySummary.of(merge_histograms(r.login.latency for r in reports))
    # private
    pv = res.private
    for r in reports:
        p = r.private
        pv.sent += p.sent
        pv.acked += p.acked
        pv.failed += p.failed
        pv.unanswered += p.unanswered
        pv.delivered += p.delivered - p.delivered_unacked
        pv.delivered_unacked += p.delivered_unacked
        pv.lost += p.lost
        pv.duplicated += p.duplicated
        _add_counts(pv.errors, p.errors)
    pv.expected = pv.acked
    pv.latency = LatencySummary.of(merge_histograms(r.private.latency for r in reports))
    # broadcasts
    bc, res.subscribers = merge_broadcasts([r.broadcast for r in reports])
    bc.latency = LatencySummary.of(merge_histograms(r.broadcast.latency for r in reports))
    res.broadcast = bc
    # rates
    last = max([r.private.last_delivery_ns for r in reports] + [r.broadcast.last_delivery_ns for r in reports])
    active = max(duration_s, (last - start_ns) / 1e9 if last and start_ns else 0.0)
    res.active_s = active
    if active > 0:
        pv.throughput = (pv.delivered + pv.delivered_unacked) / active
        bc.throughput = (bc.delivered + bc.delivered_unacked + bc.duplicated) / active
    if duration_s > 0:
        pv.send_rate = pv.sent / duration_s
        bc.send_rate = bc.sent / duration_s
    res.timeline = merge_timeline(reports, res.seconds)
    return res


def merge_timeline(reports: list[WorkerReport],
                   blobs: dict[str, dict[int, list[bytes]]] | None = None) -> list[SecondStats]:
    """Per-second deliveries, sends and latency percentiles over all workers (seconds since start).

    `blobs`, when given, is filled with {kind: {second: [encoded histograms]}} (Results.seconds).
    """
    per: dict[int, dict[str, Any]] = {}
    blobs = {} if blobs is None else blobs

    def slot(t: int) -> dict[str, Any]:
        return per.setdefault(t, {"sent": 0, "private": [0, []], "broadcast": [0, []]})

    for r in reports:
        for t, n in enumerate(r.sent_per_second):
            if n:
                slot(t)["sent"] += n
        for kind, seconds in (("private", r.private.seconds), ("broadcast", r.broadcast.seconds)):
            kind_blobs = blobs.setdefault(kind, {})
            for t, count, blob in seconds:
                s = slot(t)[kind]
                s[0] += count
                s[1].append(blob)
                kind_blobs.setdefault(t, []).append(blob)
    out: list[SecondStats] = []
    for t in range(0, max(per) + 1 if per else 0):
        s = per.get(t)
        if s is None:
            out.append(SecondStats(t))
            continue
        out.append(SecondStats(
            t,
            sent=s["sent"],
            private=s["private"][0],
            broadcast=s["broadcast"][0],
            private_latency=LatencySummary.of(merge_histograms(s["private"][1])) if s["private"][0] else None,
            broadcast_latency=LatencySummary.of(merge_histograms(s["broadcast"][1])) if s["broadcast"][0] else None,
        ))
    return out
