"""protocol.replies: the reply Structs pinned to docs/protocol.md (6, 6.1, 6.2), decode round trips
with concrete values, and malformed replies refused with ProtocolError."""

from __future__ import annotations

import re
import types
import typing

import msgspec
import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol import replies as r
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.wire import REPLY, REQUEST_TYPES, encode_error, encode_ok
from tests.protocol_doc import common_keys, doc_fields, ok_table, section


def kind_of(tp: object) -> str:
    """The doc's type word for a Struct field annotation (Annotated, None and UNSET stripped)."""
    if typing.get_origin(tp) is typing.Annotated:
        return kind_of(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a not in (type(None), msgspec.UnsetType)]
        return kind_of(inner)
    if typing.get_origin(tp) is typing.Literal:
        return kind_of(type(typing.get_args(tp)[0]))
    origin = typing.get_origin(tp) or tp
    return {int: "int", str: "str", bool: "bool", float: "float", list: "array", dict: "object"}[origin]


def struct_fields(cls: type[msgspec.Struct]) -> dict[str, str]:
    return {f.encode_name: kind_of(f.type) for f in msgspec.structs.fields(cls)}


# ---- the Structs follow the doc -----------------------------------------------------------


def test_every_request_word_has_a_reply_type_and_a_doc_row():
    assert set(ok_table()) == {w.decode() for w in REQUEST_TYPES} == {w.decode() for w in r.REPLY_TYPES}


def test_req_and_status_as_in_section_6():
    assert common_keys("* ok:") == ["req", "status"]
    assert common_keys("* error:") == ["req", "status", "code", "message"]
    for cls in {*r.REPLY_TYPES.values(), r.ErrorReply}:
        assert [f.name for f in msgspec.structs.fields(cls)][:2] == ["req", "status"], cls


@pytest.mark.parametrize("word", sorted(ok_table()))
def test_ok_reply_fields_match_table_6_1(word):
    cell = ok_table()[word]
    documented = {} if cell.startswith("none") else doc_fields(cell)
    fields = struct_fields(r.REPLY_TYPES[word.encode()])
    assert fields.pop("req") == "int" and fields.pop("status") == "str"
    assert fields == documented
    required = {f.name for f in msgspec.structs.fields(r.REPLY_TYPES[word.encode()])
                if f.required}
    assert required == {"req", *documented}  # 6.1 lists fields that are always there


def test_busy_entries_of_a_send_reply_match_table_6_1():
    nested = re.search(r"`busy` array of (\{[^{}]*\})", ok_table()["send"]).group(1)
    assert struct_fields(r.BusyRecipient) == doc_fields(nested.strip("{}"))
    for cls in (r.SendReply, r.ErrorReply):
        busy = next(f.type for f in msgspec.structs.fields(cls) if f.name == "busy")
        lists = [busy] if typing.get_origin(busy) is list else typing.get_args(busy)
        assert list[r.BusyRecipient] in lists, cls


def test_error_reply_fields_match_section_6_2():
    text = section("### 6.2 Error replies with extra fields")
    documented = doc_fields(text)
    plus = re.search(r"\*\*plus\*\* (.*?) as in the ok reply", text, re.DOTALL).group(1)
    send_ok = doc_fields(ok_table()["send"])
    documented.update({name: send_ok[name] for name in re.findall(r"`(\w+)`", plus)})
    fields = struct_fields(r.ErrorReply)
    assert fields.pop("req") == "int" and fields.pop("status") == "str"
    assert fields.pop("code") == "str" and fields.pop("message") == "str"
    assert fields == documented
    extras = {f.name: f.default for f in msgspec.structs.fields(r.ErrorReply)}
    assert all(extras[name] is msgspec.UNSET for name in documented)  # only where 6.2 says


# ---- round trips ------------------------------------------------------------------------------

EVENTS = [m.Event(seq=40, ts=1732160100.0, kind="bcast", user="bob", text="lunch?", cid="b2"),
          m.Event(seq=41, ts=1732160200.0, kind="presence", user="bob", event="login")]

