"""Every request kind through the core in-process (tests/core_harness.py: fake clock, MemoryStore),
with the exact fields of its ok reply (docs/protocol.md 5 and 6.1): the set of keys is pinned and
each reply also decodes to its typed Struct (protocol/replies.py)."""

from __future__ import annotations

import json

import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.replies import REPLY_TYPES, decode_reply
from tests.core_harness import PASSWORD

pytestmark = pytest.mark.timeout(30)



def ok(reply: dict, word: str, *fields: str) -> dict:
    """Check that `reply` is the ok reply to a `word` request with exactly `fields` besides req and
    status, and that it decodes to that request's reply Struct. Returns it."""
    assert reply["status"] == "ok", reply
    assert set(reply) == {"req", "status", *fields}
    typed = decode_reply(word.encode(), json.dumps(reply).encode())
    assert type(typed) is REPLY_TYPES[word.encode()]
    return reply


def test_hello(rig):
    [reply] = rig.raw(rig.connect(), [b"hello", b'{"req": 7, "version": 1, "client": "test/1"}'])
    ok(reply, "hello", "version", "broker", "max_message_chars", "min_password_chars", "curve")
    assert reply == {"req": 7, "status": "ok", "version": 1, "broker": "chat-broker",
                     "max_message_chars": 1000, "min_password_chars": 8, "curve": True}
    assert rig.call(rig.connect(), "hello")["status"] == "ok"  # `client` is optional


def test_register_creates_the_account_without_a_session(rig):
    c = rig.connect()
    reply = ok(rig.call(c, "register", user="alice", password=PASSWORD), "register", "user", "dup")
    assert (reply["user"], reply["dup"]) == ("alice", False)
    assert rig.store.users["alice"].hash.startswith("$argon2id$") and PASSWORD not in rig.store.users["alice"].hash
    assert rig.call(c, "who")["code"] == "E_NOT_LOGGED_IN"  # registering does not log in
    assert rig.call(c, "register", user="alice", password=PASSWORD)["dup"] is True  # a retry, same key


def test_login_reply_fields_and_presence_after_the_reply(rig):
    bob = rig.user("bob")  # presence seq 1
    rig.call(bob, "register", user="alice", password=PASSWORD)  # registered at seq 1
    rig.call(bob, "broadcast", id="b1", text="before alice")  # seq 2
    rig.clock.advance(3)
    a = rig.connect()
    reply = ok(rig.call(a, "login", user="alice", password=PASSWORD), "login",
               "user", "pub_port", "seq", "since", "since_ts", "heartbeat_interval", "heartbeat_timeout",
               "idle_timeout", "max_message_chars", "pub_heartbeat", "epoch", "dup")
    assert reply["epoch"] == rig.store.load(0).epoch != ""  # the log's id (docs 9.4)
    assert reply | {"req": 0, "epoch": ""} == {
        "req": 0, "status": "ok", "user": "alice", "pub_port": 4120, "seq": 2, "since": 1,
        "since_ts": rig.clock.now, "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0,
        "idle_timeout": 1800.0, "max_message_chars": 1000, "pub_heartbeat": 2.0, "epoch": "", "dup": False}
    assert rig.events("presence")[-1] == m.Event(3, rig.clock.now, "presence", "alice", event="login")
    assert rig.core.seq == 3


def test_logout_ends_the_session_and_publishes_presence(rig):
    a = rig.user("alice")
    reply = ok(rig.call(a, "logout"), "logout", "session")
    assert reply["session"] is True
    assert rig.events("presence")[-1].user == "alice" and rig.events("presence")[-1].event == "logout"
    assert rig.call(a, "who")["code"] == "E_NOT_LOGGED_IN"
    assert ok(rig.call(rig.connect(), "logout"), "logout", "session")["session"] is False


def test_who_lists_visible_users_and_the_caller_sorted(rig):
    b, a, c = rig.user("bob"), rig.user("alice"), rig.user("carol")
    rig.call(c, "hide")
    reply = ok(rig.call(a, "who"), "who", "users", "busy", "truncated")
    assert reply["users"] == ["alice", "bob"] and reply["truncated"] is False
    assert rig.call(c, "who")["users"] == ["alice", "bob", "carol"]  # the hidden caller sees itself
    rig.call(b, "logout")
    assert rig.call(a, "who")["users"] == ["alice"]


