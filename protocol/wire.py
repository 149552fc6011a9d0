"""Encoding and decoding of ZeroMQ multipart messages (docs/protocol.md, "Frames").

Frame layouts (every frame is bytes; bodies are UTF-8 JSON objects):

    client DEALER -> broker ROUTER   [type, body]            broker sees [routing_id, type, body]
    broker ROUTER -> client DEALER   [routing_id, kind, body] client sees [kind, body]
                                     kind: b"reply" | b"msg" | b"end"
    broker PUB    -> client SUB      [topic, body]           topic: b"bcast" | b"presence"

No function here touches a socket; the routing id frame is the caller's business.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import messages as m
from .errors import ErrorCode, ProtocolError
from .limits import MAX_COUNTER

REQUEST_TYPES: dict[bytes, type[m.Request]] = {
    b"hello": m.Hello,
    b"register": m.Register,
    b"login": m.Login,
    b"logout": m.Logout,
    b"who": m.Who,
    b"last": m.Last,
    b"broadcast": m.Broadcast,
    b"send": m.Send,
    b"busy": m.Busy,
    b"idle": m.Idle,
    b"hide": m.Hide,
    b"appear": m.Appear,
    b"status": m.Status,
    b"history": m.History,
    b"ack": m.Ack,
    b"ping": m.Ping,
}
"""Frame 0 of a request -> the Struct its body decodes to."""

TYPE_OF: dict[type[m.Request], bytes] = {cls: name for name, cls in REQUEST_TYPES.items()}

REPLY = b"reply"
MSG = b"msg"
END = b"end"
TOPIC_BCAST = b"bcast"
TOPIC_PRESENCE = b"presence"
TOPIC_HEARTBEAT = b"hb"
"""PUB heartbeat topic: [b"hb", {"seq", "ts"}] every pub_heartbeat seconds (docs 7.4)."""
WELCOME_PREFIX = b"welcome."
"""A client's welcome topic is b"welcome." + 32 lowercase hex digits; subscribing to it makes the
broker publish [topic, {"seq", "ts"}] once the subscription is active (docs 7.4)."""

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in REQUEST_TYPES.items()}
_any_decoder = msgspec.json.Decoder()
_event_decoder = msgspec.json.Decoder(m.Event)
_msg_decoder = msgspec.json.Decoder(m.PrivateMessage)
_end_decoder = msgspec.json.Decoder(m.End)


_NOT_JSON = object()
"""What `_parse_untyped` returns for a body that is not valid JSON."""

_BAD_JSON_MESSAGE = "the body is not a UTF-8 JSON object"
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)


def _parse_untyped(body: bytes) -> Any:
    """Decode `body` as any JSON value to check its syntax: the value, or `_NOT_JSON` when invalid.

    Invalid: a syntax error, trailing data, invalid UTF-8, a lone surrogate escape (in any string,
    ignored fields and keys included), or nesting deeper than the decoder's recursion limit (set by
    the interpreter: about 1000 levels on CPython 3.11), e.g. 250,000 '[' or 5000 nested empty arrays.
    A number the untyped decoder cannot hold (1e400, an int of over 4300 digits) is valid JSON: the
    decoder stops there, so the syntax of the whole body is then checked by skipping it (value None).
    """
    try:
        return _any_decoder.decode(body)
    except msgspec.ValidationError:
        return None if _skips(body) else _NOT_JSON
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _NOT_JSON


def _skips(body: bytes) -> bool:
    """True when msgspec can skip `body` as one JSON value (syntax only; strings are not decoded)."""
    try:
        _raw_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True


def _req_of(obj: Any) -> int | None:
    """`obj["req"]` when `obj` is a dict whose `req` is a valid request id (int 0..2**53), else None."""
    req = obj.get("req") if isinstance(obj, dict) else None
    return req if isinstance(req, int) and not isinstance(req, bool) and 0 <= req <= MAX_COUNTER else None


def _guess_req(body: bytes) -> int | None:
    """Best-effort read of `req` from a body that failed typed decoding (error path only)."""
    return _req_of(_parse_untyped(body))


def decode_request(frames: list[bytes]) -> tuple[bytes, m.Request]:
    """Decode a request as the broker sees it after the routing id: `[type, body]`.

    Frames are bytes or any buffer (bytearray, memoryview, zmq.Frame); the body is a UTF-8 JSON object.
    Returns:
        (type, request): the type name (bytes) and the typed body.
    Raises:
        ProtocolError(E_FRAMES): not exactly 2 frames.
        ProtocolError(E_UNKNOWN_TYPE): frame 0 is not a request type.
        ProtocolError(E_BAD_JSON): the body is not valid UTF-8 JSON: empty, a syntax error, trailing
            data, invalid UTF-8 or a lone surrogate escape anywhere (unknown fields and keys
            included), or nested deeper than the decoder's recursion limit (about 1000 levels on
            CPython 3.11), even when the JSON is otherwise valid. `req` is always None.
        ProtocolError(E_BAD_FIELD): valid JSON but not an object, or a field is missing, of the wrong
            type, or out of range.
        `req` is set on E_FRAMES, E_UNKNOWN_TYPE and E_BAD_FIELD when the body still carried a readable
        request id.
    """
    if len(frames) != 2:
        req = _guess_req(frames[-1]) if frames else None
        raise ProtocolError(ErrorCode.FRAMES, f"a request has 2 frames [type, body], got {len(frames)}", req)
    kind, body = frames
    decoder = _decoders.get(bytes(kind))
    if decoder is None:
        shown = bytes(kind)[:32].decode("ascii", "replace")
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type '{shown}'", _guess_req(body))
    return bytes(kind), _decode(decoder, body, True)


def encode_request(request: m.Request) -> list[bytes]:
    """Encode a request for a DEALER: returns `[type, body]`. Raises KeyError for a non-request."""
    return [TYPE_OF[type(request)], _encoder.encode(request)]


def encode_ok(req: int | None, fields: dict[str, Any] | None = None) -> list[bytes]:
    """Encode an ok reply: `[b"reply", {"req": req, "status": "ok", **fields}]`.

    `fields` values may be JSON types or protocol Structs (e.g. a list of Event).
    """
    body: dict[str, Any] = {"req": req, "status": "ok"}
    if fields:
        body.update(fields)
    return [REPLY, _encoder.encode(body)]


def encode_error(
    req: int | None, code: ErrorCode, message: str, fields: dict[str, Any] | None = None
) -> list[bytes]:
    """Encode an error reply: `[b"reply", {"req", "status": "error", "code", "message", **fields}]`.

    `req` is null when the request id could not be read from the bad request.
    """
    body: dict[str, Any] = {"req": req, "status": "error", "code": code.value, "message": message}
    if fields:
        body.update(fields)
    return [REPLY, _encoder.encode(body)]


def encode_msg(msg: m.PrivateMessage) -> list[bytes]:
    """Encode a private-message push: `[b"msg", PrivateMessage]`."""
    return [MSG, _encoder.encode(msg)]


def encode_end(reason: str, message: str) -> list[bytes]:
    """Encode a session-end push: `[b"end", {"reason", "message"}]` (reasons: messages.END_REASONS)."""
    return [END, _encoder.encode(m.End(reason, message))]


def encode_event(event: m.Event) -> list[bytes]:
    """Encode a PUB event: `[topic, Event]` with topic b"bcast" or b"presence" (= event.kind)."""
    return [event.kind.encode("ascii"), _encoder.encode(event)]


def encode_json(value: Any) -> bytes:
    """Encode any JSON value or Struct to bytes (used for storing events)."""
    return _encoder.encode(value)


def decode_event(frames: list[bytes]) -> m.Event:
    """Decode a PUB message `[topic, body]` into an Event.

    Raises:
        ProtocolError(E_FRAMES / E_BAD_JSON / E_BAD_FIELD): malformed message from the broker.
    """
    if len(frames) != 2:
        raise ProtocolError(ErrorCode.FRAMES, f"an event has 2 frames [topic, body], got {len(frames)}")
    return _decode(_event_decoder, frames[1])


def decode_stored_event(body: bytes) -> m.Event:
    """Decode one Event body as stored in the broker's log. Raises ProtocolError on bad bytes."""
    return _decode(_event_decoder, body)


