"""Numbers and patterns the protocol fixes (docs/protocol.md), defined once here and imported by
the protocol's own modules, the broker, the client and the load tester. No I/O, no zmq."""

from __future__ import annotations

DEFAULT_PORT = 4119
"""The broker's default ROUTER port (docs 1); the PUB port defaults to +1, the key endpoint to +2."""

MAX_COUNTER = 2**53
"""Largest request id, event seq and mail id (9007199254740992, docs 3 "Common values"): the biggest integer every
JSON implementation holds exactly in a double. A broker whose counters reach it stops publishing."""

MAX_ACK_IDS = 1000
"""Most mail ids one `ack` may carry (docs 5, `ack`); a client with more sends several acks."""

MAX_LAST_MINUTES = 10080
"""`last <minutes>` accepts 1 to 10080 minutes: one week (docs 5, `last`)."""

USERNAME_PATTERN = r"[A-Za-z0-9]{3,32}"
"""A username, matched whole: 3 to 32 ASCII letters or digits, case-sensitive (docs 4.1;
protocol.validation adds the reserved names)."""
