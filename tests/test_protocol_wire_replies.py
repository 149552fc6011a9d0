"""Unit tests of what the broker sends on a DEALER, protocol.wire and protocol.messages
(docs/protocol.md sections 6 and 7): ok and error replies, the msg and end pushes.

Pure: no zmq, no sockets. Frames are lists of bytes as a DEALER/ROUTER/SUB would see them; the shared
cases are in tests/wire_cases.py.
"""

from __future__ import annotations

import json

import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.wire import decode_events, decode_push, encode_end, encode_error, encode_msg, encode_ok
from tests.protocol_doc import documented_reply_fields
from tests.wire_cases import MAX_REQ, push_error


# -- replies ------------------------------------------------------------------------------------------


def test_encode_ok_literal_bytes():
    assert encode_ok(1) == [b"reply", b'{"req":1,"status":"ok"}']
    assert encode_ok(None) == [b"reply", b'{"req":null,"status":"ok"}']
    assert encode_ok(2, {}) == [b"reply", b'{"req":2,"status":"ok"}']


def test_encode_error_literal_bytes():
    assert encode_error(3, ErrorCode.BLOCKED, "wait", {"retry_after": 60.0}) == [
        b"reply",
        b'{"req":3,"status":"error","code":"E_BLOCKED","message":"wait","retry_after":60.0}',
    ]
    assert encode_error(None, ErrorCode.BAD_JSON, "x") == [
        b"reply",
        b'{"req":null,"status":"error","code":"E_BAD_JSON","message":"x"}',
    ]


OK_REPLIES = [  # (request type, req, every field docs/protocol.md 6.1 lists for it)
    ("hello", 1, {"version": 1, "broker": "chat-broker", "max_message_chars": 1000, "min_password_chars": 8, "curve": True}),
    ("register", 2, {"user": "alice", "dup": False}),
    ("login", 3, {"user": "alice", "pub_port": 4120, "seq": 42, "since": 39, "since_ts": 1732170000.0,
                  "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0, "idle_timeout": 1800.0, "max_message_chars": 1000,
                  "pub_heartbeat": 2.0, "epoch": "5f0c2a9e8b7d4c1a", "dup": False}),
    ("logout", 4, {"session": True}),
    ("who", 5, {"users": ["alice", "bob"], "busy": ["bob"], "truncated": False}),
    ("last", 6, {"users": [], "busy": [], "truncated": True}),
    ("broadcast", 7, {"seq": 43, "ts": 1732170004.0, "dup": False}),
    ("send", 8, {"ids": {"bob": 101, "carol": 102}, "ts": 1732170003.5, "dup": True,
                 "busy": [{"user": "carol", "text": "away"}]}),
    ("busy", 9, {"text": "in a meeting"}),
    ("idle", 10, {"held": 3}),
    ("hide", 11, None),
    ("appear", 12, {}),
    ("status", 13, {"user": "alice", "busy": False, "busy_text": "", "hidden": True, "since_ts": 1732170000.0}),
    ("history", 14, {"events": [], "seq": 0, "complete": True}),
    ("ack", 15, {"removed": 2}),
    ("ping", 16, {"ts": 1732170009.123456, "session": False}),
    ("ping", MAX_REQ, {"ts": 0.0, "session": True}),
    ("logout", None, {"session": False}),
]  # fmt: skip


def test_the_ok_reply_table_has_every_documented_field_of_every_request():
    documented = documented_reply_fields()
    assert {kind for kind, _, _ in OK_REPLIES} == set(documented)
    for kind, _, fields in OK_REPLIES:
        assert set(fields or {}) == documented[kind], kind


@pytest.mark.parametrize("kind, req, fields", OK_REPLIES)
def test_ok_replies_round_trip(kind, req, fields):
    frames = encode_ok(req, fields)
    assert frames[1].startswith(b'{"req":%s,"status":"ok"' % json.dumps(req).encode())
    decoded_kind, obj = decode_push(frames)
    assert decoded_kind == b"reply"
    assert obj == {"req": req, "status": "ok", **(fields or {})}


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("req", [None, 0, 12])
def test_error_replies_round_trip(code, req):
    kind, obj = decode_push(encode_error(req, code, "one sentence"))
    assert kind == b"reply"
    assert obj == {"req": req, "status": "error", "code": code.value, "message": "one sentence"}


def test_send_partial_error_reply_round_trips():
    # every field of docs/protocol.md 6.2 for a send that some recipients did not get
    fields = {"unknown": ["zed"], "full": ["carol"], "ids": {"bob": 101}, "ts": 1732170003.5, "busy": [], "dup": False}
    kind, obj = decode_push(encode_error(5, ErrorCode.UNKNOWN_USER, "no such user: zed", fields))
    assert kind == b"reply"
    assert obj == {"req": 5, "status": "error", "code": "E_UNKNOWN_USER", "message": "no such user: zed", **fields}


EVENTS = [
    m.Event(seq=40, ts=1732160100.0, kind="bcast", user="bob", text="lunch?", cid="b2"),
    m.Event(seq=41, ts=1732160200.25, kind="presence", user="bob", event="login"),
    m.Event(seq=42, ts=1732170000.0, kind="presence", user="alice", event="logout"),
]