def _decode(decoder: msgspec.json.Decoder, body: bytes, echo_req: bool = False) -> Any:
    """Decode one body with `decoder` under docs/protocol.md sections 3 and 8 (see decode_request).

    `body` is bytes or any buffer. The valid path costs one UTF-8 decode on top of the typed decode
    (msgspec skips ignored fields without checking their UTF-8), plus one untyped decode when the
    body holds a `\\uD...` escape: a guard against a lone surrogate escape in an ignored field
    (msgspec 0.18 to 0.22 reject those when skipping too, but do not document it).
    Raises:
        ProtocolError(E_BAD_JSON, req None): not valid UTF-8 JSON (see `_parse_untyped`).
        ProtocolError(E_BAD_FIELD): valid JSON that `decoder` rejects; `req` is read from the body
            when `echo_req`, else None.
    """
    try:
        text = str(body, "utf-8")
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _field_error(body, str(exc), echo_req) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, _BAD_JSON_MESSAGE) from None
    if "\\" in text and _may_hold_surrogate_escape(text) and _parse_untyped(body) is _NOT_JSON:
        raise ProtocolError(ErrorCode.BAD_JSON, _BAD_JSON_MESSAGE)
    return value


def _may_hold_surrogate_escape(text: str) -> bool:
    """True when `text` holds `\\ud` or `\\uD`, the start of every surrogate escape (\\uD800..\\uDFFF)."""
    return "\\ud" in text or "\\uD" in text


