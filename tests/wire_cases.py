"""Shared cases and helpers of the protocol.wire tests (tests/test_protocol_wire_*.py): one valid
request of every shape, the body of a JSON object, and the ProtocolError a decoder raises.

Pure: no zmq, no sockets. Frames are lists of bytes as a DEALER/ROUTER/SUB would see them.
"""

from __future__ import annotations

import json

import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.wire import REQUEST_TYPES, TYPE_OF, decode_push, decode_request

MAX_REQ = 2**53
"""The largest `req` (docs/protocol.md section 3)."""


def body(obj) -> bytes:
    """`obj` as the JSON bytes of a frame (json.dumps, UTF-8)."""
    return json.dumps(obj).encode("utf-8")


def request_error(frames) -> ProtocolError:
    """The ProtocolError that decode_request(frames) raises (the test fails when it raises none)."""
    with pytest.raises(ProtocolError) as info:
        decode_request(frames)
    return info.value


def push_error(frames) -> ProtocolError:
    """The ProtocolError that decode_push(frames) raises (the test fails when it raises none)."""
    with pytest.raises(ProtocolError) as info:
        decode_push(frames)
    return info.value


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


# One valid request of each type: the body rules must hold whatever the type.
ONE_PER_TYPE = {kind: next(r for r in REQUESTS if TYPE_OF[type(r)] == kind) for kind in REQUEST_TYPES}
