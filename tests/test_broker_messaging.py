"""Integration: who/last/hide/appear/status, private messages, mailboxes, acks, send ids, broadcasts,
catch-up and gap repair, busy/idle (real broker, real DEALER and SUB sockets)."""

from __future__ import annotations

import pytest

from tests.harness import Broker, err, ok

pytestmark = pytest.mark.timeout(60)


def logged_in(peers, broker, names, count):
    out = []
    for _ in range(count):
        p = peers(broker)
        name = names()
        ok(p.register(name))
        ok(p.login(name))
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
    assert status["hidden"] is True and status["busy"] is False and status["since_ts"] > 0
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
    reply = ok(a.send(b.user, "héllo ünïcode ✓"))
    assert b.user in reply["ids"] and reply["dup"] is False
    msg = b.wait_msgs(1)[0]
    assert (msg.sender, msg.to, msg.text) == (a.user, b.user, "héllo ünïcode ✓")
    assert msg.id == reply["ids"][b.user] and msg.ts == reply["ts"]
    # Not acknowledged: a new session gets it again.
    b2 = peers(broker)
    ok(b2.login(b.user))
    assert b2.wait_msgs(1)[0].id == msg.id
    assert ok(b2.ack_all())["removed"] == 1
    b3 = peers(broker)
    ok(b3.login(b.user))
    ok(b3.call("ping"))
    b3.pump(0.2)
    assert b3.msgs == []


def test_send_to_several_and_to_unknown_users(broker, peers, names):
    a, b, c = logged_in(peers, broker, names, 3)
    ok(a.send([b.user, c.user, b.user], "to both"))
    assert [x.text for x in b.wait_msgs(1)] == ["to both"]
    assert [x.text for x in c.wait_msgs(1)] == ["to both"]
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
    assert again["dup"] is True and again["ids"] == first["ids"]
    ok(a.send(b.user, "after"))
    msgs = b.wait_msgs(2)
    b.pump(0.2)
    assert [x.text for x in b.msgs] == ["once", "after"]
    ok(a.broadcast("bc once", cid="fixed-b"))
    assert ok(a.broadcast("bc once", cid="fixed-b"))["dup"] is True
    assert msgs


def test_offline_delivery_in_order_across_a_restart(tmp_path, peers, names):
    broker = Broker(tmp_path)
    try:
        a, b = logged_in(peers, broker, names, 2)
        ok(b.call("logout"))
        for i in range(5):
            ok(a.send(b.user, f"offline {i}"))
        broker.restart()
        a2, b2 = peers(broker), peers(broker)
        ok(b2.login(b.user))
        msgs = b2.wait_msgs(5)
        assert [x.text for x in msgs] == [f"offline {i}" for i in range(5)]
        assert all(x.sender == a.user for x in msgs)
        assert msgs[0].ts <= msgs[-1].ts
        assert a2 is not None
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
        assert "durable broadcast" in [e.text for e in history_events(history)]
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
    # send all / send_all are the client's spellings of the same request.
    second = ok(a.broadcast("again"))
    assert second["seq"] > reply["seq"]


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
    ok(watcher.call("ping"))
    watcher.pump(0.2)
    logouts = [e for e in watcher.events if e.user == name and e.event == "logout"]
    assert len(logouts) == 1  # the hidden logout was not published


def test_busy_holds_messages_sends_auto_reply_once_and_idle_delivers(broker, peers, names):
    a, b, c = logged_in(peers, broker, names, 3)
    ok(b.call("busy", text="in a meeting"))
    status = ok(b.call("status"))
    assert status["busy"] is True and status["busy_text"] == "in a meeting"
    first = ok(a.send(b.user, "one"))
    assert first["busy"] == [{"user": b.user, "text": "in a meeting"}]
    assert ok(a.send(b.user, "two"))["busy"] == []  # once per busy period per sender
    assert len(ok(c.send(b.user, "three"))["busy"]) == 1
    ok(b.call("ping"))
    b.pump(0.2)
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
