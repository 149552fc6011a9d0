"""Unit tests of the requests of protocol.wire and protocol.messages (docs/protocol.md sections 2-5
and 8): the 16 types, round trips, wrong frame counts, unknown types, bodies that are not UTF-8 JSON.

Pure: no zmq, no sockets. Frames are lists of bytes as a DEALER/ROUTER/SUB would see them; the shared
cases are in tests/wire_cases.py.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.wire import REQUEST_TYPES, TYPE_OF, decode_event, decode_push, decode_request, encode_request
from tests.wire_cases import ONE_PER_TYPE, REQUESTS, body, request_error


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


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips(request_):
    frames = encode_request(request_)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    assert frames[0] == TYPE_OF[type(request_)]
    obj = json.loads(frames[1].decode("utf-8"))
    fields = msgspec.structs.fields(type(request_))
    # each field under its JSON name (the names are pinned by tests/test_protocol_doc.py), value for value;
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
