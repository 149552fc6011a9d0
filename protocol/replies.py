"""Typed reply bodies: one msgspec Struct per ok reply kind and one for error replies
(docs/protocol.md section 6: 6.1 ok reply fields, 6.2 error replies with extra fields).

A reply travels as `[b"reply", body]` on the ROUTER -> DEALER channel (section 2); `body` is one
JSON object holding `req` (the request's id, null on some errors) and `status` ("ok" or "error").
An ok reply's other fields depend on the request word it answers (table 6.1), which the body
does not name: the client knows it from the request it sent with that `req`. So decoding takes
two steps, both with cached msgspec decoders:

    head = decode_head(body)                        # ReplyHead(req, status); ProtocolError if bad
    word = pending_requests[head.req]               # e.g. b"who", kept by the caller
    reply = decode_reply(word, body, head)          # UsersReply(...) or ErrorReply(...)

Every field an ok reply lists in 6.1 is required; unknown fields are ignored (section 3). The extra
fields of an error reply (6.2) are present only in the cases that carry them: absent ones are
`msgspec.UNSET` (falsy; compare `reply.retry_after is not UNSET` or use `reply.ids or {}`).

The broker builds the same Structs and encodes them with `encode_reply`. Every ok reply encodes
all its fields (`{"req", "status": "ok", ...}` in field order); an ErrorReply encodes only the
extra fields that were set. No zmq and no I/O here.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType
from . import messages as m
from .errors import ErrorCode, ProtocolError
from .limits import MAX_COUNTER
from .wire import REPLY

__all__ = [
    "REPLY_TYPES",
    "UNSET",
    "AckReply",
    "BroadcastReply",
    "BusyRecipient",
    "BusyReply",
    "EmptyReply",
    "ErrorReply",
    "HelloReply",
    "HistoryReply",
    "IdleReply",
    "LoginReply",
    "LogoutReply",
    "PingReply",
    "RegisterReply",
    "Reply",
    "ReplyHead",
    "SendReply",
    "StatusReply",
    "UsersReply",
    "decode_head",
    "decode_reply",
    "encode_reply",
]

ReqId = m.ReqId
"""`req`: the request's id, int 0..2**53 (section 3, "Common values")."""
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
"""An event sequence number, 0 meaning "before the first event" (sections 3 and 9.4)."""
MailId = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNTER)]
"""A broker-assigned private message id, 1..2**53 (section 3)."""
Count = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
"""A duration in seconds (float; a JSON integer is accepted and read as float, section 3)."""


class Reply(msgspec.Struct, kw_only=True):
    """Base of every reply body (section 6): `req` (int 0..2**53, or None when the broker could
    not read the request's id), `status` ("ok" here, "error" in ErrorReply). `ok` is a class
    constant: True for every ok reply class, False for ErrorReply."""

    ok: ClassVar[bool] = True
    req: ReqId | None
    status: Literal["ok"] = "ok"


class ReplyHead(msgspec.Struct):
    """The two fields every reply has (section 6), read before the request word is known:
    req (int 0..2**53 or None), status ("ok" or "error")."""

    req: ReqId | None
    status: Literal["ok", "error"]


class HelloReply(Reply, kw_only=True):
    """Ok `hello` (6.1): version (int, 1), broker (str, "chat-broker"), max_message_chars (int,
    characters, rule 4.3), min_password_chars (int, characters, rule 4.2), curve (bool: the
    transport is encrypted)."""

    version: int
    broker: str
    max_message_chars: Count
    min_password_chars: Count
    curve: bool


class RegisterReply(Reply, kw_only=True):
    """Ok `register` (6.1): user (str, the account created; not logged in), dup (bool: a retry
    of this client key's registration within the last hour, 9.2)."""

    user: str
    dup: bool


