"""Tests of a load process's pieces without a broker: the SUB hot path of loadtest.fleet (events
counted without decoding must be accounted as ClientCore would), and how loadtest.runner says why
a load process is gone."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import pytest
import zmq

from zmq_chat.client.core import ClientCore
from zmq_chat.client.sequence import _SeqState
from zmq_chat.loadtest.fleet import Fleet, SimClient
from zmq_chat.loadtest.latency import LatencyRecorder, LatencySummary
from zmq_chat.loadtest.runner import _Pool
from zmq_chat.loadtest.texts import Texts
from zmq_chat.loadtest.worker import WorkerConfig
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.wire import encode_event

TAG = "rtest1"


class _Conn:
    """What Fleet._read_sub uses of a SyncConnection: core and errors."""

    def __init__(self, core: ClientCore) -> None:
        self.core = core
        self.errors = 0


@pytest.fixture
def setup():
    cfg = WorkerConfig(worker=0, address="127.0.0.1", port=1, ipv6=False, users=["u0"], password="p", rate=None,
                       window=1, broadcast_ratio=1.0, size=60, run_tag=TAG, login_parallel=1, login_timeout=5.0,
                       drain=0.0)
    a, b = socket.socketpair()
    fleet = Fleet(cfg, a.fileno(), lambda: None)
    fleet.bled.latency = LatencyRecorder(time.monotonic_ns())
    pub, sub = fleet.ctx.socket(zmq.PUB), fleet.ctx.socket(zmq.SUB)
    pub.bind("inproc://events")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect("inproc://events")
    core = ClientCore()
    core._seq = _SeqState(last=10, login_seq=10)
    core._seq.caught_up = True
    yield fleet, pub, sub, core
    pub.close(0)
    sub.close(0)
    fleet.close()
    a.close()
    b.close()


def _bcast(seq: int, sent_ns: int, tag: str = TAG) -> list[bytes]:
    _, text = Texts(tag, 1, 60).broadcast(seq, sent_ns)
    return encode_event(m.Event(seq=seq, ts=1.0, kind="bcast", user="someone", text=text, cid="c"))


def _read_all(fleet: Fleet, sub: zmq.Socket, conn: _Conn) -> None:
    """Read what was published to `sub` until nothing more arrives within 100 ms (bounded)."""
    deadline = time.monotonic() + 5.0
    c = SimClient("u0")
    c.login_seq = 10
    while sub.poll(100) and time.monotonic() < deadline:
        fleet._read_sub(c, conn, sub)


def test_in_order_events_are_counted_like_the_core_would(setup):
    fleet, pub, sub, core = setup
    sent = time.monotonic_ns() - 5_000_000  # 5 ms ago
    frames = [_bcast(11, sent), encode_event(m.Event(seq=12, ts=1.0, kind="presence", user="x", event="login")),
              _bcast(13, sent), _bcast(14, sent, tag="otherrun")]
    for f in frames:
        pub.send_multipart(f)
    conn = _Conn(core)
    _read_all(fleet, sub, conn)
    assert core.last_seq == 14  # every event moved the sequence on, presence and other runs' too
    assert fleet.bled.deliveries == {11: 1, 13: 1}  # our broadcasts only
    assert conn.errors == 0
    encoded, _ = fleet.bled.latency.finish()
    summary = LatencySummary.merged([encoded])
    assert summary.count == 2 and summary.p50 >= 5.0  # the send time was read out of the JSON


def test_an_event_after_a_gap_goes_to_the_core_and_asks_history(setup):
    fleet, pub, sub, core = setup
    pub.send_multipart(_bcast(13, time.monotonic_ns()))  # 11 and 12 missing
    pub.send_multipart(_bcast(14, time.monotonic_ns()))
    conn = _Conn(core)
    _read_all(fleet, sub, conn)
    assert core.last_seq == 10 and sorted(core._seq.held) == [13, 14]
    assert core._seq.history_req is not None  # the repair was asked
    assert fleet.bled.deliveries == {}


def test_a_malformed_message_counts_as_an_error_and_the_next_good_one_is_read(setup):
    fleet, pub, sub, core = setup
    pub.send(b"bcast")  # a lone frame: its pair is the next message's topic
    pub.send_multipart([b"bcast", b'{"seq":11}'])  # skipped with it
    pub.send_multipart([b"presence", b"not json"])
    pub.send_multipart(_bcast(11, time.monotonic_ns()))
    presence = encode_event(m.Event(seq=12, ts=1.0, kind="presence", user="x", event="login"))
    pub.send_multipart([*presence, b"extra"])  # read; its third frame pairs with the next topic
    pub.send_multipart([b"bcast", b"{}"])
    pub.send_multipart(_bcast(13, time.monotonic_ns()))
    pub.send(b"bcast")  # a lone last frame
    conn = _Conn(core)
    _read_all(fleet, sub, conn)
    assert conn.errors == 4 and core.last_seq == 13 and fleet.bled.deliveries == {11: 1, 13: 1}


def _pool_of(*codes: str) -> _Pool:
    pool = _Pool.__new__(_Pool)  # no load processes: only what exit_reason reads
    pool.procs, pool.logs = [], []
    for code in codes:
        log = tempfile.TemporaryFile()
        pool.procs.append(subprocess.Popen([sys.executable, "-c", code], stderr=log))
        pool.logs.append(log)
    return pool


def test_exit_reason_names_the_status_the_signal_and_the_last_stderr_line():
    pool = _pool_of("import sys; print('first', file=sys.stderr); print('it broke', file=sys.stderr); sys.exit(3)",
                    "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    try:
        assert pool.exit_reason(0, wait_s=20) == "exit status 3; stderr: it broke"
        reason = pool.exit_reason(1, wait_s=20)
        assert reason.startswith("killed by SIGKILL") and reason.endswith("nothing on stderr")
    finally:
        for log in pool.logs:
            log.close()
