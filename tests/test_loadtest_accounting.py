"""Unit tests of the load tester's pure parts (loadtest.accounting, ledgers, latency, texts,
options) on crafted inputs."""

from __future__ import annotations

import json

import pytest

from zmq_chat.loadtest.accounting import broadcast_expectations, merge_broadcasts, merge_reports
from zmq_chat.loadtest.latency import (
    LatencyRecorder, LatencySummary, decode_histogram, merge_histograms, new_histogram, quantize_us,
)
from zmq_chat.loadtest.ledgers import BroadcastLedger, LoginPart, PrivateLedger, WorkerReport
from zmq_chat.loadtest.texts import Texts, make_text, parse_text
from zmq_chat.loadtest.options import LoadOptions, OptionsError, user_name, user_names
from zmq_chat.loadtest.runner import split_users

S = 1_000_000_000  # ns per second
MS = 1_000_000  # ns per millisecond


@pytest.mark.timeout(5)
def test_text_round_trip_and_size():
    text = make_text("r1w0p1f", 123456789, 100)
    assert len(text) == 100
    assert parse_text(text) == ("r1w0p1f", 123456789)
    short = make_text("r1w0p1f", 123456789, 5)  # the header alone is longer: no padding
    assert short == "r1w0p1f 123456789"
    assert parse_text(short) == ("r1w0p1f", 123456789)
    assert parse_text("hello world") is None
    assert parse_text("") is None


@pytest.mark.timeout(5)
def test_texts_of_one_process_are_read_back():
    texts = Texts("r1", 3, 60)
    head, text = texts.private(31, 5 * S)
    assert head == "r1w3p1f" and len(text) == 60
    assert texts.read_private(text) == (31, 5 * S)
    head, text = texts.broadcast(2, 7 * S)
    assert head == "r1w3b2" and texts.read_broadcast(text) == 7 * S
    assert Texts("r1", 0, 60).read_broadcast(text) == 7 * S  # any process of the run
    assert Texts("r1", 0, 60).read_private(texts.private(1, 1)[1]) is None  # another process's
    assert texts.read_broadcast("r2w0b1 5 xx") is None  # another run's
    assert texts.read_private("r1w3pzz 5") == (-1, 0)  # ours, unreadable: a ledger counts it foreign
    assert texts.read_broadcast("r1w0b1 garbled") == 0


@pytest.mark.timeout(5)
def test_private_ledger_counts_every_outcome():
    led = PrivateLedger(start_ns=0)
    n = [led.new_message() for _ in range(7)]
    assert n == list(range(7))
    # 0: acked then delivered; 1: delivered before its ack (the broker pushes before replying)
    led.acked(0)
    assert led.delivered(0, 1 * MS, 1 * MS)
    assert led.delivered(1, 2 * MS, 2 * MS)
    led.acked(1)
    # 2: acked, never delivered -> lost
    led.acked(2)
    # 3: error reply; 4: error reply but delivered anyway; 5: no reply at all; 6: no reply, delivered
    led.failed(3, "E_OVERLOADED")
    led.failed(4, "E_INTERNAL")
    led.delivered(4, 3 * MS, 3 * MS)
    led.delivered(6, 4 * MS, 4 * MS)
    # duplicates and foreign numbers are counted, not delivered again
    assert not led.delivered(0, 5 * MS, 5 * MS)
    assert not led.delivered(99, 5 * MS, 5 * MS)
    assert led.undelivered_acked() == 1
    part = led.part()
    assert part.sent == 7
    assert part.acked == 3
    assert part.failed == 2
    assert part.unanswered == 2
    assert part.sent == part.acked + part.failed + part.unanswered
    assert part.delivered == 4  # 0, 1, 4, 6 (first deliveries)
    assert part.delivered_unacked == 2  # 4 and 6
    assert part.lost == 1  # 2
    assert part.duplicated == 1
    assert part.foreign == 1
    assert part.errors == {"E_OVERLOADED": 1, "E_INTERNAL": 1}
    hist = decode_histogram(part.latency)
    assert hist.get_total_count() == 4  # one latency per first delivery
    assert part.last_delivery_ns == 4 * MS