class LoginReply(Reply, kw_only=True):
    """Ok `login` (6.1): user (str); pub_port (int, the PUB port on the same host); seq (int, the
    newest event seq now); since (int, ask `history` after this to catch up, 9.1); since_ts
    (float, epoch seconds, session start); heartbeat_interval, heartbeat_timeout, idle_timeout,
    pub_heartbeat (float seconds, 9.5 and 7.4); max_message_chars (int); dup (bool: a retried
    login answered with the first reply's fields, 9.2); epoch (str, the event log's id, 9.4: a
    different epoch than last time means the old log and its numbers are gone). The client's
    session parameters."""

    user: str
    pub_port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    seq: Seq
    since: Seq
    since_ts: float
    heartbeat_interval: Seconds
    heartbeat_timeout: Seconds
    idle_timeout: Seconds
    max_message_chars: Count
    pub_heartbeat: Seconds
    dup: bool
    epoch: str


class LogoutReply(Reply, kw_only=True):
    """Ok `logout` (6.1): session (bool: True when a session ended, False when there was none)."""

    session: bool


class UsersReply(Reply, kw_only=True):
    """Ok `who` and `last` (6.1): users (list of str, sorted in code point order), busy (list of
    str: those of `users` online and busy, sorted), truncated (bool: the list was cut to fit 256 KiB)."""

    users: list[str]
    busy: list[str]
    truncated: bool


class BroadcastReply(Reply, kw_only=True):
    """Ok `broadcast` (6.1): seq (int, the event's sequence number), ts (float, epoch seconds),
    dup (bool: this send id was already stored; the fields are those of the first reply, 9.2)."""

    seq: Seq
    ts: float
    dup: bool


class BusyRecipient(msgspec.Struct):
    """An element of `busy` in a send reply (6.1): user (str), text (str, the auto-reply; may be
    "" and may be shortened so that one reply's texts total at most 2000 characters)."""

    user: str
    text: str


class SendReply(Reply, kw_only=True):
    """Ok `send` (6.1): ids (dict {recipient name: mail id int}), ts (float, epoch seconds), busy
    (list of BusyRecipient, listed only in this sender's first send of a busy period), dup
    (bool, as for broadcast)."""

    ids: dict[str, MailId]
    ts: float
    busy: list[BusyRecipient]
    dup: bool


class BusyReply(Reply, kw_only=True):
    """Ok `busy` (6.1): text (str, the auto-reply now set)."""

    text: str


class IdleReply(Reply, kw_only=True):
    """Ok `idle` (6.1): held (int, mailbox messages not yet pushed in this session; they follow
    this reply)."""

    held: Count


class EmptyReply(Reply, kw_only=True):
    """Ok `hide` and `appear` (6.1): no fields besides req and status."""


class StatusReply(Reply, kw_only=True):
    """Ok `status` (6.1): user (str), busy (bool), busy_text (str), hidden (bool), since_ts
    (float, epoch seconds, session start)."""

    user: str
    busy: bool
    busy_text: str
    hidden: bool
    since_ts: float


class HistoryReply(Reply, kw_only=True):
    """Ok `history` (6.1, 9.4): events (list of protocol.messages.Event, ascending seq), seq
    (int, the newest seq now), complete (bool: nothing is missing between `after` and `seq`).
    The broker may fill `events` with msgspec.Raw bodies of stored Events (they encode as is)."""

    events: list[m.Event]
    seq: Seq
    complete: bool


class AckReply(Reply, kw_only=True):
    """Ok `ack` (6.1): removed (int, how many of the ids this ack deleted from the mailbox)."""

    removed: Count


class PingReply(Reply, kw_only=True):
    """Ok `ping` (6.1): ts (float, broker clock, epoch seconds), session (bool: whether this
    connection has a session; False: log in again)."""

    ts: float
    session: bool


