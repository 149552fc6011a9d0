"""Typed message bodies of the wire format (docs/protocol.md, "Messages").

Every body is one JSON object in one frame. Requests (client to broker, on the DEALER/ROUTER pair)
all carry `req`, a client-chosen request id that the reply echoes. Field types are enforced on
decoding by msgspec; a body that breaks them is an `E_BAD_FIELD` error.

Units: `ts` is broker time in seconds since the Unix epoch (float); `minutes` is minutes; lengths of
`text` are counted in characters (Unicode code points).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .limits import MAX_ACK_IDS, MAX_COUNTER, MAX_LAST_MINUTES

ReqId = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
"""Request id: a whole number 0..2**53 chosen by the client, echoed in the reply."""

SendId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
"""Client-chosen message id (1 to 64 characters): a retried send with the same id is stored once."""

Name = Annotated[str, msgspec.Meta(max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=100_000)]
Password = Annotated[str, msgspec.Meta(max_length=4096)]


class Request(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    """Base of every request body: `req` (int) is echoed by the reply."""

    req: ReqId


class Hello(Request):
    """`hello`: the first exchange; checks the protocol `version` (int). `client` names the program."""

    version: int
    client: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Register(Request):
    """`register`: create the account `user` with `password`; does not log in. Carries `version`."""

    version: int
    user: Name
    password: Password


class Login(Request):
    """`login`: start a session for `user`. Carries `version`. The reply names the PUB port."""

    version: int
    user: Name
    password: Password


class Logout(Request):
    """`logout`: end the session; the reply is the last message of the session."""


class Who(Request):
    """`who`: users online now, hidden users left out, the caller always included."""


class Last(Request):
    """`last`: users online at any time in the last `minutes` (1 to 10080) minutes."""

    minutes: Annotated[int, msgspec.Meta(ge=1, le=MAX_LAST_MINUTES)]


class Broadcast(Request):
    """`broadcast`: publish `text` to every user on the PUB socket; `id` deduplicates retries."""

    id: SendId
    text: Text


class Send(Request):
    """`send`: private `text` to each name in `to` (1 to 100 names), via mailboxes; `id` deduplicates."""

    id: SendId
    to: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=100)]
    text: Text


class Busy(Request):
    """`busy`: hold private messages in the mailbox until `idle`; `text` is the auto-reply (may be "")."""

    text: Text = ""


class Idle(Request):
    """`idle`: end busy; the held mailbox messages are delivered after the reply."""


class Hide(Request):
    """`hide`: leave the caller out of who, last and presence events."""


class Appear(Request):
    """`appear`: undo `hide`."""


class Status(Request):
    """`status`: the caller's own state (busy and its text, hidden, logged in since)."""


class History(Request):
    """`history`: events (broadcasts and presence) with sequence number > `after`, at most `limit`.

    Serves both the catch-up after login and the repair of a gap seen in the PUB sequence.
    """

    after: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000


class Ack(Request):
    """`ack`: the client has the private messages `ids` (1 to 1000 ids); they leave the mailbox."""

    ids: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNTER)]], msgspec.Meta(min_length=1, max_length=MAX_ACK_IDS)]


class Ping(Request):
    """`ping`: heartbeat; any request counts as one, `ping` is for when the user types nothing."""


class PrivateMessage(msgspec.Struct, omit_defaults=True):
    """Push `msg` (broker to client on ROUTER): one private message from a mailbox; ack its `id`.

    Fields: id (int, broker-unique, increasing), sender (JSON name "from"), to (str), ts (float
    seconds since the epoch, when the broker stored it), text (str), cid (the sender's send id),
    group (list of str: every recipient of a message sent to several, in the sender's order, this
    one included; absent (empty) for a message to one).
    """

    id: int
    sender: str = msgspec.field(name="from")
    to: str = ""
    ts: float = 0.0
    text: str = ""
    cid: str = ""
    group: list[str] = msgspec.field(default_factory=list)


class End(msgspec.Struct):
    """Push `end`: the broker ended this session. `reason` is one of END_REASONS; `message` is prose."""

    reason: str
    message: str = ""


END_REASONS = ("replaced", "idle_timeout", "heartbeat_timeout", "shutdown")
"""Why the broker ends a session: a newer login of the same user, `--idle-timeout` minutes without a
command, no message for `--heartbeat-timeout` seconds, or the broker stopping."""


class Event(msgspec.Struct, omit_defaults=True):
    """A PUB event and an entry of the persisted log; also an element of a `history` reply.

    Fields: seq (int, broker-wide sequence number, 1, 2, 3, ... with no gaps), ts (float seconds),
    kind ("bcast" or "presence"), user (sender of a broadcast, or the user whose presence changed),
    text (broadcast text; "" for presence), event (for presence: "login", "logout", "timeout",
    "lost", "busy" or "available"; "" for broadcasts), cid (the sender's send id of a broadcast).
    """

    seq: int
    ts: float
    kind: Literal["bcast", "presence"]
    user: str
    text: str = ""
    event: str = ""
    cid: str = ""


PRESENCE_EVENTS = ("login", "logout", "timeout", "lost", "busy", "available")


class PubMark(msgspec.Struct):
    """Body of a PUB heartbeat `[b"hb", body]` and of a welcome `[b"welcome.<hex>", body]`:
    seq (int, the newest event sequence number when it was sent) and ts (float, broker time,
    seconds since the epoch). A heartbeat comes every `pub_heartbeat` seconds (login reply); a
    welcome once, when the subscription to the client's own welcome topic became active."""

    seq: int
    ts: float = 0.0
