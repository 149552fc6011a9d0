"""The figures of a whole load run, merged in the parent from the load processes' reports
(loadtest.ledgers.WorkerReport): `merge_reports(reports, ...)` -> `Results` adds the parts up,
decides the broadcast expectations across processes (a subscriber must get every acked broadcast
whose seq is above its login seq) and computes throughput and latency percentiles. Pure: no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from zmq_chat.loadtest.latency import LatencySummary
from zmq_chat.loadtest.ledgers import (
    BroadcastPart, LoginCounts, PhasePace, PrivatePart, RunCounts, SendCounts, WorkerReport,
)


@dataclass
class LoginResults(PhasePace, LoginCounts):
    """Login phase over all workers: the LoginCounts (first_ns/last_ns: the first login sent
    anywhere / the last ok reply anywhere, both 0 unless both happened), the PhasePace
    (elapsed_s: first login sent to last reply; rate: ok logins per second), latency
    (LatencySummary, ms)."""

    latency: LatencySummary = field(default_factory=LatencySummary)


@dataclass
class KindResults(SendCounts):
    """Figures of one message kind ("private" or "broadcast").

    Messages: the SendCounts (sent = acked + failed + unanswered, errors {code: count}).
    Deliveries (private: one per message; broadcast: one per subscriber and message):
    expected (broadcast: acked x subscribers logged in before it; private: = acked), delivered
    (deliveries of acked messages), delivered_unacked, lost (expected - delivered), duplicated,
    repaired (broadcast: via history), throughput (deliveries per second over the active time),
    send_rate (messages sent per second of the sending window), latency (LatencySummary, ms).
    """

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
class Results(RunCounts):
    """The figures of one load run (what `run_load` returns; `to_dict()` is the JSON form).

    Fields: the RunCounts of all processes (clients: requested; drained: all workers ended with
    nothing outstanding; start_ns: monotonic ns at which second 0 of the timeline begins);
    processes, duration_s (sending window, s), active_s (start to last delivery, s), drain_s (stop
    of sending to end of drain, s), login (LoginResults), private / broadcast (KindResults),
    subscribers (logged-in SUB clients), timeline (list of SecondStats), options (dict of the
    options used), prepare (dict from the account preparation, if it ran), null_run (the figures of
    the --compare-insecure run, if any). Not in to_dict: the per-second latency histograms behind
    `latency_between`.
    """

    processes: int = 0
    duration_s: float = 0.0
    active_s: float = 0.0
    drain_s: float = 0.0
    login: LoginResults = field(default_factory=LoginResults)
    private: KindResults = field(default_factory=KindResults)
    broadcast: KindResults = field(default_factory=KindResults)
    subscribers: int = 0
    timeline: list[SecondStats] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    null_run: dict[str, Any] | None = None  # --compare-insecure: the same load without encryption
    seconds: dict[str, dict[int, list[bytes]]] = field(default_factory=dict, repr=False)

    def latency_between(self, kind: str, t0_ns: int, t1_ns: int) -> LatencySummary:
        """Latency of `kind` ("private" or "broadcast") over the whole seconds of the timeline that
        lie inside [t0_ns, t1_ns] (monotonic ns), from the merged per-second HDR histograms, so
        percentiles are exact for that span (e.g. "others' p99 during a login storm"). Deliveries
        are counted in the second they arrived. An empty span gives an empty LatencySummary."""
        per = self.seconds.get(kind, {})
        first = -((self.start_ns - t0_ns) // 1_000_000_000)  # ceil: the first whole second
        last = (t1_ns - self.start_ns) // 1_000_000_000 - 1  # the last second ending by t1
        return LatencySummary.merged(b for t, bs in per.items() if first <= t <= last for b in bs)

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


def broadcast_expectations(acked_seqs: Iterable[int], login_seqs: Iterable[int]) -> dict[int, int]:
    """For each acked broadcast seq, how many subscribers must receive it: those whose login seq is
    below it (their session began before the broadcast was stored). Returns {seq: subscribers}."""
    lows = sorted(login_seqs)
    return {seq: bisect.bisect_left(lows, seq) for seq in acked_seqs}


def merge_privates(parts: list[PrivatePart]) -> KindResults:
    """Add up the processes' private parts (KindResults without rates): expected = acked; a
    recipient is always a client of the sender's process, so each part's losses are final."""
    r = KindResults()
    for p in parts:
        r.add_counts(p)
        r.delivered += p.acked_deliveries()
        r.delivered_unacked += p.delivered_unacked
        r.lost += p.lost
        r.duplicated += p.duplicated
    r.expected = r.acked
    r.latency = LatencySummary.merged(p.latency for p in parts)
    return r


def merge_broadcasts(parts: list[BroadcastPart]) -> tuple[KindResults, int]:
    """Add up the processes' broadcast parts. Returns (KindResults without rates, subscribers).

    expected = sum over acked seqs of the subscribers logged in before it; delivered = deliveries
    of acked seqs, each capped at its expectation (the excess is `duplicated`); deliveries of seqs
    nobody acked (errors/unanswered sends that were stored anyway) are `delivered_unacked`.
    """
    r = KindResults()
    deliveries: dict[int, int] = {}
    acked: list[int] = []
    logins: list[int] = []
    for p in parts:
        r.add_counts(p)
        r.repaired += p.repaired
        acked.extend(p.acked_seqs)
        logins.extend(p.login_seqs)
        for seq, n in p.deliveries.items():
            deliveries[seq] = deliveries.get(seq, 0) + n
    for seq, want in broadcast_expectations(acked, logins).items():
        got = deliveries.pop(seq, 0)
        r.expected += want
        if got > want:
            r.duplicated += got - want
            got = want
        r.delivered += got
        r.lost += want - got
    r.delivered_unacked = sum(deliveries.values())
    r.latency = LatencySummary.merged(p.latency for p in parts)
    return r, len(logins)


def merge_logins(reports: list[WorkerReport]) -> LoginResults:
    """Add up the login phases: elapsed_s from the first login sent to the last reply anywhere."""
    lg = LoginResults()
    for r in reports:
        lg.add_counts(r.login)
    firsts = [r.login.first_ns for r in reports if r.login.first_ns]
    lasts = [r.login.last_ns for r in reports if r.login.last_ns]
    if firsts and lasts:
        lg.first_ns, lg.last_ns = min(firsts), max(lasts)
        lg.set_pace((lg.last_ns - lg.first_ns) / 1e9, lg.ok)
    lg.latency = LatencySummary.merged(r.login.latency for r in reports)
    return lg


def merge_reports(reports: list[WorkerReport], duration_s: float, drain_s: float = 0.0) -> Results:
    """Merge the processes' reports into Results.

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
    for r in reports:
        res.add_counts(r)
    res.login = merge_logins(reports)
    pv = res.private = merge_privates([r.private for r in reports])
    bc, res.subscribers = merge_broadcasts([r.broadcast for r in reports])
    res.broadcast = bc
    last = max(max(r.private.last_delivery_ns, r.broadcast.last_delivery_ns) for r in reports)
    res.active_s = max(duration_s, (last - res.start_ns) / 1e9 if last and res.start_ns else 0.0)
    if res.active_s > 0:
        pv.throughput = (pv.delivered + pv.delivered_unacked) / res.active_s
        bc.throughput = (bc.delivered + bc.delivered_unacked + bc.duplicated) / res.active_s
    if duration_s > 0:
        pv.send_rate = pv.sent / duration_s
        bc.send_rate = bc.sent / duration_s
    res.timeline = merge_timeline(reports, res.seconds)
    return res