def test_last_reply_fields(rig):
    a = rig.user("alice")
    reply = ok(rig.call(a, "last", minutes=60), "last", "users", "busy", "truncated")
    assert reply["users"] == ["alice"] and reply["truncated"] is False


def test_broadcast_is_published_with_the_replys_seq(rig):
    a = rig.user("alice")
    rig.clock.advance(1.5)
    reply = ok(rig.call(a, "broadcast", id="b1", text="hello all"), "broadcast", "seq", "ts", "dup")
    assert reply | {"req": 0} == {"req": 0, "status": "ok", "seq": 2, "ts": rig.clock.now, "dup": False}
    assert rig.events("bcast") == [m.Event(2, rig.clock.now, "bcast", "alice", text="hello all", cid="b1")]
    assert [seq for seq, _ in rig.store.event_bodies_after(0, 10)] == [1, 2]


def test_send_stores_pushes_and_counts_duplicate_names_once(rig):
    a, b = rig.user("alice"), rig.user("bob")
    reply = ok(rig.call(a, "send", id="s1", to=["bob", "alice", "bob"], text="hi"), "send", "ids", "ts", "busy", "dup")
    assert reply | {"req": 0} == {"req": 0, "status": "ok", "ids": {"bob": 1, "alice": 2}, "ts": rig.clock.now,
                                  "busy": [], "dup": False}
    assert rig.pushes(b) == [m.PrivateMessage(1, "alice", "bob", rig.clock.now, "hi", "s1", ["bob", "alice"])]
    assert [p.id for p in rig.pushes(a)] == [2]  # sending to oneself is allowed
    assert rig.store.mail_by_ids("bob", [1]) == rig.pushes(b)  # stored until acked
    assert rig.events("bcast") == []


def test_busy_holds_mail_and_lists_the_auto_reply_once_per_sender(rig):
    a, b = rig.user("alice"), rig.user("bob")
    assert ok(rig.call(b, "busy", text="in a meeting"), "busy", "text")["text"] == "in a meeting"
    first = rig.call(a, "send", id="s1", to=["bob"], text="one")
    assert first["busy"] == [{"user": "bob", "text": "in a meeting"}]
    assert rig.call(a, "send", id="s2", to=["bob"], text="two")["busy"] == []  # once per busy period
    assert rig.pushes(b) == []
    assert rig.call(b, "busy", text="lunch")["text"] == "lunch"  # busy again replaces the text
    status = rig.call(b, "status")
    assert (status["busy"], status["busy_text"]) == (True, "lunch")