@pytest.mark.timeout(5)
def test_latency_recorder_buckets_per_second_and_percentiles():
    rec = LatencyRecorder(start_ns=10 * S)
    for i in range(1, 101):  # second 0: 1..100 ms
        rec.record(10 * S + i * MS, i * MS)
    rec.record(11 * S + 5 * MS, 500 * MS)  # second 1
    rec.record(13 * S, 7 * MS)  # second 3 (second 2 empty)
    rec.record(13 * S + 1, 0)  # below 1 us is clamped to 1 us
    rec.record(13 * S + 2, 10**13)  # above 1 h is clamped to 1 h
    total, seconds = rec.finish()
    assert [(t, n) for t, n, _ in seconds] == [(0, 100), (1, 1), (3, 3)]
    s0 = LatencySummary.of(decode_histogram(seconds[0][2]))
    assert s0.count == 100
    assert s0.p50 == pytest.approx(50.0, rel=0.002)
    assert s0.p90 == pytest.approx(90.0, rel=0.002)
    assert s0.p99 == pytest.approx(99.0, rel=0.002)
    assert s0.max == pytest.approx(100.0, rel=0.002)
    whole = LatencySummary.of(decode_histogram(total))
    assert whole.count == 104
    assert whole.max == pytest.approx(3_600_000.0, rel=0.002)  # ms
    s3 = LatencySummary.of(decode_histogram(seconds[2][2]))
    assert s3.count == 3
    assert s3.p50 == pytest.approx(7.0, rel=0.002)


@pytest.mark.timeout(5)
def test_quantize_keeps_three_significant_digits():
    for v in (1, 7, 2047, 2048, 2049, 12345, 987654, 3_599_999_999):
        q = quantize_us(v)
        assert q <= v and (v - q) / v < 0.001
        hist = new_histogram()
        hist.record_value(v)
        assert hist.get_value_at_percentile(50) == hist.get_highest_equivalent_value(q)


