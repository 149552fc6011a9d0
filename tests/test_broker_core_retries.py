"""Send ids, history pruning and restarts through the core in-process (tests/core_harness.py, fake
clock): a retried send or broadcast gets its first reply with dup=true, a reused id for another
message is E_DUPLICATE_ID, ids expire after --sends-keep-seconds (at the next prune), survive a
restart; history after a prune says complete=false (docs/protocol.md 9.2, 9.4)."""

from __future__ import annotations

import pytest

from zmq_chat.broker.memstore import MemoryStore
from zmq_chat.broker.store import SqliteStore
from tests.core_harness import PASSWORD, CoreRig

pytestmark = pytest.mark.timeout(30)


RIG_CONFIG = {"sends_keep_seconds": 60.0, "history": 5}


def _without(reply: dict, *keys: str) -> dict:
    return {k: v for k, v in reply.items() if k not in keys}


# -- retries (9.2) -------------------------------------------------------------------------------
def test_a_retried_send_gets_the_first_reply_and_stores_nothing_more(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(b, "busy", text="out")
    first = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    rig.clock.advance(2)
    retry = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    assert retry["dup"] is True and first["dup"] is False
    assert _without(retry, "req", "dup") == _without(first, "req", "dup")  # ids, ts, busy of the first
    assert first["busy"] == [{"user": "bob", "text": "out"}]
    assert len(rig.store.mail) == 1 and rig.core.mail_counts["bob"] == 1


def test_a_retried_broadcast_gets_the_first_seq_and_publishes_once(rig):
    a = rig.user("alice")
    first = rig.call(a, "broadcast", id="b1", text="hello")
    rig.clock.advance(2)
    retry = rig.call(a, "broadcast", id="b1", text="hello")
    assert (retry["seq"], retry["ts"], retry["dup"]) == (first["seq"], first["ts"], True)
    assert len(rig.events("bcast")) == 1 and rig.core.seq == first["seq"]


def test_a_send_id_reused_for_another_message_is_refused(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.user("carol")
    rig.call(a, "send", id="s1", to=["bob"], text="hi")
    assert rig.call(a, "send", id="s1", to=["bob"], text="other text")["code"] == "E_DUPLICATE_ID"
    assert rig.call(a, "send", id="s1", to=["carol"], text="hi")["code"] == "E_DUPLICATE_ID"
    assert rig.call(a, "broadcast", id="s1", text="hi")["code"] == "E_DUPLICATE_ID"  # one namespace
    assert [p.text for p in rig.pushes(b)] == ["hi"] and len(rig.store.mail) == 1 and rig.events("bcast") == []
    assert rig.call(b, "send", id="s1", to=["alice"], text="mine")["dup"] is False  # per sender


def test_a_send_id_is_forgotten_after_sends_keep_seconds_at_the_next_prune(rig):
    a, b = rig.user("alice"), rig.user("bob")
    first = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    rig.clock.advance(30)
    rig.core.prune()
    rig.take()
    assert rig.call(a, "send", id="s1", to=["bob"], text="hi")["dup"] is True  # 30 s old: kept
    rig.clock.advance(31)
    assert rig.call(a, "send", id="s1", to=["bob"], text="hi")["dup"] is True  # expired, not yet pruned
    rig.core.prune()
    rig.take()
    assert ("alice", "s1") not in rig.store.sends
    again = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    assert again["dup"] is False and again["ids"] == {"bob": first["ids"]["bob"] + 1}  # a new message
    assert [p.id for p in rig.pushes(b)] == [1, 2]
    assert rig.store.sends[("alice", "s1")].ts == rig.clock.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_after_a_restart_ids_mail_and_the_sequence_continue(tmp_path, kind):
    store = SqliteStore(tmp_path / "db") if kind == "sqlite" else MemoryStore()
    rig = CoreRig(tmp_path, store=store)
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    sent = rig.call(a, "send", id="s1", to=["bob"], text="before the restart")
    cast = rig.call(a, "broadcast", id="b1", text="hello")
    seq = rig.core.seq
    rig.restart(reopen=(lambda: SqliteStore(tmp_path / "db")) if kind == "sqlite" else None)
    a = rig.connect()
    rig.call(a, "login", user="alice", password=PASSWORD)  # sessions are gone: log in again
    retry = rig.call(a, "send", id="s1", to=["bob"], text="before the restart")
    assert retry["dup"] is True and retry["ids"] == sent["ids"] and retry["ts"] == sent["ts"]
    assert rig.call(a, "broadcast", id="b1", text="hello")["seq"] == cast["seq"]
    assert rig.call(a, "send", id="s1", to=["bob"], text="changed")["code"] == "E_DUPLICATE_ID"
    b = rig.connect()
    rig.call(b, "login", user="bob", password=PASSWORD)
    assert [(p.id, p.text) for p in rig.pushes(b)] == [(1, "before the restart")]
    later = rig.call(a, "broadcast", id="b2", text="after")
    assert later["seq"] == seq + 3  # alice's and bob's login presence, then this
    assert rig.call(a, "send", id="s2", to=["bob"], text="new")["ids"] == {"bob": 2}
    history = rig.call(b, "history", after=0)
    assert [e["seq"] for e in history["events"]] == list(range(1, later["seq"] + 1)) and history["complete"]
    rig.store.close()


def test_send_ids_older_than_sends_keep_seconds_are_not_loaded_at_restart(rig):
    a = rig.user("alice")
    rig.call(a, "broadcast", id="b1", text="old")
    rig.clock.advance(61)
    rig.restart()
    assert rig.core.sends.get("alice", "b1") is None
    a = rig.connect()
    rig.call(a, "login", user="alice", password=PASSWORD)
    assert rig.call(a, "broadcast", id="b1", text="old")["dup"] is False


# -- pruning and history (9.4) ---------------------------------------------------------------------
def test_history_after_a_prune_is_incomplete_for_old_seqs(rig):
    a = rig.user("alice")  # seq 1
    for i in range(10):
        rig.call(a, "broadcast", id=f"b{i}", text=f"t{i}")  # seqs 2..11
    assert rig.call(a, "history", after=0, limit=100)["complete"] is False  # --history caps the limit at 5
    rig.core.prune()
    rig.take()
    old = rig.call(a, "history", after=0)
    assert [e["seq"] for e in old["events"]] == [7, 8, 9, 10, 11]  # the newest 5 are kept
    assert old["seq"] == 11 and old["complete"] is False
    kept = rig.call(a, "history", after=6)
    assert [e["seq"] for e in kept["events"]] == [7, 8, 9, 10, 11] and kept["complete"] is True
    cut = rig.call(a, "history", after=6, limit=2)
    assert [e["seq"] for e in cut["events"]] == [7, 8] and cut["complete"] is False
    assert rig.call(a, "history", after=11) | {"req": 0} == {"req": 0, "status": "ok", "events": [], "seq": 11,
                                                              "complete": True}


def test_history_sees_events_of_the_batch_not_yet_committed(rig):
    a = rig.user("alice")  # seq 1
    rig.take()
    rig.send(a, "broadcast", id="b1", text="one")  # seq 2, not committed yet
    req = rig.send(a, "history", after=0)
    [reply] = [r for r in rig.replies(a) if r["req"] == req]
    assert [e["seq"] for e in reply["events"]] == [1, 2] and reply["complete"] is True


def test_a_send_id_is_recognised_after_its_mail_was_acked_and_the_broker_restarted(tmp_path):
    rig = CoreRig(tmp_path, store=SqliteStore(tmp_path / "db"), **RIG_CONFIG)
    a, b = rig.user("alice"), rig.user("bob")
    first = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    group = rig.call(a, "send", id="g1", to=["bob", "carol", "alice"], text="all")  # carol has no account
    assert rig.call(b, "ack", ids=[p.id for p in rig.pushes(b)])["removed"] == 2
    db = rig.store.db  # one row per message: the send ids live in the first row of each send
    assert db.execute("SELECT count(*) FROM sends").fetchone()[0] == 0
    assert db.execute("SELECT id, acked, reply IS NOT NULL FROM mailbox ORDER BY id").fetchall() == [
        (1, 1, 1), (2, 1, 1), (3, 0, 0)]  # s1 to bob; g1 to bob (acked, with the reply) and alice
    rig.core.prune()  # within the window: the acked rows stay for their send ids
    rig.restart(reopen=lambda: SqliteStore(tmp_path / "db"))
    a = rig.connect()
    rig.call(a, "login", user="alice", password=PASSWORD)
    retry = rig.call(a, "send", id="s1", to=["bob"], text="hi")
    assert retry["dup"] is True and _without(retry, "req", "dup") == _without(first, "req", "dup")
    again = rig.call(a, "send", id="g1", to=["bob", "carol", "alice"], text="all")
    assert again["code"] == "E_UNKNOWN_USER" and _without(again, "req", "dup") == _without(group, "req", "dup")
    rig.clock.advance(61)
    rig.core.prune()
    rig.restart(reopen=lambda: SqliteStore(tmp_path / "db"))
    a = rig.connect()
    rig.call(a, "login", user="alice", password=PASSWORD)
    assert rig.call(a, "send", id="s1", to=["bob"], text="hi")["dup"] is False  # forgotten after the window
    assert rig.store.load(0.0).mail_counts == {"bob": 1, "alice": 1}  # the new one; alice's from g1
    rig.store.close()
