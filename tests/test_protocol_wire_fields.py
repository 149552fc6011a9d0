"""Unit tests of the request fields of protocol.wire and protocol.messages (docs/protocol.md sections 4
and 8): wrong fields (E_BAD_FIELD, the req recovered), values at the edges, deep nesting, and invalid
JSON behind a wrong type (E_BAD_JSON).

Pure: no zmq, no sockets. Frames are lists of bytes as a DEALER/ROUTER/SUB would see them; the shared
cases are in tests/wire_cases.py.
"""

from __future__ import annotations

import re

import msgspec
import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.wire import REQUEST_TYPES, decode_event, decode_push, decode_request, decode_stored_event
from tests.wire_cases import MAX_REQ, ONE_PER_TYPE, body, request_error


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