def test_idle_reply_comes_before_the_held_pushes(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(b, "busy")
    rig.call(a, "send", id="s1", to=["bob"], text="one")
    rig.call(a, "send", id="s2", to=["bob"], text="two")
    rig.take()
    req = rig.send(b, "idle")
    out = rig.take()
    mine = [(k, json.loads(body)) for rid, k, body, _ in out.router if rid == b[0]]
    assert [k for k, _ in mine] == [b"reply", b"msg", b"msg"]
    assert mine[0][1]["req"] == req
    ok(mine[0][1], "idle", "held")
    assert mine[0][1]["held"] == 2 and [body["id"] for _, body in mine[1:]] == [1, 2]


def test_hide_and_appear_publish_nothing_and_status_reports_them(rig):
    a, b = rig.user("alice"), rig.user("bob")
    before = len(rig.out.pub)
    ok(rig.call(a, "hide"), "hide")
    assert rig.call(b, "who")["users"] == ["bob"]
    status = ok(rig.call(a, "status"), "status", "user", "busy", "busy_text", "hidden", "since_ts")
    assert status | {"req": 0, "since_ts": 0} == {"req": 0, "status": "ok", "user": "alice", "busy": False,
                                                  "busy_text": "", "hidden": True, "since_ts": 0}
    ok(rig.call(a, "appear"), "appear")
    assert rig.call(b, "who")["users"] == ["alice", "bob"] and rig.call(a, "status")["hidden"] is False
    assert len(rig.out.pub) == before


def test_status_since_ts_is_the_session_start(rig):
    a = rig.connect()
    rig.call(a, "register", user="alice", password=PASSWORD)
    rig.clock.advance(7)
    started = rig.clock.now
    rig.call(a, "login", user="alice", password=PASSWORD)
    rig.clock.advance(20)
    assert rig.call(a, "status")["since_ts"] == started


def test_hidden_users_produce_no_presence_events(rig):
    a = rig.user("alice")
    rig.call(a, "hide")
    rig.call(a, "logout")
    assert [(e.user, e.event) for e in rig.events("presence")] == [("alice", "login")]


def test_history_returns_the_events_after(rig):
    a = rig.user("alice")  # seq 1: presence
    rig.call(a, "broadcast", id="b1", text="one")  # seq 2
    rig.call(a, "broadcast", id="b2", text="two")  # seq 3
    reply = ok(rig.call(a, "history", after=1), "history", "events", "seq", "complete")
    assert [e["seq"] for e in reply["events"]] == [2, 3] and reply["seq"] == 3 and reply["complete"] is True
    assert reply["events"][0] == {"seq": 2, "ts": rig.clock.now, "kind": "bcast", "user": "alice",
                                  "text": "one", "cid": "b1"}
    assert rig.call(a, "history", after=3) | {"req": 0} == {"req": 0, "status": "ok", "events": [],
                                                             "seq": 3, "complete": True}
    part = rig.call(a, "history", after=0, limit=2)
    assert [e["seq"] for e in part["events"]] == [1, 2] and part["complete"] is False


def test_ack_removes_acked_mail(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(a, "send", id="s1", to=["bob"], text="one")
    reply = ok(rig.call(b, "ack", ids=[1]), "ack", "removed")
    assert reply["removed"] == 1 and rig.store.mail_after("bob", 0, 10) == []
    assert rig.core.mail_counts.get("bob", 0) == 0
    assert rig.call(b, "ack", ids=[1])["removed"] == 0  # a retried ack


def test_ping_with_and_without_a_session(rig):
    stranger = rig.connect()
    rig.clock.advance(0.25)
    assert ok(rig.call(stranger, "ping"), "ping", "ts", "session") | {"req": 0} == {
        "req": 0, "status": "ok", "ts": rig.clock.now, "session": False}
    a = rig.user("alice")
    assert rig.call(a, "ping")["session"] is True


def test_every_request_kind_is_answered_once_with_its_req(rig):
    a = rig.user("alice")
    rig.take()
    kinds = {"hello": {"version": 1}, "register": {"user": "zed", "password": PASSWORD},
             "login": {"user": "alice", "password": PASSWORD}, "who": {}, "last": {"minutes": 1},
             "broadcast": {"id": "x", "text": "t"}, "send": {"id": "y", "to": ["alice"], "text": "t"},
             "busy": {}, "idle": {}, "hide": {}, "appear": {}, "status": {}, "history": {"after": 0},
             "ack": {"ids": [1]}, "ping": {}, "logout": {}}
    assert set(kinds) == {k.decode() for k in REPLY_TYPES}
    reqs = [rig.call(a, kind, **fields)["req"] for kind, fields in kinds.items()]
    replies = [json.loads(b) for rid, k, b, _ in rig.out.router if rid == a[0] and k == b"reply"]
    assert sorted(r["req"] for r in replies if r["req"] in reqs) == sorted(reqs)


def test_a_message_to_several_names_every_recipient_in_each_copy(rig):
    alice, bob, carol = rig.user("alice"), rig.user("bob"), rig.user("carol")
    rig.call(alice, "send", id="g1", to=["bob", "carol", "nobody1"], text="team meeting")  # nobody1: unknown
    rig.call(alice, "send", id="p1", to=["bob"], text="just you")
    assert [(x.text, x.group) for x in rig.pushes(bob)] == [("team meeting", ["bob", "carol"]), ("just you", [])]
    assert [x.group for x in rig.pushes(carol)] == [["bob", "carol"]]


def test_busy_and_back_are_presence_events_and_who_marks_the_busy(rig):
    alice, bob = rig.user("alice"), rig.user("bob")
    rig.call(bob, "busy", text="in a meeting")
    rig.call(bob, "busy", text="still")  # a new text is no new event
    assert rig.call(alice, "who")["busy"] == ["bob"]
    rig.call(bob, "idle")
    assert rig.call(alice, "who")["busy"] == []
    assert [(e.user, e.event) for e in rig.events("presence")][-2:] == [("bob", "busy"), ("bob", "available")]
    rig.call(bob, "hide")
    rig.call(bob, "busy")
    assert rig.events("presence")[-1].event == "available" and rig.call(alice, "who")["busy"] == []  # hidden: none
