"""The broker's record of one logged-in session (plain data; changed only by broker.core)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Session:
    """A logged-in user on one DEALER connection.

    rid: ROUTER routing id (bytes). ip: peer address (str). Times are seconds since the epoch.
    busy_seq: event sequence number when busy began (the catch-up point if the session ends busy).
    inflight: ids of private messages sent and not yet acknowledged (at most Config.mail_window).
    cursor: highest mailbox id sent in this session; backlog: the mailbox may hold more beyond it.
    """

    user: str
    rid: bytes
    ip: str
    since: float
    last_heard: float
    last_command: float
    busy: bool = False
    busy_text: str = ""
    busy_seq: int = 0
    hidden: bool = False
    auto_replied: set[str] = field(default_factory=set)
    inflight: set[int] = field(default_factory=set)
    cursor: int = 0
    backlog: bool = True
