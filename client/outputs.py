"""What client.core.ClientCore hands back to its driver: replies, private messages, events, missed
events, the end of a session, a lost broker (`Output`), and the session parameters of a login."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True)
class ReplyReceived:
    """The reply to a request made with `ClientCore.request`.

    Fields: req (int, the request id), type (bytes, the request type, e.g. b"send"), body (dict, the
    decoded reply: "req", "status" "ok"|"error", errors add "code" and "message").
    """

    req: int
    type: bytes
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True for status "ok"."""
        return self.body.get("status") == "ok"

    @property
    def code(self) -> str:
        """The error code string (e.g. "E_UNKNOWN_USER"), "" for an ok reply."""
        return str(self.body.get("code", ""))

    @property
    def message(self) -> str:
        """The broker's error message, "" for an ok reply."""
        return str(self.body.get("message", ""))


@dataclass(frozen=True)
class MessageReceived:
    """A private message seen for the first time in this session; its ack is already queued."""

    message: m.PrivateMessage


@dataclass(frozen=True)
class EventReceived:
    """A broadcast or presence event, delivered once and in sequence order.

    `catchup` is True when the event happened before this session's login (seq <= login seq), i.e.
    it was fetched by the catch-up `history` ("while you were away").
    """

    event: m.Event
    catchup: bool = False


@dataclass(frozen=True)
class EventsMissed:
    """Events after seq `after` and before seq `resumed` are gone from the broker (pruned history)."""

    after: int
    resumed: int


@dataclass(frozen=True)
class SessionEnded:
    """The session is over: an `end` push (reason replaced | idle_timeout | heartbeat_timeout |
    shutdown) or reason "not_logged_in" when the broker answered E_NOT_LOGGED_IN to a request made
    in a session (the broker restarted or forgot it). `message` is prose for the user."""

    reason: str
    message: str


@dataclass(frozen=True)
class BrokerLost:
    """A request has waited `waited` seconds (more than heartbeat_timeout) for its reply."""

    waited: float


Output = Union[ReplyReceived, MessageReceived, EventReceived, EventsMissed, SessionEnded, BrokerLost]
"""What `receive_dealer`, `receive_event` and `tick` return, in the order things happened."""


@dataclass
class Session:
    """Session parameters from the ok `login` reply (see the contract): user (str), pub_port (int),
    seq (int, newest event seq at login), since (int, catch-up start), since_ts (float, epoch s),
    heartbeat_interval / heartbeat_timeout / idle_timeout (float seconds), max_message_chars (int)."""

    user: str
    pub_port: int
    seq: int
    since: int
    since_ts: float = 0.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    idle_timeout: float = 1800.0
    max_message_chars: int = 1000
    pub_heartbeat: float = 2.0

    @classmethod
    def from_reply(cls, body: dict[str, Any]) -> "Session":
        """Build from an ok login reply dict. Raises ProtocolError(E_BAD_FIELD) if a field is bad."""
        try:
            return cls(
                user=str(body["user"]),
                pub_port=int(body["pub_port"]),
                seq=int(body.get("seq", 0)),
                since=int(body.get("since", body.get("seq", 0))),
                since_ts=float(body.get("since_ts", 0.0)),
                heartbeat_interval=float(body.get("heartbeat_interval", 5.0)),
                heartbeat_timeout=float(body.get("heartbeat_timeout", 15.0)),
                idle_timeout=float(body.get("idle_timeout", 1800.0)),
                max_message_chars=int(body.get("max_message_chars", 1000)),
                pub_heartbeat=float(body.get("pub_heartbeat", 2.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"bad login reply: {exc!r}") from None
