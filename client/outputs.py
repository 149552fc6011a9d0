"""What client.core.ClientCore hands back to its driver: replies, private messages, events, missed
events, the end of a session, a lost broker, a changed event log (`Output`), and the session parameters of a login
(`Session`, the ok login reply)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.replies import ErrorReply, LoginReply, Reply


@dataclass(frozen=True)
class ReplyReceived:
    """The reply to a request made with `ClientCore.request`.

    Fields: req (int, the request id), type (bytes, the request type, e.g. b"send"), body (the typed
    reply, protocol.replies: the ok Struct of REPLY_TYPES[type], e.g. UsersReply for b"who", or an
    ErrorReply with "code" and "message"; narrow with isinstance or test `.ok`).
    """

    req: int
    type: bytes
    body: Reply

    @property
    def ok(self) -> bool:
        """True for status "ok"."""
        return self.body.ok

    @property
    def code(self) -> str:
        """The error code string (e.g. "E_UNKNOWN_USER"), "" for an ok reply."""
        return self.body.code if isinstance(self.body, ErrorReply) else ""

    @property
    def message(self) -> str:
        """The broker's error message, "" for an ok reply."""
        return self.body.message if isinstance(self.body, ErrorReply) else ""


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
class EpochChanged:
    """The broker's event log is not the one this client saw at its last login in this process
    (the login reply's `epoch` differs, docs 9.4): the old log and its sequence numbers are gone.
    The core has set its last seq to the login reply's `seq` (no catch-up of the old numbers).
    Fields: old, new (the epochs, str), seq (int, the login reply's seq)."""

    old: str
    new: str
    seq: int


@dataclass(frozen=True)
class BrokerLost:
    """A request has waited `waited` seconds (more than heartbeat_timeout) for its reply."""

    waited: float


Output = Union[ReplyReceived, MessageReceived, EventReceived, EventsMissed, SessionEnded, BrokerLost, EpochChanged]
"""What `receive_dealer`, `receive_event` and `tick` return, in the order things happened."""


Session = LoginReply
"""The session parameters are the fields of the ok `login` reply (protocol.replies.LoginReply, docs
6.1): user (str), pub_port (int), seq (int, newest event seq at login), since (int, catch-up
start), since_ts (float, epoch s), heartbeat_interval / heartbeat_timeout / idle_timeout /
pub_heartbeat (float seconds), max_message_chars (int)."""