SAMPLES: dict[bytes, r.Reply] = {
    b"hello": r.HelloReply(req=1, version=1, broker="chat-broker", max_message_chars=1000, min_password_chars=8,
                           curve=True),
    b"register": r.RegisterReply(req=2, user="alice", dup=False),
    b"login": r.LoginReply(req=3, user="alice", pub_port=4120, seq=41, since=39, since_ts=1732170000.0,
                           heartbeat_interval=5.0, heartbeat_timeout=15.0, idle_timeout=1800.0,
                           max_message_chars=1000, pub_heartbeat=2.0, epoch="5f0c2a9e", dup=True),
    b"logout": r.LogoutReply(req=4, session=False),
    b"who": r.UsersReply(req=5, users=["alice", "bob"], busy=["bob"], truncated=False),
    b"last": r.UsersReply(req=6, users=["alice"], busy=[], truncated=True),
    b"broadcast": r.BroadcastReply(req=7, seq=43, ts=1732170004.0, dup=False),
    b"send": r.SendReply(req=8, ids={"bob": 101, "carol": 102}, ts=1732170003.5,
                         busy=[r.BusyRecipient("carol", "in a meeting")], dup=False),
    b"busy": r.BusyReply(req=9, text="in a meeting"),
    b"idle": r.IdleReply(req=10, held=3),
    b"hide": r.EmptyReply(req=11),
    b"appear": r.EmptyReply(req=12),
    b"status": r.StatusReply(req=13, user="alice", busy=True, busy_text="away", hidden=False, since_ts=1.5),
    b"history": r.HistoryReply(req=14, events=EVENTS, seq=42, complete=False),
    b"ack": r.AckReply(req=15, removed=2),
    b"ping": r.PingReply(req=16, ts=1732170009.0, session=True),
}


def test_samples_cover_every_word():
    assert set(SAMPLES) == set(r.REPLY_TYPES)


@pytest.mark.parametrize("word", sorted(SAMPLES))
def test_ok_round_trip(word):
    kind, body = r.encode_reply(SAMPLES[word])
    assert kind == REPLY == b"reply"
    assert body.startswith(b'{"req":%d,"status":"ok"' % SAMPLES[word].req)
    head = r.decode_head(body)
    assert (head.req, head.status) == (SAMPLES[word].req, "ok")
    assert r.decode_reply(word, body) == SAMPLES[word] == r.decode_reply(word, memoryview(body), head)
    assert SAMPLES[word].ok


def test_decoding_what_the_old_dict_encoder_wrote():
    """The bytes of wire.encode_ok (the broker's dicts) decode to the same Structs."""
    body = encode_ok(2, {"user": "alice", "dup": False})[1]
    assert r.decode_reply(b"register", body) == r.RegisterReply(req=2, user="alice", dup=False)
    body = encode_ok(14, {"events": [msgspec.Raw(msgspec.json.encode(e)) for e in EVENTS], "seq": 42,
                          "complete": False})[1]
    assert r.decode_reply(b"history", body) == SAMPLES[b"history"]


def test_doc_examples_decode():
    """The replies of the worked example (section 10)."""
    login = (b'{"req": 2, "status": "ok", "user": "alice", "pub_port": 4120, "seq": 41, "since": 39, '
             b'"since_ts": 1732170000.0, "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0, '
             b'"idle_timeout": 1800.0, "max_message_chars": 1000, "pub_heartbeat": 2.0, "epoch": "5f0c2a9e", '
             b'"dup": false}')
    reply = r.decode_reply(b"login", login)
    assert isinstance(reply, r.LoginReply) and (reply.since, reply.pub_port, reply.idle_timeout) == (39, 4120, 1800.0)
    send = (b'{"req": 5, "status": "error", "code": "E_UNKNOWN_USER", "message": "no such user: zed (sent to bob)",'
            b' "ids": {"bob": 101}, "ts": 1732170003.5, "busy": [], "unknown": ["zed"], "full": [], "dup": false}')
    err = r.decode_reply(b"send", send)
    assert isinstance(err, r.ErrorReply) and not err.ok
    assert (err.code, err.ids, err.unknown, err.full, err.busy, err.dup) == (
        ErrorCode.UNKNOWN_USER, {"bob": 101}, ["zed"], [], [], False)
    assert err.retry_after is msgspec.UNSET and err.attempts_left is msgspec.UNSET


