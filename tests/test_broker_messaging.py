"""Integration: who/last/hide/appear/status, private messages, mailboxes, acks, send ids, broadcasts,
catch-up and gap repair, busy/idle (real broker, real DEALER and SUB sockets)."""

from __future__ import annotations

import pytest

from zmq_chat.protocol import messages as m
from tests.harness import Broker, err, ok
from tests.protocol_doc import documented_reply_fields

pytestmark = pytest.mark.timeout(60)


def logged_in(peers, broker, names, count):
    out = []
    for _ in range(count):
        p = peers(broker)
        name = names()
        ok(p.register(name))
        p.login_reply = ok(p.login(name))
        out.append(p)
    return out


def test_who_last_hide_appear_status(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    users = ok(a.call("who"))["users"]
    assert a.user in users and b.user in users
    ok(b.call("hide"))
    assert b.user not in ok(a.call("who"))["users"]
    assert b.user in ok(b.call("who"))["users"]  # self is always listed
    assert b.user not in ok(a.call("last", minutes=5))["users"]
    status = ok(b.call("status"))
    assert {k: v for k, v in status.items() if k != "req"} == {
        "status": "ok", "user": b.user, "busy": False, "busy_text": "", "hidden": True, "since_ts": b.login_reply["since_ts"]}
    ok(b.call("appear"))
    assert b.user in ok(a.call("who"))["users"]
    # last: a user who logged out a moment ago is listed; hidden at logout is not.
    ok(b.call("logout"))
    assert b.user not in ok(a.call("who"))["users"]
    assert b.user in ok(a.call("last", minutes=1))["users"]
    err(a.call("last", minutes=0), "E_BAD_FIELD")
    err(a.call("last", minutes=10081), "E_BAD_FIELD")


def test_private_message_is_delivered_and_leaves_the_mailbox_after_ack(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    reply = ok(a.send(b.user, "héllo ünïcode ✓", cid="uni-1"))
    assert list(reply["ids"]) == [b.user] and reply["dup"] is False and reply["busy"] == []
    msg = b.wait_msgs(1)[0]
    assert msg == m.PrivateMessage(id=reply["ids"][b.user], sender=a.user, to=b.user, ts=reply["ts"],
                                   text="héllo ünïcode ✓", cid="uni-1")
    # Not acknowledged: a new session gets it again.
    b2 = peers(broker)
    ok(b2.login(b.user))
    assert b2.wait_msgs(1)[0].id == msg.id
    assert ok(b2.ack_all())["removed"] == 1
    b3 = peers(broker)
    ok(b3.login(b.user))
    ok(b3.call("ping"))  # a barrier: pushes after the login reply come before this reply
    assert b3.msgs == []


def test_send_to_several_and_to_unknown_users(broker, peers, names):
    a, b, c = logged_in(peers, broker, names, 3)
    both = ok(a.send([b.user, c.user, b.user], "to both"))
    assert sorted(both["ids"]) == sorted([b.user, c.user])  # a name given twice counts once
    assert [(x.id, x.text) for x in b.wait_msgs(1)] == [(both["ids"][b.user], "to both")]
    assert [(x.id, x.text) for x in c.wait_msgs(1)] == [(both["ids"][c.user], "to both")]
    reply = err(a.send([b.user, "ghost999"], "partly"), "E_UNKNOWN_USER")
    assert reply["unknown"] == ["ghost999"] and list(reply["ids"]) == [b.user]
    assert "ghost999" in reply["message"]
    assert b.wait_msgs(2)[1].text == "partly"
    err(a.send("ghost999", "nobody"), "E_UNKNOWN_USER")


def test_message_length_rules(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    err(a.send(b.user, ""), "E_MESSAGE_EMPTY")
    err(a.send(b.user, "   "), "E_MESSAGE_EMPTY")
    err(a.send(b.user, "x" * 1001), "E_MESSAGE_TOO_LONG")
    err(a.broadcast("x" * 1001), "E_MESSAGE_TOO_LONG")
    ok(a.send(b.user, "é" * 1000))  # characters, not bytes


def test_duplicate_send_id_is_stored_and_delivered_once(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    first = ok(a.send(b.user, "once", cid="fixed-id-1"))
    again = ok(a.send(b.user, "once", cid="fixed-id-1"))
    assert (again["dup"], again["ids"], again["ts"]) == (True, first["ids"], first["ts"])
    after = ok(a.send(b.user, "after", cid="fixed-id-2"))
    b.wait_msgs(2)
    ok(b.call("ping"))  # a barrier: a second push of "once" would have come before this reply
    assert [(x.id, x.cid, x.text) for x in b.msgs] == [
        (first["ids"][b.user], "fixed-id-1", "once"), (after["ids"][b.user], "fixed-id-2", "after")]
    bc = ok(a.broadcast("bc once", cid="fixed-b"))
    bc_again = ok(a.broadcast("bc once", cid="fixed-b"))
    assert (bc_again["dup"], bc_again["seq"], bc_again["ts"]) == (True, bc["seq"], bc["ts"])
    ok(a.broadcast("bc after", cid="fixed-b2"))
    b.wait_event(lambda e: e.text == "bc after")  # the PUB is ordered: a second "bc once" came before
    assert [(e.seq, e.cid) for e in b.events if e.text == "bc once"] == [(bc["seq"], "fixed-b")]


def test_offline_delivery_in_order_across_a_restart(tmp_path, peers, names):
    broker = Broker(tmp_path)
    try:
        a, b = logged_in(peers, broker, names, 2)
        ok(b.call("logout"))
        sent = [ok(a.send(b.user, f"offline {i}", cid=f"off-{i}")) for i in range(5)]
        broker.restart()
        a2, b2 = peers(broker), peers(broker)
        ok(b2.login(b.user))
        msgs = b2.wait_msgs(5)
        assert msgs == [m.PrivateMessage(id=r["ids"][b.user], sender=a.user, to=b.user, ts=r["ts"], text=f"offline {i}",
                                         cid=f"off-{i}") for i, r in enumerate(sent)]
        # Mail ids keep increasing across the restart.
        ok(a2.login(a.user))
        later = ok(a2.send(b.user, "after the restart"))
        assert later["ids"][b.user] > sent[-1]["ids"][b.user]
        assert [(x.id, x.text) for x in b2.wait_msgs(6)[5:]] == [(later["ids"][b.user], "after the restart")]
    finally:
        broker.stop()


def test_acknowledged_message_survives_kill_9(tmp_path, peers, names):
    broker = Broker(tmp_path)
    try:
        a, b = logged_in(peers, broker, names, 2)
        ok(b.call("logout"))
        acked = [ok(a.send(b.user, f"durable {i}"))["ids"][b.user] for i in range(20)]
        ok(a.broadcast("durable broadcast"))
        broker.restart(kill=True)
        b2 = peers(broker)
        reply = ok(b2.login(b.user))
        assert [x.id for x in b2.wait_msgs(20)] == acked
        history = ok(b2.call("history", after=reply["since"]))
        assert [(e.kind, e.user, e.event, e.text) for e in history_events(history)] == [
            ("presence", b.user, "logout", ""), ("bcast", a.user, "", "durable broadcast"), ("presence", b.user, "login", "")]
    finally:
        broker.stop()


def history_events(reply):
    from zmq_chat.protocol.wire import decode_events

    return decode_events(reply["events"])


def test_broadcast_reaches_subscribers_with_sequence_numbers(broker, peers, names):
    a, b, c = logged_in(peers, broker, names, 3)
    reply = ok(a.broadcast("hello everyone"))
    for p in (b, c):
        event = p.wait_event(lambda e: e.kind == "bcast" and e.text == "hello everyone", timeout=5)
        assert event.seq == reply["seq"] and event.user == a.user
    second = ok(a.broadcast("again"))
    assert second["seq"] > reply["seq"]
    assert c.wait_event(lambda e: e.text == "again").seq == second["seq"]


def test_catch_up_of_missed_broadcasts_and_gap_repair(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    ok(b.call("logout"))
    texts = [f"missed {i}" for i in range(3)]
    for t in texts:
        ok(a.broadcast(t))
    b2 = peers(broker)
    login = ok(b2.login(b.user))
    history = ok(b2.call("history", after=login["since"]))
    got = [e.text for e in history_events(history) if e.kind == "bcast"]
    assert got == texts and history["complete"] is True
    # Gap repair: the same request with the last seq seen returns what came after it.
    seqs = [e.seq for e in history_events(history)]
    repair = ok(b2.call("history", after=seqs[0]))
    assert [e.seq for e in history_events(repair)][: len(seqs) - 1] == seqs[1:]
    assert ok(b2.call("history", after=10**9))["events"] == []


def test_presence_events_for_login_and_logout(broker, peers, names):
    watcher, = logged_in(peers, broker, names, 1)
    p = peers(broker)
    name = names()
    ok(p.register(name))
    ok(p.login(name))
    watcher.wait_event(lambda e: e.kind == "presence" and e.user == name and e.event == "login")
    ok(p.call("logout"))
    watcher.wait_event(lambda e: e.kind == "presence" and e.user == name and e.event == "logout")
    hidden = peers(broker)
    ok(hidden.login(name))
    ok(hidden.call("hide"))
    ok(hidden.call("logout"))
    ok(watcher.broadcast("barrier"))
    watcher.wait_event(lambda e: e.text == "barrier")  # the PUB is ordered: a logout event came before
    assert [e.event for e in watcher.events if e.user == name] == ["login", "logout", "login"]  # not the hidden logout


def test_busy_holds_messages_sends_auto_reply_once_and_idle_delivers(broker, peers, names):
    a, b, c = logged_in(peers, broker, names, 3)
    ok(b.call("busy", text="in a meeting"))
    status = ok(b.call("status"))
    assert status["busy"] is True and status["busy_text"] == "in a meeting"
    first = ok(a.send(b.user, "one"))
    assert first["busy"] == [{"user": b.user, "text": "in a meeting"}]
    assert ok(a.send(b.user, "two"))["busy"] == []  # once per busy period per sender
    assert ok(c.send(b.user, "three"))["busy"] == [{"user": b.user, "text": "in a meeting"}]
    ok(b.call("ping"))  # a barrier: a push sent before this reply would be here
    assert b.msgs == []
    assert ok(b.call("idle"))["held"] == 3
    assert [x.text for x in b.wait_msgs(3)] == ["one", "two", "three"]
    ok(b.call("busy"))
    assert ok(a.send(b.user, "four"))["busy"] == [{"user": b.user, "text": ""}]  # a new busy period


def test_send_id_reused_for_another_message_is_refused(broker, peers, names):
    a, b = logged_in(peers, broker, names, 2)
    ok(a.send(b.user, "first", cid="reuse-1"))
    err(a.send(b.user, "different text", cid="reuse-1"), "E_DUPLICATE_ID")
    reply = err(a.send("ghost777", "nobody there"), "E_UNKNOWN_USER")
    assert reply["unknown"] == ["ghost777"] and reply["ids"] == {}


def test_history_complete_flag(broker, peers, names):
    a, = logged_in(peers, broker, names, 1)
    for i in range(3):
        ok(a.broadcast(f"h{i}"))
    seq = ok(a.call("ping")) and ok(a.call("history", after=0, limit=1))["seq"]
    assert ok(a.call("history", after=seq - 2))["complete"] is True
    assert ok(a.call("history", after=seq - 3, limit=1))["complete"] is False
    assert ok(a.call("history", after=seq))["complete"] is True


def test_ok_replies_carry_exactly_the_fields_docs_protocol_md_lists(broker, peers, names):
    doc = documented_reply_fields()
    assert len(doc) == 16 and doc["hide"] == doc["appear"] == set()
    p, name = peers(broker), names()
    replies = {"hello": p.call("hello"), "register": p.register(name), "login": p.login(name)}
    replies["who"] = p.call("who")
    replies["last"] = p.call("last", minutes=5)
    replies["broadcast"] = p.broadcast("to all")
    replies["send"] = p.send(name, "to myself")
    replies["busy"] = p.call("busy", text="away")
    replies["idle"] = p.call("idle")
    replies["hide"] = p.call("hide")
    replies["appear"] = p.call("appear")
    replies["status"] = p.call("status")
    replies["history"] = p.call("history", after=0, limit=1)
    replies["ack"] = p.call("ack", ids=[x.id for x in p.wait_msgs(1)])
    replies["ping"] = p.call("ping")
    replies["logout"] = p.call("logout")
    assert sorted(replies) == sorted(doc)  # one of each
    for kind, reply in replies.items():
        assert reply["status"] == "ok", (kind, reply)
        assert set(reply) - {"req", "status"} == doc[kind], kind
