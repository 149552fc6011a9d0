"""Unit tests of the wire format, protocol.wire and protocol.messages (docs/protocol.md sections 2-8).

Pure: no zmq, no sockets. Frames are lists of bytes as a DEALER/ROUTER/SUB would see them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.wire import (
    REQUEST_TYPES,
    TYPE_OF,
    decode_event,
    decode_events,
    decode_push,
    decode_request,
    decode_stored_event,
    encode_end,
    encode_error,
    encode_event,
    encode_json,
    encode_msg,
    encode_ok,
    encode_request,
)

MAX_REQ = 2**53
DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def body(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def request_error(frames) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(frames)
    return info.value


def push_error(frames) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_push(frames)
    return info.value


# -- request types ------------------------------------------------------------------------------------

SPEC_TYPES = [b"hello", b"register", b"login", b"logout", b"who", b"last", b"broadcast", b"send", b"busy",
              b"idle", b"hide", b"appear", b"status", b"history", b"ack", b"ping"]  # fmt: skip


def test_request_types_are_the_specified_16():
    assert list(REQUEST_TYPES) == SPEC_TYPES
    assert {TYPE_OF[cls]: cls for cls in TYPE_OF} == REQUEST_TYPES
    assert all(issubclass(cls, m.Request) for cls in REQUEST_TYPES.values())


def test_kind_and_topic_constants():
    assert (wire.REPLY, wire.MSG, wire.END) == (b"reply", b"msg", b"end")
    assert (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE) == (b"bcast", b"presence")


REQUESTS = [
    m.Hello(req=1, version=1, client="mychat/0.1"),
    m.Hello(req=0, version=1),
    m.Register(req=2, version=1, user="alice", password="correct horse"),
    m.Login(req=3, version=1, user="alice", password="correct horse"),
    m.Logout(req=4),
    m.Who(req=5),
    m.Last(req=6, minutes=60),
    m.Last(req=6, minutes=1),
    m.Last(req=6, minutes=10080),
    m.Broadcast(req=7, id="6f1d0c8e3b6a4c52a1e9d0b7c3f2a914", text="hello all"),
    m.Send(req=8, id="9f2c", to=["bob", "carol"], text="hi ☃ 😀"),
    m.Send(req=MAX_REQ, id="x" * 64, to=["u%03d" % i for i in range(100)], text="t" * 100_000),
    m.Busy(req=9, text="in a meeting"),
    m.Busy(req=9),
    m.Idle(req=10),
    m.Hide(req=11),
    m.Appear(req=12),
    m.Status(req=13),
    m.History(req=14, after=41, limit=1000),
    m.History(req=14, after=0, limit=1),
    m.History(req=14, after=7, limit=10_000),
    m.Ack(req=15, ids=[101, 102, 103]),
    m.Ack(req=15, ids=list(range(1, 1001))),
    m.Ping(req=16),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips(request_):
    frames = encode_request(request_)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    assert frames[0] == TYPE_OF[type(request_)]
    obj = json.loads(frames[1].decode("utf-8"))
    fields = msgspec.structs.fields(type(request_))
    # each field under its JSON name (the names are pinned by the spec tests below), value for value;
    # optional ones may be left out when they hold their default
    by_name = {f.encode_name: f for f in fields}
    assert {n for n, f in by_name.items() if f.required} <= set(obj) <= set(by_name)
    assert obj == {n: getattr(request_, f.name) for n, f in by_name.items() if n in obj}
    assert {f.name for f in fields if f.encode_name not in obj and getattr(request_, f.name) != f.default} == set()
    kind, decoded = decode_request(frames)
    assert kind == frames[0]
    assert type(decoded) is type(request_)
    assert {f.name: getattr(decoded, f.name) for f in fields} == {f.name: getattr(request_, f.name) for f in fields}


def test_every_request_type_is_covered_by_the_round_trip_table():
    assert {type(r) for r in REQUESTS} == set(REQUEST_TYPES.values())


@pytest.mark.parametrize(
    "frames, expected",
    [
        ([b"hello", {"req": 1, "version": 1, "client": "mychat/0.1"}], m.Hello(1, 1, "mychat/0.1")),
        ([b"send", {"req": 7, "id": "9f..", "to": ["bob"], "text": "hi"}], m.Send(7, "9f..", ["bob"], "hi")),
        ([b"history", {"req": 14, "after": 41}], m.History(14, 41, 1000)),  # limit defaults to 1000
        ([b"busy", {"req": 9}], m.Busy(9, "")),  # text defaults to ""
        ([b"hello", {"req": 1, "version": 1}], m.Hello(1, 1, "")),  # client defaults to ""
        ([b"ping", {"req": 16, "future": [1, {"x": None}]}], m.Ping(16)),  # unknown fields ignored
        ([b"ack", {"req": 15, "ids": [101]}], m.Ack(15, [101])),
    ],
)
def test_literal_spec_frames_decode(frames, expected):
    kind, decoded = decode_request([frames[0], body(frames[1])])
    assert kind == frames[0]
    assert decoded == expected


@pytest.mark.parametrize(
    "request_, obj",
    [
        (m.Busy(req=1), {"req": 1}),
        (m.History(req=1, after=0), {"req": 1, "after": 0}),
        (m.History(req=1, after=0, limit=5), {"req": 1, "after": 0, "limit": 5}),
        (m.Hello(req=1, version=1), {"req": 1, "version": 1}),
        (m.Ping(req=0), {"req": 0}),
        (m.Send(req=8, id="a", to=["bob"], text="hi"), {"req": 8, "id": "a", "to": ["bob"], "text": "hi"}),
    ],
)
def test_request_bodies_omit_defaults(request_, obj):
    assert json.loads(encode_request(request_)[1]) == obj


def test_white_space_in_json_is_free():
    assert decode_request([b"last", b' \n{ "req" : 1 ,\t"minutes" : 5 }\r\n']) == (b"last", m.Last(1, 5))


@pytest.mark.parametrize("convert", [bytes, bytearray, memoryview])
def test_decode_request_accepts_buffers(convert):
    assert decode_request([convert(b"ping"), convert(b'{"req":1}')]) == (b"ping", m.Ping(1))


@pytest.mark.parametrize("not_a_request", [m.Request(req=1), m.Event(1, 1.0, "bcast", "a"), {"req": 1}])
def test_encode_request_rejects_non_requests(not_a_request):
    with pytest.raises(KeyError):
        encode_request(not_a_request)  # type: ignore[arg-type]


# -- malformed requests: frames and type --------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, req",
    [
        ([], None),
        ([b"hello"], None),
        ([b'{"req": 5}'], 5),  # only a body: the last frame is read for req
        ([b"", b"hello", b'{"req": 4, "version": 1}'], 4),  # REQ-socket style empty delimiter
        ([b"hello", b'{"req": 4, "version": 1}', b"extra"], None),
        ([b"hello", b'{"req": 4, "version": 1}', b'{"req": 9}'], 9),
        ([b"a", b"b", b"c", b"d"], None),
    ],
)
def test_wrong_frame_count_is_e_frames(frames, req):
    err = request_error(frames)
    assert err.code is ErrorCode.FRAMES
    assert err.req == req
    assert str(len(frames)) in err.message


@pytest.mark.parametrize(
    "kind, raw, req",
    [
        (b"HELLO", b'{"req": 3, "version": 1}', 3),
        (b"Ping", b'{"req": 4}', 4),
        (b"", b'{"req": 5}', 5),
        (b"hello ", b'{"req": 6}', 6),
        (b"send_all", b'{"req": 7}', 7),
        (b"lats", b'{"req": 8}', 8),
        (b"reply", b'{"req": 9}', 9),
        (b"\xff\xfe", b'{"req": 10}', 10),
        (b"nope", b"not json", None),
        (b"nope", b'{"req": "x"}', None),
        (b"x" * 1000, b"{}", None),
    ],
)
def test_unknown_type_is_e_unknown_type(kind, raw, req):
    err = request_error([kind, raw])
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert err.req == req
    assert len(err.message) < 100  # the type is shown truncated


# -- malformed requests: body -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"not json",
        b"{",
        b'{"req": 1',
        b'{"req": 1, "version": 1,}',
        b"{'req': 1}",
        b'{"req": 1, "version": 1} x',  # trailing data
        b'{"req": 1, "version": 1}{}',
        b"\xef\xbb\xbf" + b'{"req": 1, "version": 1}',  # byte order mark
        b"\xff\xfe",  # not UTF-8
        b'{"req": 1, "version": 1, "client": "\xff"}',  # invalid UTF-8 inside a string
        b'{"req": 1, "version": 1, "client": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate
        b'{"req": 1, "version": 1, "client": "\\ud83d"}',  # lone surrogate escape
        b"NaN",
    ],
)
def test_body_not_utf8_json_is_e_bad_json(raw):
    err = request_error([b"hello", raw])
    assert err.code is ErrorCode.BAD_JSON
    assert err.req is None


@pytest.mark.parametrize("raw", [b"[]", b'[{"req": 1, "version": 1}]', b'"hello"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object_is_e_bad_field(raw):
    # As the code does: valid JSON of the wrong shape is a field error, not E_BAD_JSON (docs section 8).
    err = request_error([b"hello", raw])
    assert err.code is ErrorCode.BAD_FIELD
    assert err.req is None


def test_surrogate_pair_escape_is_fine():
    assert decode_request([b"hello", b'{"req":1,"version":1,"client":"\\ud83d\\ude00"}'])[1] == m.Hello(1, 1, "😀")


# One valid request of each type: the body rules below must hold whatever the type.
ONE_PER_TYPE = {kind: next(r for r in REQUESTS if TYPE_OF[type(r)] == kind) for kind in REQUEST_TYPES}

# A member `"key": value` that the typed decoder skips (unknown key) but that breaks docs section 3.
BAD_IGNORED_MEMBERS = {
    "invalid-utf8-value": b'"x": "\xff"',
    "invalid-utf8-key": b'"\xff": 1',
    "invalid-utf8-nested": b'"x": [{"y": "a\xfeb"}]',
    "utf8-encoded-surrogate": b'"x": "\xed\xa0\x80"',
    "truncated-utf8-sequence": b'"x": "\xe2\x98"',
    "overlong-utf8": b'"x": "\xc0\xaf"',
    "lone-high-surrogate-escape": b'"x": "\\ud83d"',
    "lone-low-surrogate-escape": b'"x": "\\uDE00"',
    "reversed-surrogate-escapes": b'"x": "\\ude00\\ud83d"',
    "lone-surrogate-escape-in-key": b'"\\ud83d": 1',
    "lone-surrogate-escape-nested": b'"x": [{"y": "a\\ud83db"}]',
}


def with_member(kind: bytes, member: bytes, first: bool) -> bytes:
    """The valid body of ONE_PER_TYPE[kind] with `member` added as its first or last member."""
    valid = encode_request(ONE_PER_TYPE[kind])[1]
    return b"{" + member + b"," + valid[1:] if first else valid[:-1] + b"," + member + b"}"


@pytest.mark.parametrize("case", list(BAD_IGNORED_MEMBERS))
@pytest.mark.parametrize("kind", list(ONE_PER_TYPE), ids=bytes.decode)
def test_bad_utf8_or_lone_surrogate_in_an_ignored_field_is_e_bad_json(kind, case):
    for first in (True, False):
        err = request_error([kind, with_member(kind, BAD_IGNORED_MEMBERS[case], first)])
        assert err.code is ErrorCode.BAD_JSON
        assert err.req is None


@pytest.mark.parametrize(
    "member",
    [b'"x": "h\\u00e9 \\ud83d\\ude00 \\uD7FF \\uE000"', '"é😀": "☃ 😀"'.encode("utf-8"), b'"x": "\\\\ud83d"'],
)
@pytest.mark.parametrize("kind", list(ONE_PER_TYPE), ids=bytes.decode)
def test_valid_unicode_in_an_ignored_field_is_accepted(kind, member):
    assert decode_request([kind, with_member(kind, member, False)]) == (kind, ONE_PER_TYPE[kind])


@pytest.mark.parametrize(
    "decode, frames",
    [
        (decode_event, [b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast", "user": "a", "x": "\xff"}']),
        (decode_event, [b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast", "user": "a", "x": "\\ud83d"}']),
        (decode_push, [b"msg", b'{"id": 1, "from": "a", "\xff": 1}']),
        (decode_push, [b"end", b'{"reason": "shutdown", "x": "\xed\xa0\x80"}']),
    ],
)
def test_client_decoders_apply_the_same_body_rules(decode, frames):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert info.value.code is ErrorCode.BAD_JSON


# (type, body, req expected on the error) for E_BAD_FIELD
BAD_FIELDS = [
    # req itself
    (b"ping", {}, None),
    (b"ping", {"req": -1}, None),
    (b"ping", {"req": MAX_REQ + 1}, None),
    (b"ping", {"req": 10**30}, None),
    (b"ping", {"req": 1.0}, None),
    (b"ping", {"req": 1.5}, None),
    (b"ping", {"req": "1"}, None),
    (b"ping", {"req": True}, None),
    (b"ping", {"req": None}, None),
    (b"ping", {"req": [1]}, None),
    # hello
    (b"hello", {"req": 1}, 1),
    (b"hello", {"req": 1, "version": "1"}, 1),
    (b"hello", {"req": 1, "version": 1.0}, 1),
    (b"hello", {"req": 1, "version": None}, 1),
    (b"hello", {"req": 1, "version": 1, "client": 5}, 1),
    (b"hello", {"req": 1, "version": 1, "client": "c" * 201}, 1),
    # register / login
    (b"register", {"req": 2, "version": 1, "user": "alice"}, 2),
    (b"register", {"req": 2, "version": 1, "password": "secret99"}, 2),
    (b"register", {"req": 2, "user": "alice", "password": "secret99"}, 2),
    (b"register", {"req": 2, "version": 1, "user": "a" * 65, "password": "secret99"}, 2),
    (b"register", {"req": 2, "version": 1, "user": "alice", "password": "p" * 4097}, 2),
    (b"login", {"req": 3, "version": 1, "user": 5, "password": "secret99"}, 3),
    (b"login", {"req": 3, "version": 1, "user": "alice", "password": None}, 3),
    (b"login", {"req": 3, "version": 1, "user": "a" * 65, "password": "x"}, 3),
    (b"login", {"req": 3, "version": 1, "user": "alice", "password": "p" * 4097}, 3),
    # last
    (b"last", {"req": 6}, 6),
    (b"last", {"req": 6, "minutes": 0}, 6),
    (b"last", {"req": 6, "minutes": 10081}, 6),
    (b"last", {"req": 6, "minutes": -5}, 6),
    (b"last", {"req": 6, "minutes": "5"}, 6),
    (b"last", {"req": 6, "minutes": 5.0}, 6),
    # broadcast
    (b"broadcast", {"req": 7, "text": "hi"}, 7),
    (b"broadcast", {"req": 7, "id": "a"}, 7),
    (b"broadcast", {"req": 7, "id": "", "text": "hi"}, 7),
    (b"broadcast", {"req": 7, "id": "x" * 65, "text": "hi"}, 7),
    (b"broadcast", {"req": 7, "id": 12, "text": "hi"}, 7),
    (b"broadcast", {"req": 7, "id": "a", "text": "t" * 100_001}, 7),
    (b"broadcast", {"req": 7, "id": "a", "text": None}, 7),
    # send
    (b"send", {"req": 8, "id": "a", "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": [], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": ["u%03d" % i for i in range(101)], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": "bob", "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": [5], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": ["b" * 65], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": ["bob"]}, 8),
    (b"send", {"req": 8, "id": "", "to": ["bob"], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "x" * 65, "to": ["bob"], "text": "hi"}, 8),
    (b"send", {"req": 8, "id": "a", "to": ["bob"], "text": "t" * 100_001}, 8),
    # busy
    (b"busy", {"req": 9, "text": None}, 9),
    (b"busy", {"req": 9, "text": 5}, 9),
    (b"busy", {"req": 9, "text": "t" * 100_001}, 9),
    # history
    (b"history", {"req": 14}, 14),
    (b"history", {"req": 14, "after": -1}, 14),
    (b"history", {"req": 14, "after": "0"}, 14),
    (b"history", {"req": 14, "after": 0, "limit": 0}, 14),
    (b"history", {"req": 14, "after": 0, "limit": 10_001}, 14),
    (b"history", {"req": 14, "after": 0, "limit": None}, 14),
    # ack
    (b"ack", {"req": 15}, 15),
    (b"ack", {"req": 15, "ids": []}, 15),
    (b"ack", {"req": 15, "ids": list(range(1, 1002))}, 15),
    (b"ack", {"req": 15, "ids": 101}, 15),
    (b"ack", {"req": 15, "ids": ["101"]}, 15),
    (b"ack", {"req": 15, "ids": [1.0]}, 15),
    (b"ack", {"req": 15, "ids": [True]}, 15),
]


@pytest.mark.parametrize("kind, obj, req", BAD_FIELDS, ids=[f"{k.decode()}-{i}" for i, (k, _, _) in enumerate(BAD_FIELDS)])
def test_bad_fields_are_e_bad_field_with_req_recovered(kind, obj, req):
    err = request_error([kind, body(obj)])
    assert err.code is ErrorCode.BAD_FIELD
    assert err.req == req
    # msgspec's explanation names the field: "Expected `int` >= 1 - at `$.minutes`" for a wrong
    # value of a field the body has, "Object missing required field `user`" for one it lacks.
    wrong = re.fullmatch(r"Expected .* - at `\$\.(\w+)(\[0\])?`", err.message)
    missing = re.fullmatch(r"Object missing required field `(\w+)`", err.message)
    names = {f.encode_name for f in msgspec.structs.fields(REQUEST_TYPES[kind])}
    if wrong:
        assert wrong.group(1) in names and wrong.group(1) in obj, err.message
    else:
        assert missing and missing.group(1) in names and missing.group(1) not in obj, err.message


@pytest.mark.parametrize(
    "kind, obj",
    [
        (b"ping", {"req": 0}),
        (b"ping", {"req": MAX_REQ}),
        (b"ping", {"req": -0}),
        (b"hello", {"req": 1, "version": 2}),  # a version mismatch is E_VERSION at the broker, not a field error
        (b"hello", {"req": 1, "version": 1, "client": "c" * 200}),
        (b"register", {"req": 2, "version": 1, "user": "a" * 64, "password": "p" * 4096}),
        (b"register", {"req": 2, "version": 1, "user": "x", "password": ""}),  # rules are the broker's, not the decoder's
        (b"broadcast", {"req": 7, "id": "x", "text": ""}),
        (b"broadcast", {"req": 7, "id": "😀" * 64, "text": "t" * 100_000}),
        (b"send", {"req": 8, "id": "a", "to": ["bob", "bob"], "text": "hi"}),
        (b"history", {"req": 14, "after": 0, "limit": 10_000}),
        (b"history", {"req": 14, "after": MAX_REQ}),
    ],
)
def test_values_at_the_edges_are_accepted(kind, obj):
    decoded_kind, decoded = decode_request([kind, body(obj)])
    assert decoded_kind == kind
    assert decoded.req == obj["req"]


def test_duplicate_keys_last_one_wins():
    # Documented as "do not send duplicate keys"; this pins the current behaviour.
    assert decode_request([b"ping", b'{"req": 5, "req": 6}']) == (b"ping", m.Ping(6))


@pytest.mark.parametrize(
    "kind, obj",
    [
        (b"history", {"req": 14, "after": 2**64}),
        (b"history", {"req": 14, "after": MAX_REQ + 1}),
        (b"ack", {"req": 15, "ids": [2**64]}),
        (b"ack", {"req": 15, "ids": [-1]}),
    ],
)
def test_unbounded_integers_are_e_bad_field(kind, obj):
    err = request_error([kind, body(obj)])
    assert err.code is ErrorCode.BAD_FIELD
    assert err.req == obj["req"]


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DEEP_CASES = {  # case -> (decoding, the error code)
    "request-unknown-field": (lambda: decode_request([b"ping", b'{"req": 1, "x": ' + _deep(5000) + b"}"]), ErrorCode.BAD_JSON),
    "request-bad-field": (lambda: decode_request([b"hello", b'{"req": 1, "version": "x", "x": ' + _deep(5000) + b"}"]),
                          ErrorCode.BAD_JSON),
    "request-unknown-type": (lambda: decode_request([b"nope", _deep(5000)]), ErrorCode.UNKNOWN_TYPE),
    "push-reply": (lambda: decode_push([b"reply", _deep(5000)]), ErrorCode.BAD_JSON),
    "push-msg": (lambda: decode_push([b"msg", b'{"id": 1, "from": "a", "x": ' + _deep(5000) + b"}"]), ErrorCode.BAD_JSON),
    "event": (lambda: decode_event([b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast", "user": "a", "x": ' + _deep(5000) + b"}"]),
              ErrorCode.BAD_JSON),
}


@pytest.mark.parametrize("case", list(DEEP_CASES))
def test_deeply_nested_json_is_a_protocol_error(case):
    decode, code = DEEP_CASES[case]
    with pytest.raises(ProtocolError) as info:
        decode()
    assert info.value.code is code


def test_moderately_nested_unknown_field_is_ignored():
    assert decode_request([b"ping", b'{"req": 1, "x": ' + _deep(100) + b"}"]) == (b"ping", m.Ping(1))


# Bodies on which the typed decoder meets a wrong type before the syntax error (or depth limit) that
# makes them invalid JSON: E_BAD_JSON, not E_BAD_FIELD (docs section 8).
NOT_JSON_AFTER_WRONG_TYPE = {
    "250000-open-brackets": b"[" * 250_000,
    "10-open-brackets": b"[" * 10,
    "unterminated-array": b"[1,",
    "unterminated-object": b'{"req": "a",',
    "wrong-field-then-eof": b'{"req": 1, "version": "1"',
    "wrong-field-then-trailing-data": b'{"req": 1, "version": "1"} x',
    "wrong-field-then-syntax-error": b'{"req": 1, "version": 1.5, "x": [}',
    "float-out-of-range-then-eof": b"[1e400,",
    "huge-int-then-eof": b'{"req": "a", "x": ' + b"9" * 5000 + b",",
    "valid-but-too-deep": _deep(250_000),  # beyond any interpreter's recursion limit
    "wrong-field-and-too-deep": b'{"req": 1, "version": "1", "x": ' + _deep(250_000) + b"}",
}


@pytest.mark.parametrize("case", list(NOT_JSON_AFTER_WRONG_TYPE))
def test_invalid_json_is_e_bad_json_even_after_a_wrong_type(case):
    err = request_error([b"hello", NOT_JSON_AFTER_WRONG_TYPE[case]])
    assert err.code is ErrorCode.BAD_JSON
    assert err.req is None


@pytest.mark.parametrize("kind", list(ONE_PER_TYPE), ids=bytes.decode)
def test_open_brackets_are_e_bad_json_for_every_type(kind):
    err = request_error([kind, b"[" * 250_000])
    assert (err.code, err.req) == (ErrorCode.BAD_JSON, None)


@pytest.mark.parametrize(
    "raw, req",
    [
        (_deep(200), None),  # valid JSON within the depth limit, not an object
        (b"[1e400]", None),  # valid JSON: a number out of float range is not a syntax error
        (b'{"req": 5, "version": "1", "x": ' + _deep(200) + b"}", 5),
        (b'{"req": 5, "version": 1e400}', None),  # req is not read past a number out of range
        (b'{"req": 5, "version": 1, "client": 1, "x": ' + b"9" * 5000 + b"}", None),
    ],
)
def test_valid_json_of_the_wrong_shape_stays_e_bad_field(raw, req):
    err = request_error([b"hello", raw])
    assert (err.code, err.req) == (ErrorCode.BAD_FIELD, req)


@pytest.mark.parametrize(
    "decode, frames",
    [
        (decode_event, [b"bcast", b"[" * 250_000]),
        (decode_push, [b"msg", b"[" * 250_000]),
        (decode_push, [b"end", b'{"reason": 1,']),
        (decode_stored_event, b"[1,"),
    ],
)
def test_client_decoders_report_invalid_json_after_a_wrong_type(decode, frames):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert info.value.code is ErrorCode.BAD_JSON


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
                  "pub_heartbeat": 2.0, "dup": False}),
    ("logout", 4, {"session": True}),
    ("who", 5, {"users": ["alice", "bob"], "truncated": False}),
    ("last", 6, {"users": [], "truncated": True}),
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


# -- PUB events ---------------------------------------------------------------------------------------


def test_presence_events_are_the_specified_four():
    assert m.PRESENCE_EVENTS == ("login", "logout", "timeout", "lost")


ALL_EVENTS = [
    m.Event(seq=1, ts=1732170004.0, kind="bcast", user="alice", text="hello all", cid="6f1d"),
    m.Event(seq=2**40, ts=0.0, kind="bcast", user="bob", text="😀" * 1000),
] + [m.Event(seq=10 + i, ts=1732170000.0 + i, kind="presence", user="bob", event=e) for i, e in enumerate(m.PRESENCE_EVENTS)]


@pytest.mark.parametrize("event", ALL_EVENTS)
def test_events_round_trip_with_topic_equal_to_kind(event):
    frames = encode_event(event)
    assert frames[0] == event.kind.encode("ascii")
    assert frames[0] in (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE)
    assert decode_event(frames) == event
    assert decode_stored_event(frames[1]) == event
    assert decode_stored_event(encode_json(event)) == event


def test_event_literal_bodies_omit_defaults():
    assert json.loads(encode_event(ALL_EVENTS[2])[1]) == {
        "seq": 10, "ts": 1732170000.0, "kind": "presence", "user": "bob", "event": "login"}
    assert json.loads(encode_event(ALL_EVENTS[0])[1]) == {
        "seq": 1, "ts": 1732170004.0, "kind": "bcast", "user": "alice", "text": "hello all", "cid": "6f1d"}


def test_event_extra_fields_ignored_and_integer_ts_accepted():
    event = decode_event([b"bcast", b'{"seq": 3, "ts": 5, "kind": "bcast", "user": "a", "later": {"x": 1}}'])
    assert event == m.Event(seq=3, ts=5.0, kind="bcast", user="a")
    assert isinstance(event.ts, float)


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], ErrorCode.FRAMES),
        ([b"bcast"], ErrorCode.FRAMES),
        ([b"bcast", b"{}", b"{}"], ErrorCode.FRAMES),
        ([b"bcast", b""], ErrorCode.BAD_JSON),
        ([b"bcast", b"\xff"], ErrorCode.BAD_JSON),
        ([b"bcast", b"[]"], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"ts": 1, "kind": "bcast", "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "kind": "bcast", "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "ts": 1, "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "ts": 1, "kind": "chat", "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1.0, "ts": 1, "kind": "bcast", "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "ts": "1", "kind": "bcast", "user": "a"}'], ErrorCode.BAD_FIELD),
        ([b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast", "user": "a", "text": null}'], ErrorCode.BAD_FIELD),
    ],
)
def test_malformed_events(frames, code):
    with pytest.raises(ProtocolError) as info:
        decode_event(frames)
    assert info.value.code is code


@pytest.mark.parametrize("raw, code", [(b"", ErrorCode.BAD_JSON), (b"{", ErrorCode.BAD_JSON), (b"[]", ErrorCode.BAD_FIELD),
                                       (b'{"seq": 1}', ErrorCode.BAD_FIELD)])
def test_malformed_stored_events(raw, code):
    with pytest.raises(ProtocolError) as info:
        decode_stored_event(raw)
    assert info.value.code is code


def test_decode_events_from_dicts():
    dicts = [json.loads(encode_json(e)) for e in ALL_EVENTS]
    assert decode_events(dicts) == ALL_EVENTS
    assert decode_events([]) == []


@pytest.mark.parametrize(
    "value",
    [None, {"seq": 1}, "events", [{"seq": 1, "ts": 1.0, "kind": "bcast"}], [{"seq": 1, "ts": 1.0, "kind": "other", "user": "a"}],
     [1, 2]],
)
def test_decode_events_rejects_non_events(value):
    with pytest.raises(ProtocolError) as info:
        decode_events(value)
    assert info.value.code is ErrorCode.BAD_FIELD


def test_encode_json_matches_msgspec():
    assert encode_json({"a": [1, 2.5, None]}) == b'{"a":[1,2.5,null]}'
    assert encode_json(ALL_EVENTS[0]) == msgspec.json.encode(ALL_EVENTS[0])


# -- the spec file names everything the code defines ------------------------------------------------


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_mentions_every_type_code_reason_and_event():
    text = DOC.read_text(encoding="utf-8")
    for kind in REQUEST_TYPES:
        assert re.search(rf'\[b"{kind.decode()}",\s+\{{"req": ', text)  # a literal example of each request
    for code in ErrorCode:
        assert f"`{code.value}`" in text
    for reason in m.END_REASONS:
        assert f"`{reason}`" in text
    for event in m.PRESENCE_EVENTS:
        assert f'"{event}"' in text
    for fragment in ("4119", "4121", "65536", "2^53", "10080", "10000", "1..64", "1..100", "1..1000",
                     "[A-Za-z0-9]{3,32}", "CURVE", "SHA256:", "Z85", "welcome.", '[b"hb"'):
        assert fragment in text
    from zmq_chat.broker.config import Config
    assert f"**{Config().max_msg_bytes} bytes" in text  # the ROUTER's ZMQ_MAXMSGSIZE as specified


def documented_reply_fields() -> dict[str, set[str]]:
    """docs/protocol.md 6.1: request type -> the ok reply fields its row lists (besides req and
    status; the fields of nested objects such as send's busy entries left out)."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("### 6.1"):text.index("### 6.2")]
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", table, re.M)
    return {kind: set(re.findall(r"`(\w+)` (?:int|str|bool|float|array|object)", re.sub(r"\{[^}]*\}", "", cell)))
            for kind, cell in rows}


def spec_request_examples() -> list[tuple[bytes, dict]]:
    """docs/protocol.md section 5, "Literal examples (one per type)": (type, body) per line."""
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("Literal examples (one per type):"):text.index("## 6. Replies")]
    return [(kind.encode(), json.loads(obj)) for kind, obj in re.findall(r'^\[b"(\w+)",\s+(\{.*\})\]$', block, re.M)]