def test_history_reply_with_event_structs_round_trips():
    kind, obj = decode_push(encode_ok(3, {"events": EVENTS, "seq": 42, "complete": False}))
    assert kind == b"reply"
    assert obj["seq"] == 42 and obj["complete"] is False
    assert decode_events(obj["events"]) == EVENTS
    assert obj["events"][1] == {"seq": 41, "ts": 1732160200.25, "kind": "presence", "user": "bob", "event": "login"}


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], ErrorCode.FRAMES),
        ([b"reply"], ErrorCode.FRAMES),
        ([b"id", b"reply", b'{"req":1,"status":"ok"}'], ErrorCode.FRAMES),
        ([b"pong", b'{"req":1,"status":"ok"}'], ErrorCode.UNKNOWN_TYPE),
        ([b"REPLY", b'{"req":1,"status":"ok"}'], ErrorCode.UNKNOWN_TYPE),
        ([b"reply", b""], ErrorCode.BAD_JSON),
        ([b"reply", b"{"], ErrorCode.BAD_JSON),
        ([b"reply", b"\xff"], ErrorCode.BAD_JSON),
        ([b"reply", b"[]"], ErrorCode.BAD_FIELD),
        ([b"reply", b'"ok"'], ErrorCode.BAD_FIELD),
        ([b"reply", b"{}"], ErrorCode.BAD_FIELD),
        ([b"reply", b'{"req":1}'], ErrorCode.BAD_FIELD),
        ([b"reply", b'{"status":"ok"}'], ErrorCode.BAD_FIELD),
        ([b"reply", b'{"req":1,"status":"fine"}'], ErrorCode.BAD_FIELD),
        ([b"reply", b'{"req":1,"status":null}'], ErrorCode.BAD_FIELD),
        ([b"msg", b"{}"], ErrorCode.BAD_FIELD),
        ([b"msg", b'{"id":1}'], ErrorCode.BAD_FIELD),
        ([b"msg", b'{"from":"a"}'], ErrorCode.BAD_FIELD),
        ([b"msg", b'{"id":"1","from":"a"}'], ErrorCode.BAD_FIELD),
        ([b"msg", b'{"id":1,"from":"a","ts":"now"}'], ErrorCode.BAD_FIELD),
        ([b"msg", b"[1]"], ErrorCode.BAD_FIELD),
        ([b"msg", b"nope"], ErrorCode.BAD_JSON),
        ([b"end", b"{}"], ErrorCode.BAD_FIELD),
        ([b"end", b'{"reason":5}'], ErrorCode.BAD_FIELD),
        ([b"end", b'{"message":"x"}'], ErrorCode.BAD_FIELD),
        ([b"end", b"\xc3"], ErrorCode.BAD_JSON),
    ],
)
def test_malformed_broker_messages(frames, code):
    assert push_error(frames).code is code


# -- msg push -----------------------------------------------------------------------------------------

MSGS = [
    m.PrivateMessage(id=101, sender="alice", to="bob", ts=1732170003.5, text="hi", cid="9f2c"),
    m.PrivateMessage(id=1, sender="bob"),
    m.PrivateMessage(id=2**53, sender="carol", to="dave", ts=0.5, text="😀 ☃\n" * 10, cid="x" * 64),
]


@pytest.mark.parametrize("msg", MSGS)
def test_msg_push_round_trips(msg):
    frames = encode_msg(msg)
    assert frames[0] == b"msg"
    assert decode_push(frames) == (b"msg", msg)


def test_msg_push_literal_body_uses_from():
    frames = encode_msg(MSGS[0])
    assert json.loads(frames[1]) == {"id": 101, "from": "alice", "to": "bob", "ts": 1732170003.5, "text": "hi", "cid": "9f2c"}
    assert b'"sender"' not in frames[1]


def test_msg_push_minimal_and_extra_fields():
    kind, msg = decode_push([b"msg", b'{"id": 7, "from": "bob", "new_field": [1, 2]}'])
    assert kind == b"msg"
    assert msg == m.PrivateMessage(id=7, sender="bob", to="", ts=0.0, text="", cid="")
    assert json.loads(encode_msg(m.PrivateMessage(id=7, sender="bob"))[1]) == {"id": 7, "from": "bob"}


def test_msg_push_ts_may_be_a_json_integer():
    assert decode_push([b"msg", b'{"id": 7, "from": "bob", "ts": 5}'])[1].ts == 5.0


# -- end push -----------------------------------------------------------------------------------------


def test_end_reasons_are_the_specified_four():
    assert m.END_REASONS == ("replaced", "idle_timeout", "heartbeat_timeout", "shutdown")


@pytest.mark.parametrize("reason", m.END_REASONS)
def test_end_push_round_trips(reason):
    frames = encode_end(reason, "bye")
    assert frames == [b"end", json.dumps({"reason": reason, "message": "bye"}, separators=(",", ":")).encode()]
    assert decode_push(frames) == (b"end", m.End(reason, "bye"))


def test_end_push_message_defaults_to_empty():
    assert decode_push([b"end", b'{"reason": "shutdown"}']) == (b"end", m.End("shutdown", ""))
