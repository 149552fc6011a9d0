"""zmq socket setup shared by the asyncio Connection and synchronous drivers (e.g. a load tester with
a plain zmq.Poller): host resolution with a deadline, endpoints, DEALER and SUB options.

Every function works with a `zmq.Context` or a `zmq.asyncio.Context` (the socket type follows the
context).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq

from zmq_chat.client.errors import ConnectError
from zmq_chat.protocol.limits import DEFAULT_PORT  # noqa: F401 (re-exported for the CLI and drivers)

LINGER_MS = 500
"""How long close() may still try to deliver queued messages (milliseconds)."""
SNDHWM = 1000
RCVHWM = 10_000
SUB_RCVHWM = 100_000

SocketT = TypeVar("SocketT", bound="zmq.Socket[Any]")
"""The socket type of a context: zmq.Socket for a zmq.Context, zmq.asyncio.Socket for a zmq.asyncio.Context."""


def resolve_host(host: str, port: int, timeout: float = 3.0) -> tuple[str, bool]:
    """Resolve `host` (name or IP literal) for TCP with socket.getaddrinfo, IPv4 preferred.

    Args:
        host: DNS name or IPv4/IPv6 literal.
        port: TCP port (only passed to getaddrinfo).
        timeout: seconds to wait for the resolver (it runs in a daemon thread so a stuck DNS
            lookup cannot hang the caller).
    Returns:
        (address, is_ipv6): the numeric address string and whether it is IPv6.
    Raises:
        ConnectError: the name does not resolve, or the resolver took longer than `timeout`.
    """
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise ConnectError(f"cannot resolve host '{host}': no answer within {timeout:g} s")
    if isinstance(result[0], BaseException):
        reason = getattr(result[0], "strerror", None) or str(result[0])
        raise ConnectError(f"cannot resolve host '{host}': {reason}")
    infos = [i for i in result[0] if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise ConnectError(f"cannot resolve host '{host}': no IPv4 or IPv6 address")
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return sockaddr[0], family == socket.AF_INET6


def endpoint(address: str, port: int, ipv6: bool = False) -> str:
    """The zmq TCP endpoint for a numeric address: "tcp://1.2.3.4:4119" or "tcp://[::1]:4119"."""
    return f"tcp://[{address}]:{port}" if ipv6 else f"tcp://{address}:{port}"


@dataclass(frozen=True)
class CurveKeys:
    """The CURVE keys of one client (Z85 bytes): the broker's public key it trusts, and its own
    key pair, made fresh per client process and used by both its DEALER and its SUB, so the
    broker can bind the session to it and admit the SUB. `server` None means --insecure (NULL)."""

    server: bytes | None
    public: bytes = b""
    secret: bytes = field(default=b"", repr=False)

    @classmethod
    def new(cls, server: bytes | None) -> "CurveKeys":
        """Keys with a fresh client key pair (none when `server` is None)."""
        if server is None:
            return cls(None)
        public, secret = zmq.curve_keypair()
        return cls(server, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Set the CURVE client options on `sock` (before connect); nothing for NULL."""
        if self.server is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def new_routing_id() -> bytes:
    """16 random bytes not starting with 0x00 (zmq reserves a leading zero byte)."""
    rid = bytearray(os.urandom(16))
    if rid[0] == 0:
        rid[0] = 1
    return bytes(rid)


def open_dealer(ctx: zmq.Context[SocketT], url: str, ipv6: bool = False, routing_id: bytes | None = None,
                keys: CurveKeys | None = None) -> SocketT:
    """Create and connect the request DEALER: own ROUTING_ID (random when None), CURVE with
    `keys` (NULL when None or keys.server is None), LINGER 500 ms, SNDHWM 1000, RCVHWM 10000.
    Returns the socket (connect is asynchronous; nothing is sent)."""
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.ROUTING_ID, routing_id or new_routing_id())
        _common(sock, ipv6, SNDHWM, RCVHWM)
        if keys is not None:
            keys.apply(sock)
        sock.connect(url)
    except zmq.ZMQError:
        sock.close(0)
        raise
    return sock


def open_sub(ctx: zmq.Context[SocketT], url: str, ipv6: bool = False, keys: CurveKeys | None = None,
             topics: list[bytes] | None = None) -> SocketT:
    """Create a SUB socket subscribed to `topics` (ClientCore.sub_topics(); everything when None)
    and connected to the broker's PUB `url`, with the same CURVE keys as the DEALER.
    RCVHWM 100000: beyond that zmq drops events and the client repairs the gap with `history`."""
    sock = ctx.socket(zmq.SUB)
    try:
        _common(sock, ipv6, SNDHWM, SUB_RCVHWM)
        if keys is not None:
            keys.apply(sock)
        for topic in topics if topics is not None else [b""]:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(url)
    except zmq.ZMQError:
        sock.close(0)
        raise
    return sock


def _common(sock: zmq.Socket, ipv6: bool, sndhwm: int, rcvhwm: int) -> None:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if ipv6:
        sock.setsockopt(zmq.IPV6, 1)
