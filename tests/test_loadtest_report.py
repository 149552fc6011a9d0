"""Tests of loadtest.report on crafted results: summary tables, JSON file, plot, live display."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from zmq_chat.loadtest.accounting import merge_reports
from zmq_chat.loadtest.latency import new_histogram
from zmq_chat.loadtest.ledgers import BroadcastLedger, LoginPart, PrivateLedger, WorkerReport
from zmq_chat.loadtest.report import LiveDisplay, plot, print_summary, write_json
from zmq_chat.loadtest.runner import Progress

S = 1_000_000_000
MS = 1_000_000


def _results(lose: int = 0):
    start = 50 * S
    p = PrivateLedger(start)
    b = BroadcastLedger(start)
    b.add_subscriber(1)
    b.add_subscriber(1)
    for i in range(300):
        n = p.new_message()
        p.acked(n)
        if i >= lose:
            p.delivered(n, start + (i // 100) * S + 5, (1 + i % 7) * MS)
        k = b.new_message()
        b.acked(k, 10 + i)
        for _ in range(2):
            b.delivered(10 + i, start + (i // 100) * S + 7, (2 + i % 5) * MS)
    hist = new_histogram()
    hist.record_value(60_000)
    rep = WorkerReport(worker=0, clients=2, logged_in=2,
                       login=LoginPart(ok=2, latency=hist.encode(), first_ns=S, last_ns=2 * S),
                       private=p.part(), broadcast=b.part(), sent_per_second=[200, 200, 200],
                       start_ns=start, end_ns=start + 3 * S)
    res = merge_reports([rep], duration_s=3.0, drain_s=0.1)
    res.options = {"rate": None, "window": 8, "broadcast_ratio": 0.5, "size": 100}
    res.prepare = {"created": 2, "existed": 0, "failed": {}, "elapsed_s": 0.2}
    return res


@pytest.mark.timeout(10)
def test_summary_mentions_every_figure():
    buf = io.StringIO()
    print_summary(_results(), Console(file=buf, width=120, color_system=None))
    text = buf.getvalue()
    for word in ("logins/s", "login latency", "sent", "acknowledged", "delivered", "lost", "duplicated",
                 "via history repair", "throughput", "p99.9", "no acknowledged message lost"):
        assert word in text, word
    buf = io.StringIO()
    print_summary(_results(lose=3), Console(file=buf, width=120, color_system=None))
    assert "3 acknowledged deliveries lost" in buf.getvalue()


@pytest.mark.timeout(10)
def test_json_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(_results(lose=2), path)
    data = json.loads(path.read_text())
    assert data["lost"] == 2 and data["ok"] is False
    assert data["private"]["lost"] == 2 and data["broadcast"]["delivered"] == 600
    assert len(data["timeline"]) == 3 and data["timeline"][0]["broadcast_latency"]["p99"] > 0


@pytest.mark.timeout(30)
def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    plot(_results(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(10)
def test_live_display_without_terminal_prints_phase_lines():
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False)
    with LiveDisplay(console) as live:
        live.prepared(3, 3)
        live(Progress(phase="login", logins_total=3, logins_done=1))
        live(Progress(phase="run", logins_total=3, logins_done=3, logins_ok=3, duration_s=2))
        live(Progress(phase="done", logins_total=3, logins_ok=3, duration_s=2, send_rate=1234.0))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "accounts: 3/3 done"
    assert "logins: 3/3 ok" in lines and "sending for 2 s" in lines
    assert lines[-1].startswith("done; averages: sent 1,234/s")
