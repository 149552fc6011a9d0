"""The broker's record of one logged-in session (plain data; changed only by broker.core)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Session:
    """A logged-in user on one DEALER connection.

    rid: ROUTER routing id (bytes). ip: peer address (str). Times are seconds since the epoch.
    key: the client's CURVE public key (Z85 str, "" with --insecure): every request of the session
    must carry it as its `User-Id`, and the PUB admits only keys of live sessions.
    fd: the file descriptor of the connection its requests come on; detached: that connection
    closed and no request came on a new one yet, so nothing is pushed to the routing id (whoever
    presents it next must prove the key first). login: the fields of the ok login reply, answered
    again to a retried login (docs/protocol.md 9.2).
    busy_seq: event sequence number when busy began (the catch-up point if the session ends busy).
    inflight: ids of private messages sent and not yet acknowledged (at most Config.mail_window).
    dropped: ids whose push was dropped (EAGAIN, or the connection closed): pushed again first.
    cursor: highest mailbox id sent in this session; backlog: the mailbox may hold more beyond it.
    reading: a shared store's read of its mailbox is in flight (broker.reads); repump: a pump was
    asked for meanwhile; pump_gen: counts restarts of the pushing from the mailbox's start.
    """

    user: str
    rid: bytes
    ip: str
    since: float
    last_heard: float
    last_command: float
    key: str = ""
    fd: int = -1
    detached: bool = False
    login: dict = field(default_factory=dict)
    busy: bool = False
    busy_text: str = ""
    busy_seq: int = 0
    hidden: bool = False
    auto_replied: set[str] = field(default_factory=set)
    inflight: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    cursor: int = 0
    backlog: bool = True
    reading: bool = False
    repump: bool = False
    pump_gen: int = 0