def test_error_round_trip_omits_unset_fields():
    err = r.ErrorReply.of(7, ErrorCode.RATE_LIMITED, "too many requests", {"retry_after": 0.25})
    assert r.encode_reply(err)[0] == REPLY
    body = r.encode_reply(err)[1]
    assert body == b'{"req":7,"status":"error","code":"E_RATE_LIMITED","message":"too many requests","retry_after":0.25}'
    assert body == encode_error(7, ErrorCode.RATE_LIMITED, "too many requests", {"retry_after": 0.25})[1]
    for word in r.REPLY_TYPES:
        assert r.decode_reply(word, body) == err
    none = r.ErrorReply.of(None, ErrorCode.BAD_JSON, "bad")
    assert r.decode_reply(b"ping", r.encode_reply(none)[1]) == none and none.req is None
    with pytest.raises(TypeError):
        r.ErrorReply.of(1, ErrorCode.INTERNAL, "x", {"retry": 1.0})


def test_unknown_fields_are_ignored_and_ints_read_as_floats():
    body = b'{"req":1,"status":"ok","ts":5,"session":true,"later":{"x":[1]}}'
    assert r.decode_reply(b"ping", body) == r.PingReply(req=1, ts=5.0, session=True)
    assert isinstance(r.decode_reply(b"ping", body).ts, float)


def test_unknown_word_is_a_caller_bug():
    with pytest.raises(ValueError):
        r.decode_reply(b"lats", b'{"req":1,"status":"ok"}')


# ---- malformed replies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "word, body, code",
    [
        (b"who", b"", ErrorCode.BAD_JSON),
        (b"who", b'{"req":1,"status":"ok","users":[]', ErrorCode.BAD_JSON),
        (b"who", b"\xff", ErrorCode.BAD_JSON),
        (b"who", b"[1]", ErrorCode.BAD_FIELD),
        (b"who", b'{"status":"ok","users":[],"truncated":false}', ErrorCode.BAD_FIELD),  # no req
        (b"who", b'{"req":1,"users":[],"truncated":false}', ErrorCode.BAD_FIELD),  # no status
        (b"who", b'{"req":1,"status":"fine","users":[],"truncated":false}', ErrorCode.BAD_FIELD),
        (b"who", b'{"req":"1","status":"ok","users":[],"truncated":false}', ErrorCode.BAD_FIELD),
        (b"who", b'{"req":9007199254740993,"status":"ok","users":[],"truncated":false}', ErrorCode.BAD_FIELD),
        (b"who", b'{"req":1,"status":"ok","truncated":false}', ErrorCode.BAD_FIELD),  # users missing
        (b"who", b'{"req":1,"status":"ok","users":["a",2],"truncated":false}', ErrorCode.BAD_FIELD),
        (b"who", b'{"req":1,"status":"ok","users":[],"truncated":0}', ErrorCode.BAD_FIELD),
        (b"login", b'{"req":1,"status":"ok","user":"a","pub_port":4120}', ErrorCode.BAD_FIELD),
        (b"login", r.encode_reply(SAMPLES[b"login"])[1].replace(b'"seq":41', b'"seq":4.5'), ErrorCode.BAD_FIELD),
        (b"ack", b'{"req":1,"status":"ok","removed":-1}', ErrorCode.BAD_FIELD),
        (b"ping", b'{"req":1,"status":"ok","ts":"now","session":true}', ErrorCode.BAD_FIELD),
        (b"send", b'{"req":1,"status":"ok","ids":{"bob":"x"},"ts":1.0,"busy":[],"dup":false}', ErrorCode.BAD_FIELD),
        (b"send", b'{"req":1,"status":"ok","ids":{},"ts":1.0,"busy":[{"user":"b"}],"dup":false}', ErrorCode.BAD_FIELD),
        (b"history", b'{"req":1,"status":"ok","events":[{"seq":1}],"seq":1,"complete":true}', ErrorCode.BAD_FIELD),
        (b"hide", b'{"req":1,"status":"error","message":"m"}', ErrorCode.BAD_FIELD),  # no code
        (b"hide", b'{"req":1,"status":"error","code":"E_X","message":"m","retry_after":null}', ErrorCode.BAD_FIELD),
        (b"hide", b'{"req":1,"status":"error","code":"E_X","message":"m","attempts_left":true}', ErrorCode.BAD_FIELD),
    ],
)
def test_malformed_replies_raise_protocol_error(word, body, code):
    with pytest.raises(ProtocolError) as info:
        r.decode_reply(word, body)
    assert info.value.code == code
