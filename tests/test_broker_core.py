"""Unit tests of the broker core in-process (tests/core_harness.py): fake clock, the in-memory store,
no sockets. Each test pins one rule of docs/protocol.md or docs/security.md."""

from __future__ import annotations

import json

import pytest

from zmq_chat.broker.connections import PUB, ROUTER
from zmq_chat.broker.zap import DOMAIN_KEY, DOMAIN_PUB, DOMAIN_ROUTER
from tests.core_harness import PASSWORD, CoreRig

pytestmark = pytest.mark.timeout(30)



def test_register_of_a_name_still_hashing_is_overloaded_not_taken(rig):
    first, second = rig.connect(), rig.connect()
    rig.send(first, "register", user="carol", password=PASSWORD)
    pending = rig.core.drain().jobs  # the hash is not done yet: nothing is committed
    assert [j.user for j in pending] == ["carol"]
    assert rig.call(second, "register", user="carol", password=PASSWORD)["code"] == "E_OVERLOADED"
    assert rig.call(first, "register", user="carol", password=PASSWORD)["code"] == "E_OVERLOADED"
    rig.run_jobs(pending)
    assert rig.call(second, "register", user="carol", password=PASSWORD)["code"] == "E_USER_EXISTS"


def test_a_request_that_raises_is_undone_and_the_batch_keeps_the_others(rig, monkeypatch):
    a = rig.user("alice")
    rig.user("bob")
    assert rig.call(a, "send", id="m1", to=["bob"], text="first")["status"] == "ok"
    real = rig.core._deliver_new
    monkeypatch.setattr(rig.core, "_deliver_new", lambda *args: (_ for _ in ()).throw(RuntimeError("bug")))
    bad = rig.call(a, "send", id="m2", to=["bob"], text="second")
    assert bad["code"] == "E_INTERNAL"
    monkeypatch.setattr(rig.core, "_deliver_new", real)
    again = rig.call(a, "send", id="m2", to=["bob"], text="second")  # the claim of m2 was undone
    assert again["status"] == "ok" and again["dup"] is False
    assert [msg.text for msg in rig.store.mail_after("bob", 0, 10)] == ["first", "second"]
    assert rig.core.mail_counts["bob"] == 2 and rig.core.last_mail_id == 3  # the failed one's id stays used


def test_a_dropped_push_frees_its_window_slot_and_is_pushed_again(tmp_path):
    rig = CoreRig(tmp_path, mail_window=2)
    a, b = rig.user("alice"), rig.user("bob")
    for i in range(3):
        rig.call(a, "send", id=f"m{i}", to=["bob"], text=f"t{i}")
    assert [p.id for p in rig.pushes(b)] == [1, 2]  # the window is full
    for mid in (1, 2):  # the loop got EAGAIN for both
        rig.core.on_push_dropped(b[0], mid)
    rig.call(b, "ack", ids=[99])  # any ack pumps
    assert [p.id for p in rig.pushes(b)] == [1, 2, 1, 2]
    rig.call(b, "ack", ids=[1, 2])
    assert [p.id for p in rig.pushes(b)][-1] == 3


def test_a_user_hidden_now_is_left_out_of_last(rig):
    a, watcher = rig.user("alice"), rig.user("walt")
    assert rig.call(a, "logout")["status"] == "ok"  # ended visible a moment ago
    assert "alice" in rig.call(watcher, "last", minutes=5)["users"]
    assert rig.call(a, "login", user="alice", password=PASSWORD)["status"] == "ok"
    rig.call(a, "hide")
    assert "alice" not in rig.call(watcher, "last", minutes=5)["users"]
    assert "alice" in rig.call(a, "last", minutes=5)["users"]  # the caller always sees itself


def test_a_retried_login_gets_the_first_reply_and_logout_is_idempotent(rig):
    a = rig.connect()
    rig.call(a, "register", user="alice", password=PASSWORD)
    first = rig.call(a, "login", user="alice", password=PASSWORD)
    rig.clock.advance(5)
    again = rig.call(a, "login", user="alice", password=PASSWORD)
    same = [k for k in first if k not in ("req", "dup")]
    assert again["dup"] is True and {k: again[k] for k in same} == {k: first[k] for k in same}
    assert rig.call(a, "logout")["session"] is True
    assert rig.call(a, "logout")["session"] is False  # a retried logout is answered ok too