@pytest.mark.timeout(5)
def test_histograms_merge_across_processes():
    a, b = LatencyRecorder(0), LatencyRecorder(0)
    for i in range(1, 1001):
        (a if i % 2 else b).record(S // 2, i * MS)  # odd values in a, even in b
    merged = merge_histograms([a.finish()[0], b.finish()[0], None, b""])
    s = LatencySummary.of(merged)
    assert s.count == 1000
    assert s.p50 == pytest.approx(500.0, rel=0.002)
    assert s.p99 == pytest.approx(990.0, rel=0.002)
    assert s.p99_9 == pytest.approx(999.0, rel=0.002)
    assert s.max == pytest.approx(1000.0, rel=0.002)


@pytest.mark.timeout(5)
def test_broadcast_expectations_follow_login_seqs():
    # subscribers logged in at seqs 10, 20, 20, 30: a broadcast stored at seq 21 must reach the
    # three whose login seq is below 21.
    exp = broadcast_expectations([5, 11, 21, 31, 100], [10, 20, 20, 30])
    assert exp == {5: 0, 11: 1, 21: 3, 31: 4, 100: 4}


@pytest.mark.timeout(5)
def test_broadcast_merge_lost_duplicated_unacked_and_repaired():
    # worker A: sends seq 41 and 43 (acked) and one broadcast without reply (stored as seq 44);
    # 2 subscribers logged in at seq 40.
    a = BroadcastLedger(0)
    for _ in range(3):
        a.new_message()
    a.acked(0, 41)
    a.acked(1, 43)
    a.add_subscriber(40)
    a.add_subscriber(40)
    # worker B: sends seq 42 (acked) and one that got E_OVERLOADED; 1 subscriber logged in at 41
    # (so it owes nothing for 41).
    b = BroadcastLedger(0)
    b.new_message()
    b.new_message()
    b.acked(0, 42)
    b.failed(1, "E_OVERLOADED")
    b.add_subscriber(41)
    # deliveries: each of A's two subscribers gets 41, 42 (one of them via history repair), 43
    # and the unacked 44; B's subscriber gets 42 and 43.
    for seq in (41, 41, 42, 43, 43, 44, 44):
        a.delivered(seq, S, MS)
    a.delivered(42, S, MS, repaired=True)
    for seq in (42, 43):
        b.delivered(seq, S, MS)
    r, subscribers = merge_broadcasts([a.part(), b.part()])
    assert subscribers == 3
    assert r.sent == 5 and r.acked == 3 and r.failed == 1 and r.unanswered == 1
    assert r.sent == r.acked + r.failed + r.unanswered
    assert r.errors == {"E_OVERLOADED": 1}
    assert r.expected == 8  # seq 41 -> 2 subscribers (logins 40, 40), 42 -> 3, 43 -> 3
    assert r.delivered == 8
    assert r.lost == 0
    assert r.duplicated == 0
    assert r.delivered_unacked == 2  # seq 44
    assert r.repaired == 1


@pytest.mark.timeout(5)
def test_a_broadcast_with_an_unreadable_send_time_counts_as_delivered_without_a_latency():
    # the fleet passes None when Texts.read_broadcast gives 0: a latency of "now - 0" would be
    # the time since boot
    a = BroadcastLedger(0)
    a.new_message()
    a.acked(0, 11)
    a.add_subscriber(10)
    a.delivered(11, S, None)
    a.delivered(12, S, 3 * MS)
    part = a.part()
    assert part.deliveries == {11: 1, 12: 1}
    assert [count for _second, count, _hist in part.seconds] == [1]  # 12's latency only


@pytest.mark.timeout(5)
def test_broadcast_merge_counts_missing_deliveries_as_lost_and_excess_as_duplicates():
    a = BroadcastLedger(0)
    a.new_message()
    a.new_message()
    a.acked(0, 11)
    a.acked(1, 12)
    for login in (10, 10, 10):
        a.add_subscriber(login)
    for seq in (11, 11, 12, 12, 12, 12):  # 11: one subscriber missed it; 12: one too many
        a.delivered(seq, S, MS)
    r, _ = merge_broadcasts([a.part()])
    assert r.expected == 6
    assert r.delivered == 5
    assert r.lost == 1
    assert r.duplicated == 1


def _report(worker: int, *, logins: int, login_first: int, login_last: int, start: int) -> WorkerReport:
    led = PrivateLedger(start)
    for i in range(10):
        n = led.new_message()
        led.acked(n)
        if i < 9 + worker:  # worker 0 loses one message, worker 1 none
            led.delivered(n, start + (i % 3) * S + 1, (i + 1) * MS)
    hist = new_histogram()
    for i in range(logins):
        hist.record_value(1000 * (i + 1))  # 1 ms, 2 ms, ...
    bled = BroadcastLedger(start)
    bled.add_subscriber(5)
    return WorkerReport(
        worker=worker, clients=logins, logged_in=logins,
        login=LoginPart(ok=logins, failed={"E_BAD_CREDENTIALS": 1} if worker else {}, latency=hist.encode(),
                        first_ns=login_first, last_ns=login_last),
        private=led.part(), broadcast=bled.part(), sent_per_second=[4, 3, 3],
        start_ns=start, end_ns=start + 3 * S,
    )


@pytest.mark.timeout(5)
def test_merge_reports_adds_up_workers():
    start = 100 * S
    r0 = _report(0, logins=3, login_first=10 * S, login_last=11 * S, start=start)
    r1 = _report(1, logins=2, login_first=10 * S + S // 2, login_last=12 * S, start=start)
    res = merge_reports([r0, r1], duration_s=3.0, drain_s=0.5)
    assert res.processes == 2 and res.clients == 5 and res.logged_in == 5 and res.subscribers == 2
    assert res.login.ok == 5
    assert res.login.failed == {"E_BAD_CREDENTIALS": 1}
    assert res.login.elapsed_s == pytest.approx(2.0)
    assert res.login.rate == pytest.approx(2.5)
    assert (res.login.first_ns, res.login.last_ns, res.start_ns) == (10 * S, 12 * S, start)
    assert res.login.latency.count == 5
    assert res.login.latency.max == pytest.approx(3.0, rel=0.002)
    pv = res.private
    assert pv.sent == 20 and pv.acked == 20 and pv.expected == 20
    assert pv.delivered == 19 and pv.lost == 1
    assert pv.sent == pv.acked + pv.failed + pv.unanswered
    assert pv.latency.count == 19
    assert pv.send_rate == pytest.approx(20 / 3.0)
    assert res.active_s == pytest.approx(3.0)  # last delivery is inside the window
    assert pv.throughput == pytest.approx(19 / 3.0)
    assert not res.ok and res.lost == 1
    # the timeline: sends and deliveries per second over both workers
    assert [s.t for s in res.timeline] == [0, 1, 2]
    assert [s.sent for s in res.timeline] == [8, 6, 6]
    assert sum(s.private for s in res.timeline) == 19
    assert all(s.private_latency is not None for s in res.timeline)
    assert all(s.broadcast_latency is None for s in res.timeline)
    assert res.latency_between("private", start, start + 3 * S).count == 19
    assert res.latency_between("private", start + 1, start + 3 * S).count == sum(s.private for s in res.timeline[1:])
    assert res.latency_between("private", start, start + S - 1).count == 0  # no whole second inside
    assert res.latency_between("broadcast", start, start + 3 * S).count == 0
    d = res.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["lost"] == 1 and d["ok"] is False
    assert d["private"]["latency"]["p50"] > 0


@pytest.mark.timeout(5)
def test_latency_between_takes_whole_seconds_inside_the_span():
    recs = [LatencyRecorder(start_ns=5 * S) for _ in range(2)]
    for sec in range(4):  # seconds 0..3: 10 values each of (sec + 1) ms, split over two workers
        for i in range(10):
            recs[i % 2].record(5 * S + sec * S + i * MS, (sec + 1) * MS)
    reports = []
    for i, rec in enumerate(recs):
        total, seconds = rec.finish()
        r = _report(i, logins=1, login_first=S, login_last=2 * S, start=5 * S)
        r.private.seconds = seconds
        reports.append(r)
    res = merge_reports(reports, duration_s=4.0)
    mid = res.latency_between("private", 6 * S, 8 * S)  # seconds 1 and 2
    assert mid.count == 20
    assert mid.p50 == pytest.approx(2.0, rel=0.002) and mid.max == pytest.approx(3.0, rel=0.002)
    assert res.latency_between("private", 6 * S - 1, 8 * S + 1).count == 20  # partial seconds left out
    assert res.latency_between("private", 0, 100 * S).count == 40
    assert res.latency_between("private", 8 * S, 7 * S).count == 0


@pytest.mark.timeout(5)
def test_merge_reports_of_nothing():
    res = merge_reports([], duration_s=1.0)
    assert res.ok and res.timeline == [] and res.processes == 0


@pytest.mark.timeout(5)
def test_options_validation_and_names():
    LoadOptions(server_key=b"k" * 40).validate()
    LoadOptions(insecure=True).validate()
    LoadOptions().validate(require_key=False)
    assert user_name("X", 7) == "ltX7"
    assert user_names("", 3, start=2) == ["lt2", "lt3", "lt4"]
    bad = [
        dict(clients=0), dict(duration=0), dict(rate=0), dict(window=0), dict(window=1001),
        dict(broadcast_ratio=1.5), dict(size=0), dict(processes=0), dict(user_prefix="a-b"),
        dict(user_prefix="x" * 30, clients=10), dict(port=0), dict(drain=-1), dict(login_parallel=0),
    ]
    for kw in bad:
        with pytest.raises(OptionsError) as exc:
            LoadOptions(**kw, insecure=True).validate()
        assert "\n" not in str(exc.value) and "--" in str(exc.value)
    assert LoadOptions(clients=3, processes=8).effective_processes == 3
    assert "password" not in LoadOptions().to_dict()
    with pytest.raises(OptionsError) as exc:  # the broker key: given, or --insecure
        LoadOptions().validate()
    assert "--server-key" in str(exc.value) and "--insecure" in str(exc.value)


@pytest.mark.timeout(5)
def test_split_users_is_contiguous_and_even():
    names = [str(i) for i in range(10)]
    parts = split_users(names, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sum(parts, []) == names
    assert split_users(names[:2], 5) == [["0"], ["1"]]
