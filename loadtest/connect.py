"""The broker reachability check (`hello` with a deadline) that the CLI runs before anything else,
and host resolution with load-tester errors. Connections are client.sync.SyncConnection.
"""

from __future__ import annotations

import math
import time

import zmq

from zmq_chat.client.adapter import check_hello, hello_request
from zmq_chat.client.core import ReplyReceived
from zmq_chat.client.errors import ConnectError
from zmq_chat.client.sockets import resolve_host
from zmq_chat.client.sync import SyncConnection
from zmq_chat.protocol.replies import HelloReply

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


def check_broker(host: str, port: int, timeout: float = HELLO_TIMEOUT, server_key: bytes | None = None) -> HelloReply:
    """Send `hello` (CURVE with the broker key `server_key`, NULL when None) and wait up to
    `timeout` seconds for the reply.

    Returns:
        the ok hello reply (protocol.replies.HelloReply: version, broker, max_message_chars,
        min_password_chars, curve).
    Raises:
        BrokerUnreachable: unresolvable host, no reply in time, not a chat broker (a wrong `broker`
            name, or a malformed or non-chat message in answer: raised at once, without waiting
            out the timeout), or E_VERSION.
    """
    address, ipv6 = resolve(host, port)
    ctx = zmq.Context()
    poller = zmq.Poller()
    conn = SyncConnection(ctx, poller, address, port, ipv6=ipv6, server_key=server_key)
    try:
        req = conn.send(hello_request("chat-loadtest"))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnreachable(
                    f"no chat broker answered at {host}:{port} within {timeout:g} s (is it running? right host "
                    "and port? the right --server-key, or --insecure for a broker run with --insecure?)")
            ready = dict(poller.poll(math.ceil(left * 1000)))
            if ready:
                for out in conn.handle(ready):
                    if isinstance(out, ReplyReceived) and out.req == req:
                        try:
                            return check_hello(out.body, f"{host}:{port}")
                        except ConnectError as exc:
                            raise BrokerUnreachable(str(exc)) from None
                if conn.errors:  # only the hello is in flight: what answered is not a chat broker
                    raise BrokerUnreachable(f"{host}:{port} is not a chat broker (its answer to hello was malformed)")
    finally:
        conn.close()
        ctx.term()
