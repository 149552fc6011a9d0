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

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError

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

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in REQUEST_TYPES.items()}
_any_decoder = msgspec.json.Decoder()
_event_decoder = msgspec.json.Decoder(m.Event)
_msg_decoder = msgspec.json.Decoder(m.PrivateMessage)
_end_decoder = msgspec.json.Decoder(m.End)


def _guess_req(body: bytes) -> int | None:
    """Best-effort read of `req` from a body that failed typed decoding (error path only)."""
    try:
        obj = _any_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    req = obj.get("req") if isinstance(obj, dict) else None
    return req if isinstance(req, int) and not isinstance(req, bool) and 0 <= req <= 2**53 else None


def decode_request(frames: list[bytes]) -> tuple[bytes, m.Request]:
    """Decode a request as the broker sees it after the routing id: `[type, body]`.

    Returns:
        (type, request): the type name (bytes) and the typed body.
    Raises:
        ProtocolError(E_FRAMES): not exactly 2 frames.
        ProtocolError(E_UNKNOWN_TYPE): frame 0 is not a request type.
        ProtocolError(E_BAD_JSON): body is not a UTF-8 JSON object.
        ProtocolError(E_BAD_FIELD): a field is missing, of the wrong type, or out of range.
        `req` is set on the error when the body still carried a readable request id.
    """
    if len(frames) != 2:
        req = _guess_req(frames[-1]) if frames else None
        raise ProtocolError(ErrorCode.FRAMES, f"a request has 2 frames [type, body], got {len(frames)}", req)
    kind, body = frames
    decoder = _decoders.get(bytes(kind))
    if decoder is None:
        shown = bytes(kind)[:32].decode("ascii", "replace")
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type '{shown}'", _guess_req(body))
    try:
        return bytes(kind), decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, str(exc), _guess_req(body)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "the body is not a UTF-8 JSON object", None) from None


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


def _decode(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "the body is not a UTF-8 JSON object") from None


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