def test_a_routing_id_with_another_key_is_not_the_session(rig):
    a = rig.user("alice")
    rig.user("bob")
    thief = (a[0], a[1] + 1000, "thief" + "k" * 35)
    assert rig.call(thief, "who")["code"] == "E_NOT_LOGGED_IN"
    assert rig.call(thief, "ack", ids=[1])["code"] == "E_NOT_LOGGED_IN"
    assert rig.call(thief, "send", id="x", to=["bob"], text="as alice")["code"] == "E_NOT_LOGGED_IN"
    assert rig.call(a, "status")["user"] == "alice"  # the owner still has it


def test_a_detached_session_holds_pushes_until_its_key_comes_back(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(b, "send", id="m1", to=["alice"], text="before")
    assert [p.text for p in rig.pushes(a)] == ["before"]
    rig.core.on_disconnected(a[1], ROUTER)  # alice's TCP connection closed; the push may be lost
    rig.call(b, "send", id="m2", to=["alice"], text="while away")
    assert [p.text for p in rig.pushes(a)] == ["before"]  # nothing goes to whoever takes the id
    back = (a[0], rig.connect()[1], a[2])  # same routing id and key, new connection
    rig.call(back, "ping")
    assert [p.text for p in rig.pushes(a)] == ["before", "before", "while away"]


def test_zap_admits_any_key_on_the_router_and_only_live_keys_on_the_pub(tmp_path):
    rig = CoreRig(tmp_path, max_conns_per_ip=2)
    a = rig.user("alice", ip="10.0.0.9")
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.5", "CURVE", "k" * 40) == (200, "OK", "k" * 40)
    assert rig.core.authorize(DOMAIN_PUB, "10.0.0.5", "CURVE", "k" * 40)[0] == 400
    assert rig.core.authorize(DOMAIN_PUB, "10.0.0.9", "CURVE", a[2])[0] == 200
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.5", "NULL", "")[0] == 400  # CURVE only
    assert rig.core.authorize(DOMAIN_KEY, "10.0.0.5", "NULL", "")[0] == 200
    rig.connect("10.0.0.7"), rig.connect("10.0.0.7"), rig.connect("10.0.0.7")
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.7", "CURVE", "k" * 40)[0] == 400  # over the per-IP cap
    rig.call(a, "logout")
    assert rig.core.authorize(DOMAIN_PUB, "10.0.0.9", "CURVE", a[2])[0] == 400


def test_subscriptions_get_a_welcome_and_bad_ones_cut_the_connection(rig):
    a = rig.user("alice")
    sub_fd = rig.connect(kind=PUB)[1]
    topic = b"welcome." + b"ab" * 16
    for t in (b"bcast", b"presence", b"hb", topic):
        rig.core.on_subscribe(sub_fd, a[2], b"\x01" + t, 40)
    out = rig.take()
    assert out.cuts == [] and [(t, json.loads(b)["seq"]) for t, b in out.pub] == [(topic, rig.core.seq)]
    rig.core.on_subscribe(sub_fd, a[2], b"\x01", 40)  # everything: refused
    assert [c.fd for c in rig.take().cuts] == [sub_fd]
    stranger = rig.connect(kind=PUB)[1]
    rig.core.on_subscribe(stranger, "nobody" + "k" * 34, b"\x01bcast", 40)
    assert [c.fd for c in rig.take().cuts] == [stranger]


def test_session_end_cuts_its_sub_connections(rig):
    a = rig.user("alice")
    sub_fd = rig.connect(kind=PUB)[1]
    rig.core.on_subscribe(sub_fd, a[2], b"\x01bcast", 40)
    rig.take()
    rig.call(a, "logout")
    assert sub_fd in [c.fd for c in rig.out.cuts]


def test_silent_connections_without_a_session_are_cut(tmp_path):
    rig = CoreRig(tmp_path, login_timeout=10.0)
    idle = rig.connect()
    rig.user("alice")
    rig.clock.advance(5)
    rig.core.tick()
    assert rig.take().cuts == []
    rig.clock.advance(6)
    rig.core.tick()
    assert [c.fd for c in rig.take().cuts] == [idle[1]]  # a logged-in connection stays


def test_a_connection_buffering_without_delivering_is_cut(tmp_path):
    rig = CoreRig(tmp_path, pending_limit=1000)
    quiet, flood = rig.connect(), rig.connect()
    rig.core.on_scan({quiet[1]: 500, flood[1]: 500})
    assert rig.take().cuts == []
    rig.call(quiet, "ping")  # quiet delivered a message: its reference moves
    rig.core.on_scan({quiet[1]: 5000, flood[1]: 1600})
    assert [c.fd for c in rig.take().cuts] == [flood[1]]


def test_history_pages_at_the_reply_byte_limit_and_waits_for_a_slow_reader(tmp_path):
    rig = CoreRig(tmp_path, reply_bytes=20_000)
    a = rig.user("alice")
    for i in range(60):
        rig.call(a, "broadcast", id=f"b{i}", text="x" * 900)
    page = rig.call(a, "history", after=0)
    assert 10 <= len(page["events"]) < 60 and page["complete"] is False
    assert len(json.dumps(page["events"])) <= 20_000 + 1000
    rig.behind.add(a[1])  # the peer has not read what it was sent
    refused = rig.call(a, "history", after=0)
    assert refused["code"] == "E_OVERLOADED" and refused["retry_after"] > 0


def test_sequence_numbers_stop_at_2_to_the_53(rig):
    a = rig.user("alice")
    rig.core.seq = 2**53
    assert rig.call(a, "broadcast", id="late", text="hi")["code"] == "E_INTERNAL"
    rig.core.last_mail_id = 2**53
    assert rig.call(a, "send", id="late2", to=["alice"], text="hi")["code"] == "E_INTERNAL"


def test_a_late_close_of_another_socket_does_not_drop_a_new_connection_on_the_same_fd(rig):
    key_fd = rig.connect(kind="key")[1]
    rig.core.on_accepted(key_fd, ROUTER, "10.0.0.8", 50000)  # the key connection's close is still on its way
    rig.core.on_disconnected(key_fd, "key")  # ... and arrives now: about a connection already gone
    conn = rig.core.conns.get(key_fd)
    assert conn is not None and conn.kind == ROUTER and rig.core.conns.count("10.0.0.8") == 1


def test_a_detached_session_forgets_its_fd_so_its_end_cuts_no_one_else(tmp_path):
    rig = CoreRig(tmp_path, heartbeat_timeout=5.0)
    a = rig.user("alice")
    rig.core.on_disconnected(a[1], ROUTER)
    rig.core.on_accepted(a[1], ROUTER, "10.0.0.9", 40404)  # an innocent connection gets the fd number
    rig.clock.advance(6)
    rig.core.tick()  # alice's session times out
    rig.clock.advance(3)
    rig.core.tick()
    assert a[1] not in [c.fd for c in rig.take().cuts] and rig.core.conns.get(a[1]).ip == "10.0.0.9"


def test_a_login_finishing_after_its_connection_closed_pushes_nothing(rig):
    b = rig.user("bob")
    rig.call(b, "register", user="alice", password=PASSWORD)
    rig.call(b, "send", id="m1", to=["alice"], text="for alice")
    a = rig.connect()
    rig.send(a, "login", user="alice", password=PASSWORD)
    jobs = rig.core.drain().jobs
    rig.core.on_disconnected(a[1], ROUTER)  # gone while its password was hashing
    rig.run_jobs(jobs)
    assert rig.pushes(a) == []  # whoever holds the routing id now gets nothing
    rig.call((a[0], rig.connect()[1], a[2]), "ping")  # the key comes back on a new connection
    assert [p.text for p in rig.pushes(a)] == ["for alice"]


def test_a_send_to_a_malformed_name_stores_nothing_and_busy_texts_are_shortened(rig):
    a = rig.user("alice")
    bad = rig.call(a, "send", id="x1", to=["bob", "\x01" * 60], text="hi")
    assert bad["code"] == "E_BAD_USERNAME" and rig.core.sends.get("alice", "x1") is None
    assert ("alice", "x1") not in rig.store.sends
    busy = [rig.user(f"busy{i}") for i in range(20)]
    for c in busy:
        rig.call(c, "busy", text="z" * 1000)
    reply = rig.call(a, "send", id="x2", to=[f"busy{i}" for i in range(20)], text="hi")
    assert len(reply["busy"]) == 20 and sum(len(e["text"]) for e in reply["busy"]) <= 2000


def test_acks_without_a_session_and_big_acks_are_flood_controlled(tmp_path):
    rig = CoreRig(tmp_path, rate_limit=1.0, rate_burst=5)
    stranger = rig.connect()
    codes = [rig.call(stranger, "ack", ids=[1]).get("code") for _ in range(7)]
    assert codes[:5] == ["E_NOT_LOGGED_IN"] * 5 and codes[-1] == "E_RATE_LIMITED"
    a = rig.user("alice")
    rig.clock.advance(100)
    assert rig.call(a, "ack", ids=list(range(1, 101)))["status"] == "ok"  # up to 100 ids: free
    assert rig.call(a, "ack", ids=list(range(1, 1001)))["code"] == "E_RATE_LIMITED"  # 10 tokens


def test_logins_waiting_for_one_account_are_capped_but_its_known_address_gets_in(tmp_path):
    rig = CoreRig(tmp_path, hash_workers=1, max_failed_logins_per_ip=1000)
    owner = rig.connect("10.9.9.9")
    rig.call(owner, "register", user="victim", password=PASSWORD)
    rig.call(owner, "login", user="victim", password=PASSWORD)
    rig.call(owner, "logout")
    codes = []
    for i in range(8):
        c = rig.connect(f"10.1.0.{i}")
        rig.send(c, "login", user="victim", password="guess")
        codes += [r.get("code") for r in rig.replies(c)]
    assert codes.count("E_OVERLOADED") >= 3  # 1 running + 4 waiting, the rest refused
    rig.send(owner, "login", user="victim", password=PASSWORD)
    assert "E_OVERLOADED" not in [r.get("code") for r in rig.replies(owner)]


def test_earlier_mail_in_the_batch_survives_a_later_request_that_is_rolled_back(rig, monkeypatch):
    a = rig.user("alice")
    rig.call(rig.user("away"), "logout")
    rig.take()
    rig.send(a, "send", id="c1", to=["away"], text="kept")  # an earlier request of the same wake-up
    monkeypatch.setattr(rig.core, "_names_reply", lambda *args: (_ for _ in ()).throw(RuntimeError("bug")))
    rig.send(a, "who")  # this one raises: only its own writes go
    rig.send(a, "send", id="c2", to=["away"], text="also kept")
    out = rig.take()
    assert [x.text for x in out.writes.mail] == ["kept", "also kept"]
    assert [x.text for x in rig.store.mail_after("away", 0, 10)] == ["kept", "also kept"]


def test_the_core_and_protocol_import_no_zmq_no_sqlite_and_no_pynacl():
    """The broker core is pure (state changes only; the store behind an interface): importing it,
    the in-memory store and protocol/ pulls in neither sockets, SQLite nor libsodium."""
    import subprocess
    import sys

    code = ("import sys, zmq_chat.broker.core, zmq_chat.broker.memstore, zmq_chat.protocol.replies;"
            "print(sorted(m for m in ('zmq', 'sqlite3', 'nacl') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == "[]", run.stderr


def test_an_ack_that_fails_after_deleting_restores_the_mail_count(rig, monkeypatch):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(a, "send", id="m1", to=["bob"], text="one")
    assert rig.core.mail_counts["bob"] == 1
    monkeypatch.setattr(rig.core, "_pump", lambda *args: (_ for _ in ()).throw(RuntimeError("bug")))
    assert rig.call(b, "ack", ids=[1])["code"] == "E_INTERNAL"
    assert rig.core.mail_counts["bob"] == 1 and [x.id for x in rig.store.mail_after("bob", 0, 10)] == [1]


def test_a_write_batch_indexes_mail_and_acks_per_recipient_across_a_rollback():
    from zmq_chat.broker.storage import WriteBatch
    from zmq_chat.protocol.messages import PrivateMessage

    batch = WriteBatch()
    batch.mail += [PrivateMessage(1, "a", "bob", 1.0, "one"), PrivateMessage(2, "a", "carol", 1.0, "two")]
    batch.acks.append(("bob", [1]))
    assert batch.pending_mail("bob", 0) == [] and [x.id for x in batch.pending_mail("carol", 0)] == [2]
    mark = batch.mark()
    batch.mail.append(PrivateMessage(3, "a", "bob", 1.0, "three"))
    batch.acks.append(("carol", [2]))
    assert [x.id for x in batch.pending_mail("bob", 0)] == [3] and batch.acked("carol") == {2}
    batch.rollback(mark)
    batch.mail.append(PrivateMessage(4, "a", "bob", 1.0, "four"))
    batch.acks.append(("dave", [9]))  # the lists are as long as before the rollback again
    assert [x.id for x in batch.pending_mail("bob", 0)] == [4]
    assert batch.acked("carol") == set() and [x.id for x in batch.pending_mail("carol", 1)] == [2]


def test_a_session_back_on_a_new_connection_gets_its_mail_even_if_its_first_request_is_refused(rig):
    a, b = rig.user("alice"), rig.user("bob")
    for i in range(3):
        rig.call(a, "send", id=f"c{i}", to=["bob"], text=f"m{i}")
    rid, fd, key = b
    rig.core.on_disconnected(fd, ROUTER)  # bob's connection closes: his session is detached
    back = (rid, rig.connect()[1], key)  # the same routing id and key on a new connection
    rig.out.router.clear()
    assert rig.call(back, "send", id="zz", to=["alice"], text="x" * 5000)["code"] == "E_MESSAGE_TOO_LONG"
    assert [(p.id, p.text) for p in rig.pushes(back)] == [(1, "m0"), (2, "m1"), (3, "m2")]
    assert rig.call(back, "idle")["held"] == 0
