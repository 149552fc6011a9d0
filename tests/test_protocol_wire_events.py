"""Unit tests of the PUB events of protocol.wire and protocol.messages (docs/protocol.md section 7):
topics, round trips, malformed events, stored events and lists of event objects (decode_events).

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
from zmq_chat.protocol.wire import decode_event, decode_events, decode_stored_event, encode_event, encode_json


# -- PUB events ---------------------------------------------------------------------------------------


def test_presence_events_are_the_specified_six():
    assert m.PRESENCE_EVENTS == ("login", "logout", "timeout", "lost", "busy", "available")


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
