"""The group-commit writer (broker.writer.CommitWriter): reads that include batches not yet
durable, batches queued during a commit merged into one, a failed commit stopping the broker; and
a real broker killed with SIGKILL while its writer thread is inside a commit."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from zmq_chat.broker.memstore import MemoryStore
from zmq_chat.broker.storage import WriteBatch
from zmq_chat.broker.store import SqliteStore
from zmq_chat.broker.writer import CommitWriter
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from tests.harness import Broker, ok

from tests.test_broker_messaging import logged_in


class GatedStore(MemoryStore):
    """A MemoryStore whose commits wait for `gate` (set it to let them through) and can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)  # released when a commit starts waiting
        self.fail: Exception | None = None
        self.batches: list[WriteBatch] = []

    def commit(self, batch: WriteBatch) -> None:
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        self.batches.append(batch)
        super().commit(batch)


def mail(mail_id: int, to: str = "bob", text: str = "") -> m.PrivateMessage:
    return m.PrivateMessage(mail_id, "alice", to, 1.0, text or f"m{mail_id}", f"c{mail_id}")


def batch_of(*mails: m.PrivateMessage, acks: tuple[str, list[int]] | None = None,
             events: list[tuple[int, bytes]] | None = None) -> WriteBatch:
    b = WriteBatch()
    b.mail += mails
    if acks:
        b.acks.append(acks)
    b.events += events or []
    return b


@pytest.fixture
def gated():
    store = GatedStore()
    writer = CommitWriter(store)
    yield store, writer
    store.gate.set()
    try:
        writer.close()
    except OSError:  # the failure test's commit error, raised again
        pass
    assert store.closed


def test_reads_include_batches_being_committed(gated):
    store, writer = gated
    assert writer.submit(batch_of(mail(1), mail(2), events=[(1, b"e1")])) == 1
    assert store.entered.acquire(timeout=5)  # the writer is inside commit; nothing is durable
    assert writer.submit(batch_of(mail(3), acks=("bob", [1]), events=[(2, b"e2")])) == 2
    assert writer.settle() == 0
    assert [x.id for x in writer.mail_after("bob", 0, 10)] == [2, 3]
    assert [x.id for x in writer.mail_after("bob", 0, 1)] == [2]
    assert [x.id for x in writer.mail_by_ids("bob", [1, 3])] == [3]
    assert writer.event_bodies_after(0, 10) == [(1, b"e1"), (2, b"e2")]
    assert writer.mail_after("carol", 0, 10) == []
    store.gate.set()
    assert writer.wait(5) == 2
    # Settled: the same answers now come from the store alone.
    assert [x.id for x in writer.mail_after("bob", 0, 10)] == [2, 3]
    assert writer.event_bodies_after(1, 10) == [(2, b"e2")]


def test_batches_queued_during_a_commit_are_committed_together(gated):
    store, writer = gated
    writer.submit(batch_of(mail(1)))
    assert store.entered.acquire(timeout=5)
    for i in (2, 3, 4):
        writer.submit(batch_of(mail(i)))
    assert writer.submit(WriteBatch()) == 4  # an empty batch waits for everything before it
    store.gate.set()
    assert writer.wait(5) == 4
    assert [[x.id for x in b.mail] for b in store.batches] == [[1], [2, 3, 4]]
    assert sorted(store.mail) == [1, 2, 3, 4]


def test_a_committed_batch_not_yet_settled_is_read_once(tmp_path):
    store = SqliteStore(tmp_path)
    writer = CommitWriter(store)
    try:
        writer.submit(batch_of(mail(1), mail(2), events=[(1, b"e1")]))
        with writer._cond:  # durable, but the loop has not called settle() yet
            writer._cond.wait_for(lambda: writer._durable == 1, 5)
        assert [x.id for x in writer.mail_after("bob", 0, 10)] == [1, 2]
        assert [x.id for x in writer.mail_by_ids("bob", [1, 2])] == [1, 2]
        assert writer.event_bodies_after(0, 10) == [(1, b"e1")]
    finally:
        writer.close()


