"""Synchronous DEALER connections driven by client.core.ClientCore, and the broker reachability
check (`hello` with a deadline) that the CLI runs before anything else.
"""

from __future__ import annotations

import time

import zmq

from client.core import ClientCore, Output, ReplyReceived
from client.errors import ConnectError
from client.sockets import endpoint, open_dealer, resolve_host
from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.version import PROTOCOL_VERSION

HELLO_TIMEOUT = 4.0
"""Seconds to wait for the `hello` reply before calling the broker unreachable."""


class BrokerUnreachable(RuntimeError):
    """The broker did not answer (or is not a chat broker); `str(exc)` is one line for the user."""


def resolve(host: str, port: int, timeout: float = 3.0) -> tuple[str, bool]:
    """Numeric address of `host` and whether it is IPv6. Raises BrokerUnreachable if it does not resolve."""
    try:
        return resolve_host(host, port, timeout)
    except ConnectError as exc:
        raise BrokerUnreachable(str(exc)) from None


class SyncConn:
    """One DEALER socket plus its ClientCore, used without an event loop.

    Args:
        ctx: a zmq.Context.
        address, port, ipv6: numeric broker address (see `resolve`) and ROUTER port.
    Attributes: core (ClientCore), dealer (zmq DEALER socket).
    """

    def __init__(self, ctx: zmq.Context, address: str, port: int, ipv6: bool = False) -> None:
        self.core = ClientCore()
        self.dealer = open_dealer(ctx, endpoint(address, port, ipv6), ipv6)
        self._backlog: list[list[bytes]] = []

    def request(self, msg: m.Request) -> int:
        """Queue `msg` (its req is replaced), send what the core has queued; returns the req id."""
        req = self.core.request(msg)
        self.flush()
        return req

    def flush(self) -> None:
        """Send the core's queued frames without blocking; what does not fit stays for later."""
        out = self._backlog + self.core.data_to_send()
        self._backlog = []
        for i, frames in enumerate(out):
            try:
                self.dealer.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self._backlog = out[i:]
                return

    def receive(self) -> list[Output]:
        """Read every waiting message (NOBLOCK until EAGAIN) and return the core's outputs;
        malformed broker messages are skipped."""
        outs: list[Output] = []
        while True:
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                outs.extend(self.core.receive_dealer(frames))
            except ProtocolError:
                continue
        self.flush()
        return outs

    def close(self) -> None:
        """Close the socket at once (linger 0)."""
        self.dealer.close(0)


def check_broker(host: str, port: int, timeout: float = HELLO_TIMEOUT) -> dict:
    """Send `hello` and wait up to `timeout` seconds for the reply.

    Returns:
        the ok hello reply dict ({"version", "broker", "max_message_chars", "min_password_chars"}).
    Raises:
        BrokerUnreachable: unresolvable host, no reply in time, not a chat broker, or E_VERSION.
    """
    address, ipv6 = resolve(host, port)
    ctx = zmq.Context()
    conn = SyncConn(ctx, address, port, ipv6)
    try:
        req = conn.request(m.Hello(req=0, version=PROTOCOL_VERSION, client="chat-loadtest"))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnreachable(
                    f"no chat broker answered at {host}:{port} within {timeout:g} s (is it running? right host and port?)")
            if conn.dealer.poll(left * 1000, zmq.POLLIN):
                for out in conn.receive():
                    if isinstance(out, ReplyReceived) and out.req == req:
                        if not out.ok:
                            if out.code == ErrorCode.VERSION.value:
                                raise BrokerUnreachable(f"protocol version mismatch: {out.message}")
                            raise BrokerUnreachable(f"the broker refused hello: {out.message} [{out.code}]")
                        if out.body.get("broker") != "chat-broker":
                            raise BrokerUnreachable(f"{host}:{port} is not a chat broker")
                        return out.body
    finally:
        conn.close()
        ctx.term()