def _field_error(body: bytes, message: str, echo_req: bool) -> ProtocolError:
    """The error for a body the typed decoder rejected: E_BAD_FIELD if it is valid JSON, else E_BAD_JSON.

    The typed decoder stops at the first wrong type, before it would see a later syntax error
    (e.g. 250,000 '[' fail as "expected object, got array"), so the syntax is checked here.
    """
    obj = _parse_untyped(body)
    if obj is _NOT_JSON:
        return ProtocolError(ErrorCode.BAD_JSON, _BAD_JSON_MESSAGE)
    return ProtocolError(ErrorCode.BAD_FIELD, message, _req_of(obj) if echo_req else None)


def decode_push(frames: list[bytes]) -> tuple[bytes, Any]:
    """Decode what a client DEALER receives: `[kind, body]`.

    Returns:
        (b"reply", dict) with at least "req" and "status" ("ok" or "error"; errors add "code", "message");
        (b"msg", PrivateMessage); or (b"end", End).
    Raises:
        ProtocolError(E_FRAMES / E_UNKNOWN_TYPE / E_BAD_JSON / E_BAD_FIELD): not a chat broker message.
    """
    if len(frames) != 2:
        raise ProtocolError(ErrorCode.FRAMES, f"a broker message has 2 frames [kind, body], got {len(frames)}")
    kind, body = bytes(frames[0]), frames[1]
    if kind == REPLY:
        obj = _decode(_any_decoder, body)
        if not isinstance(obj, dict) or obj.get("status") not in ("ok", "error") or "req" not in obj:
            raise ProtocolError(ErrorCode.BAD_FIELD, "a reply has 'req' and 'status' ok|error")
        return kind, obj
    if kind == MSG:
        return kind, _decode(_msg_decoder, body)
    if kind == END:
        return kind, _decode(_end_decoder, body)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown broker message kind {kind[:32]!r}")


def decode_events(value: Any) -> list[m.Event]:
    """Convert the `events` list of a decoded `history` reply (list of dicts) into Events.

    Raises:
        ProtocolError(E_BAD_FIELD): an element is not an Event.
    """
    try:
        return msgspec.convert(value, list[m.Event])
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, str(exc)) from None