def test_a_failed_commit_is_raised_on_the_loop_and_nothing_later_commits(gated):
    store, writer = gated
    store.fail = OSError(28, "No space left on device")
    writer.submit(batch_of(mail(1)))
    store.gate.set()
    with pytest.raises(OSError, match="No space"):
        writer.wait(5)
    writer.submit(batch_of(mail(2)))
    with pytest.raises(OSError):
        writer.settle()
    assert store.mail == {}


# -- a real broker killed in the middle of a commit -------------------------------------------------
_SYNC_CALLS = {"x86_64": {18, 74, 75}, "aarch64": {68, 82, 83}}  # pwrite64, fsync, fdatasync


def _in_commit(pid: int, calls: set[int]) -> bool:
    """Whether a thread of `pid` is inside pwrite64/fsync/fdatasync (only SQLite makes these)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                first = f.read().split(" ", 1)[0]
        except OSError:
            continue
        if first.isdigit() and int(first) in calls:
            return True
    return False


@pytest.mark.skipif(os.uname().machine not in _SYNC_CALLS or not os.path.exists("/proc/self/task"),
                    reason="needs Linux /proc/<pid>/task/<tid>/syscall on x86_64 or aarch64")
def test_kill_9_during_a_commit_loses_and_duplicates_nothing(tmp_path, peers, names):
    """Sends stream in without waiting for replies; the broker is killed (SIGKILL) when one of its
    threads is inside a write or sync of SQLite. After a restart every send the sender got an ok
    for is in the mailbox, and retrying the unanswered ones with their ids stores each once."""
    calls = _SYNC_CALLS[os.uname().machine]
    broker = Broker(tmp_path)
    try:
        a, b = logged_in(peers, broker, names, 2)
        ok(b.call("logout"))
        cids: list[str] = []
        reqs = {}
        caught = False
        deadline = time.monotonic() + 15
        while not caught and time.monotonic() < deadline:  # stream sends until a commit is caught in the act
            for _ in range(10):
                cid = f"k{len(cids)}-{uuid.uuid4().hex[:8]}"
                req = 10_000_000 + len(cids)
                cids.append(cid)
                reqs[req] = cid
                a.send_raw(wire.encode_request(m.Send(req=req, id=cid, to=[b.user], text=f"text {cid}")))
            a.pump(0.001)
            caught = len(a.replies) > 0 and _in_commit(broker.pid, calls)
        assert caught, "the broker's threads were never seen inside a commit"
        os.kill(broker.pid, signal.SIGKILL)
        a.pump(0.05)
        acked = {reqs[r] for r, body in a.replies.items() if r in reqs and body["status"] == "ok"}
        assert acked
        broker.restart(kill=True)
        a2, b2 = peers(broker), peers(broker)
        ok(a2.login(a.user))
        for cid in cids:
            if cid not in acked:
                ok(a2.send(b.user, f"text {cid}", cid=cid))  # a retry: stored once, or "dup" if it was
        ok(b2.login(b.user))
        got: list[str] = []
        while len(got) < len(cids):  # the mail window holds 1000 unacknowledged messages: ack as they come
            b2.wait_msgs(min(len(cids), len(got) + 1000) - len(got), timeout=30)
            got += [x.cid for x in b2.msgs]
            ok(b2.call("ack", ids=[x.id for x in b2.msgs]))
            b2.msgs.clear()
        assert sorted(got) == sorted(cids)
    finally:
        broker.stop()


def test_stage_times_are_written_at_exit(tmp_path, peers, names):
    """--stage-times PATH: after a clean stop the file holds every stage, the commits and gc."""
    import json

    path = tmp_path / "stages.json"
    broker = Broker(tmp_path / "data", "--stage-times", str(path))
    try:
        a, b = logged_in(peers, broker, names, 2)
        for i in range(5):
            ok(a.send(b.user, f"timed {i}"))
    finally:
        assert broker.stop() == 0
    summary = json.loads(path.read_text())
    assert summary["requests"] >= 5
    assert set(summary["stages"]) == {"queued", "core", "commit_wait", "send", "total"}
    assert all(s["p50"] <= s["p99"] <= s["max"] for s in summary["stages"].values())
    assert summary["commits"]["count"] >= 1 and set(summary["gc"]) == {"gen0", "gen1", "gen2"}