class ErrorReply(Reply, kw_only=True):
    """An error reply to any request (section 6, 6.2; codes in section 8).

    Fields: code (str, an ErrorCode value; compare with `ErrorCode.X`, which is a str), message
    (str, for people). The extra fields below are UNSET unless the case of 6.2 applies:
        retry_after: float seconds (E_BLOCKED, E_RATE_LIMITED, E_OVERLOADED).
        attempts_left: int (E_BAD_CREDENTIALS: wrong passwords left before a block).
        ids, ts, busy, dup: as in SendReply, for the recipients who did get the message.
        unknown, full: list of str (send: names without an account / with a full mailbox).
    Encoded in this field order (the order of the worked example, section 10).
    """

    ok: ClassVar[bool] = False
    status: Literal["error"] = "error"  # type: ignore[assignment]
    code: str
    message: str
    retry_after: Seconds | UnsetType = UNSET
    attempts_left: Count | UnsetType = UNSET
    ids: dict[str, MailId] | UnsetType = UNSET
    ts: float | UnsetType = UNSET
    busy: list[BusyRecipient] | UnsetType = UNSET
    unknown: list[str] | UnsetType = UNSET
    full: list[str] | UnsetType = UNSET
    dup: bool | UnsetType = UNSET

    @classmethod
    def of(cls, req: int | None, code: ErrorCode | str, message: str, fields: dict[str, Any] | None = None) -> ErrorReply:
        """Build from a code, a message and the extra fields of a ProtocolError (a dict whose keys are
        the field names above). Raises TypeError for a key that is not a field of 6.2."""
        return cls(req=req, code=code.value if isinstance(code, ErrorCode) else code, message=message,
                   **(fields or {}))


REPLY_TYPES: dict[bytes, type[Reply]] = {
    b"hello": HelloReply,
    b"register": RegisterReply,
    b"login": LoginReply,
    b"logout": LogoutReply,
    b"who": UsersReply,
    b"last": UsersReply,
    b"broadcast": BroadcastReply,
    b"send": SendReply,
    b"busy": BusyReply,
    b"idle": IdleReply,
    b"hide": EmptyReply,
    b"appear": EmptyReply,
    b"status": StatusReply,
    b"history": HistoryReply,
    b"ack": AckReply,
    b"ping": PingReply,
}
"""Request word (frame 0 of the request) -> the Struct of its ok reply (table 6.1)."""

_encoder = msgspec.json.Encoder()
_head_decoder = msgspec.json.Decoder(ReplyHead)
_error_decoder = msgspec.json.Decoder(ErrorReply)
_ok_decoders: dict[bytes, msgspec.json.Decoder] = {}


def _ok_decoder(word: bytes) -> msgspec.json.Decoder:
    """The cached decoder of the ok reply to `word`. Raises ValueError for an unknown word."""
    decoder = _ok_decoders.get(word)
    if decoder is None:
        cls = REPLY_TYPES.get(word)
        if cls is None:
            raise ValueError(f"no reply type for request word {word[:32]!r}")
        decoder = _ok_decoders[word] = msgspec.json.Decoder(cls)
    return decoder


def _decode(decoder: msgspec.json.Decoder, body: Any) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"malformed reply: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "a reply body is not a UTF-8 JSON object") from None


def decode_head(body: Any) -> ReplyHead:
    """Read `req` and `status` of a reply body (bytes or any buffer: bytearray, memoryview, zmq.Frame).

    Raises:
        ProtocolError(E_BAD_JSON): not valid UTF-8 JSON.
        ProtocolError(E_BAD_FIELD): not an object, `req` missing or not int 0..2**53/null, or
            `status` missing or not "ok"/"error".
    """
    return _decode(_head_decoder, body)


def decode_reply(word: bytes, body: Any, head: ReplyHead | None = None) -> Reply:
    """Decode the body of the reply to a request of type `word` (e.g. b"who").

    Args:
        word: the request word (section 5) of the request this reply answers.
        body: the reply body (bytes or any buffer).
        head: `decode_head(body)` when the caller already has it (saves one pass over the body).
    Returns:
        the ok Struct of REPLY_TYPES[word] for status "ok", ErrorReply for status "error".
    Raises:
        ProtocolError(E_BAD_JSON / E_BAD_FIELD): a malformed reply (wrong type, missing required
            field, value out of range).
        ValueError: `word` is not a request word.
    """
    if head is None:
        head = decode_head(body)
    decoder = _ok_decoder(word) if head.status == "ok" else _error_decoder
    return _decode(decoder, body)


def encode_reply(reply: Reply) -> tuple[bytes, bytes]:
    """Encode a reply for the ROUTER: returns `(b"reply", body)` (the routing id is the caller's).

    Ok replies encode every field, `req` and `status` first; an ErrorReply omits its UNSET fields.
    """
    return REPLY, _encoder.encode(reply)