def merge_timeline(reports: list[WorkerReport],
                   blobs: dict[str, dict[int, list[bytes]]] | None = None) -> list[SecondStats]:
    """Per-second deliveries, sends and latency percentiles over all processes (seconds since start).

    `blobs`, when given, is filled with {kind: {second: [encoded histograms]}} (Results.seconds).
    """
    blobs = {} if blobs is None else blobs
    sent: dict[int, int] = {}
    counts: dict[str, dict[int, int]] = {"private": {}, "broadcast": {}}
    for r in reports:
        for t, n in enumerate(r.sent_per_second):
            if n:
                sent[t] = sent.get(t, 0) + n
        for kind, seconds in (("private", r.private.seconds), ("broadcast", r.broadcast.seconds)):
            kind_blobs = blobs.setdefault(kind, {})
            for t, count, blob in seconds:
                counts[kind][t] = counts[kind].get(t, 0) + count
                kind_blobs.setdefault(t, []).append(blob)
    ends = [max(d) + 1 for d in (sent, counts["private"], counts["broadcast"]) if d]

    def latency(kind: str, t: int) -> LatencySummary | None:
        return LatencySummary.merged(blobs[kind][t]) if counts[kind].get(t) else None

    return [SecondStats(t, sent=sent.get(t, 0), private=counts["private"].get(t, 0),
                        broadcast=counts["broadcast"].get(t, 0), private_latency=latency("private", t),
                        broadcast_latency=latency("broadcast", t))
            for t in range(max(ends, default=0))]
