"""Accounting of the broker's TCP connections and the limits on them: pure, time passed in.

The loop reports, per connection file descriptor (fd): its acceptance (from the socket monitor,
with the peer's IP and port), every complete message read from it (the `SRCFD` property, with the
message's size on the wire), the kernel's count of bytes received on it (`TCP_INFO`, when a
memory scan runs) and its end. The table answers what to cut off:

* more than `max_per_ip` connections from one IP (ZAP refuses them at the handshake; a flood of
  connections that never finish a handshake is cut at twice the limit);
* a ROUTER connection with no session that sent no complete message for `login_timeout`
  seconds, a key-endpoint connection silent for `key_timeout` seconds, a PUB connection that
  subscribed to nothing for `login_timeout` seconds;
* a connection whose bytes received but not yet delivered as complete messages grew by more than
  `pending_limit` bytes (ROUTER; `small_pending_limit` for the PUB and the key endpoint) since it
  last delivered one: libzmq buffers a multipart message whole before delivery and
  `ZMQ_MAXMSGSIZE` bounds only single frames, so this is what bounds the memory one peer can make
  the broker hold (endless MORE frames, a trickled huge frame). libzmq keeps a 64-byte record per
  frame: a ROUTER frame takes at least 35 bytes on the wire under CURVE, so 4 MiB on the wire is
  at most about 8 MiB held.

The wire size of a frame is computed by `wire_size` (ZMTP 3.0 framing, RFC 23, plus the CurveZMQ
MESSAGE command around each frame, RFC 26), so the difference tracks exactly what is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from zmq_chat.broker.ratelimit import TokenBucket

ROUTER = "router"
PUB = "pub"
KEY = "key"

CURVE_FRAME_OVERHEAD = 33
"""Bytes a CURVE MESSAGE command adds around a frame: b"\\x07MESSAGE" (8), nonce (8), MAC (16), flags (1)."""


def wire_size(payload: int, curve: bool) -> int:
    """Bytes one frame of `payload` bytes takes on a ZMTP 3.0 TCP stream: a 2-byte header up to 255
    bytes of body, else 9 bytes; under CURVE the body is a MESSAGE command (payload + 33)."""
    body = payload + CURVE_FRAME_OVERHEAD if curve else payload
    return body + (2 if body < 256 else 9)


@dataclass
class Conn:
    """One TCP connection of a broker socket.

    fd: file descriptor (process-wide unique while open); kind: ROUTER, PUB or KEY; ip, port:
    the peer's address; accepted, last_msg: seconds (the loop's clock); consumed: wire bytes of
    the complete messages read; ref, consumed_at_scan: the pending-bytes reference (see
    ConnTable.scanned); key: the client's CURVE public key (Z85) seen on its messages, "" before;
    rid: the routing id of its last request (ROUTER); bucket: its flood control (made on first use);
    refused: requests refused by flood control in a row; welcomed: it subscribed to its welcome topic;
    bound: a session uses this connection (ROUTER) or it subscribed (PUB); subs: subscriptions.
    """

    fd: int
    kind: str
    ip: str
    port: int
    accepted: float
    last_msg: float = 0.0
    consumed: int = 0
    ref: int = 0
    consumed_at_scan: int = 0
    key: str = ""
    rid: bytes = b""
    bound: bool = False
    subs: int = 0
    bucket: TokenBucket | None = None
    refused: int = 0
    welcomed: bool = False


class ConnTable:
    """The broker's open connections by fd, with counts per IP.

    Args:
        max_per_ip: connections one IP may hold across the three sockets (ZAP refuses more).
        login_timeout: seconds a ROUTER connection may stay without a session and without sending
            a complete message, or a PUB connection without a subscription.
        key_timeout: seconds a key-endpoint connection may stay silent.
        pending_limit: bytes received but not delivered as messages, beyond the level at the last
            delivered message, that get a ROUTER connection cut.
        small_pending_limit: the same for PUB and key-endpoint connections, whose messages are
            a few bytes (libzmq keeps a 64-byte record per frame, so tiny frames weigh more).
        max_subscriptions: subscriptions one PUB connection may make.
    """

    def __init__(self, max_per_ip: int, login_timeout: float, key_timeout: float,
                 pending_limit: int, max_subscriptions: int = 8, small_pending_limit: int = 64 * 1024) -> None:
        self.max_per_ip = max_per_ip
        self.login_timeout = login_timeout
        self.key_timeout = key_timeout
        self.pending_limit = pending_limit
        self.small_pending_limit = small_pending_limit
        self.max_subscriptions = max_subscriptions
        self.conns: dict[int, Conn] = {}
        self.per_ip: dict[str, int] = {}
        self._by_key: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self.conns)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self.conns.values()))

    def __getitem__(self, fd: int) -> Conn:
        """The connection on `fd`; raises KeyError when there is none."""
        return self.conns[fd]

    def get(self, fd: int) -> Conn | None:
        """The connection on `fd`, or None (unknown, or already closed)."""
        return self.conns.get(fd)

    def count(self, ip: str) -> int:
        """Open connections from `ip`."""
        return self.per_ip.get(ip, 0)

    def over_limit(self, ip: str) -> bool:
        """True when `ip` holds more than max_per_ip connections (the ZAP handler refuses it)."""
        return self.count(ip) > self.max_per_ip

    def accepted(self, fd: int, kind: str, ip: str, port: int, now: float) -> bool:
        """Record a new connection. Returns False when it should be cut at once: its IP holds more
        than twice max_per_ip connections (a flood that does not even finish handshakes)."""
        self.closed(fd)  # a stale record of a reused fd
        self.conns[fd] = Conn(fd, kind, ip, port, now, last_msg=now)
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return self.per_ip[ip] <= 2 * self.max_per_ip

    def closed(self, fd: int) -> Conn | None:
        """Forget the connection on `fd`; returns its record (None if unknown)."""
        conn = self.conns.pop(fd, None)
        if conn is not None:
            if conn.key:
                self._unindex(conn)
            left = self.per_ip.get(conn.ip, 0) - 1
            if left > 0:
                self.per_ip[conn.ip] = left
            else:
                self.per_ip.pop(conn.ip, None)
        return conn

    def message(self, fd: int, wire_bytes: int, now: float, key: str = "") -> Conn | None:
        """Count one complete message of `wire_bytes` read from `fd`. Returns the record or None."""
        conn = self.conns.get(fd)
        if conn is not None:
            conn.consumed += wire_bytes
            conn.last_msg = now
            if key and conn.key != key:
                if conn.key:
                    self._unindex(conn)
                conn.key = key
                self._by_key.setdefault(key, set()).add(fd)
        return conn

    def _unindex(self, conn: Conn) -> None:
        fds = self._by_key.get(conn.key)
        if fds is not None:
            fds.discard(conn.fd)
            if not fds:
                del self._by_key[conn.key]

    def scanned(self, fd: int, received: int) -> bool:
        """Feed the kernel's count of bytes received on `fd` (TCP_INFO tcpi_bytes_received).

        Returns True when the connection must be cut: since the scan at which it last had
        delivered a new complete message, the bytes buffered for it (received - consumed) grew by
        more than pending_limit. While a connection delivers messages its reference moves along,
        so slow drift (ZMTP PINGs of a peer, the handshake) never adds up while it is in use.
        """
        conn = self.conns.get(fd)
        if conn is None:
            return False
        pending = received - conn.consumed
        if conn.consumed != conn.consumed_at_scan:
            conn.consumed_at_scan = conn.consumed
            conn.ref = pending
            return False
        return pending - conn.ref > (self.pending_limit if conn.kind == ROUTER else self.small_pending_limit)

    def idle(self, now: float) -> list[Conn]:
        """Connections to cut for silence: a ROUTER connection without a session and without a
        complete message for login_timeout seconds, a PUB connection without a subscription as
        long, a key-endpoint connection silent for key_timeout seconds."""
        out = []
        for conn in self.conns.values():
            if conn.bound:
                continue
            limit = self.key_timeout if conn.kind == KEY else self.login_timeout
            if now - conn.last_msg > limit:
                out.append(conn)
        return out

    def with_key(self, key: str, kind: str) -> list[Conn]:
        """Open connections of `kind` whose messages carried the client key `key`."""
        fds = self._by_key.get(key, ())
        return [c for c in (self.conns[fd] for fd in fds) if c.kind == kind]