def spec_session() -> list[tuple[str, bytes, dict]]:
    """The example session of docs/protocol.md: (direction C>, <C or <S; frame 0; body) per message,
    bodies that continue on indented lines joined."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index('C> [b"hello"')
    out, current = [], None
    for line in text[start:text.index("```", start)].splitlines():
        entry = re.match(r'^(?:B  )?(C>|<C|<S) \[b"([^"]+)", (.*)$', line)
        if entry:
            current = list(entry.groups())
        elif current is not None and line.startswith(" "):
            current[2] += line.strip()
        else:
            continue
        try:
            obj = json.loads(current[2].rstrip()[:-1])  # without the closing ]
        except json.JSONDecodeError:
            continue  # the body goes on on the next line
        out.append((current[0], current[1].encode(), obj))
        current = None
    return out


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_request_examples_name_every_field_of_every_request():
    examples = spec_request_examples()
    assert [kind for kind, _ in examples] == list(REQUEST_TYPES)
    for kind, obj in examples:
        decoded_kind, request = decode_request([kind, body(obj)])
        assert decoded_kind == kind
        # every field of the struct, under the name and with the value of the example: a field
        # renamed (or added) in protocol.messages but not in the spec fails here
        assert {f.encode_name: getattr(request, f.name) for f in msgspec.structs.fields(type(request))} == obj


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_example_session_decodes_and_encodes_back_to_the_same_fields():
    session = spec_session()
    documented = documented_reply_fields()
    asked: dict[int, str] = {}  # req -> request type
    for direction, kind, obj in session:
        raw = body(obj)
        if direction == "C>" and kind in REQUEST_TYPES:
            _, request = decode_request([kind, raw])
            assert json.loads(encode_request(request)[1]) == obj
            asked[obj["req"]] = kind.decode()
        elif direction == "C>":  # the unknown type: the next reply is this error, word for word
            err = request_error([kind, raw])
            asked[obj["req"]] = {"code": err.code.value, "message": err.message, "req": err.req}
        elif kind == wire.REPLY:
            assert decode_push([kind, raw]) == (kind, obj)
            question = asked[obj["req"]]
            if isinstance(question, dict):
                assert {k: obj[k] for k in ("code", "message", "req")} == question
            elif obj["status"] == "ok":
                assert set(obj) - {"req", "status"} == documented[question], question
                for event in obj.get("events", []):
                    assert json.loads(encode_json(decode_events([event])[0])) == event
            else:  # docs 6.2: a send some recipients did not get
                partial_send = {"req", "status", "code", "message", "unknown", "full", "ids", "ts", "busy", "dup"}
                assert (question, set(obj)) == ("send", partial_send)
        elif kind == wire.MSG:
            _, msg = decode_push([kind, raw])
            assert json.loads(encode_msg(msg)[1]) == obj
        elif kind in (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE):
            frames = encode_event(decode_event([kind, raw]))
            assert frames[0] == kind and json.loads(frames[1]) == obj
        else:
            assert (kind == wire.TOPIC_HEARTBEAT or kind.startswith(wire.WELCOME_PREFIX)) and set(obj) == {"seq", "ts"}
    kinds = [kind for _, kind, _ in session]
    assert {b"hello", b"login", b"history", b"ack", b"send", b"broadcast", b"ping", b"lats", b"logout",
            b"reply", b"msg", b"bcast", b"hb"} <= set(kinds) and kinds.count(b"reply") == 9
