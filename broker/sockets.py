"""The broker's zmq sockets: their security, limits and monitors (docs/security.md lists each).

    ROUTER  requests, replies, private pushes      CURVE server (NULL with --insecure), ZAP "chat"
    XPUB    broadcasts, presence, heartbeats       CURVE server, ZAP "chat.pub", XPUB_MANUAL
    ROUTER  key endpoint (the public key, in clear) NULL, ZAP "chat.key"
    ROUTER  inproc://zeromq.zap.01, the ZAP handler (answered by the broker's loop)

Every tcp socket sets ZAP_DOMAIN and ZAP_ENFORCE_DOMAIN, so a connection is refused when no
authenticator answers (libzmq fails open without it), and has a monitor socket that reports the
file descriptor of each accepted and closed connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from zmq_chat.broker.config import Config
from zmq_chat.broker.connections import KEY, PUB, ROUTER
from zmq_chat.broker.keys import BrokerKeys
from zmq_chat.broker.zap import DOMAIN_KEY, DOMAIN_PUB, DOMAIN_ROUTER, ZAP_ENDPOINT

HANDSHAKE_IVL_MS = 10_000
"""A connection must finish its ZMTP/CURVE handshake within this many milliseconds."""
SUBSCRIPTION_MAX_BYTES = 1024
"""ZMQ_MAXMSGSIZE of the XPUB, bytes: above a subscription frame (b"\\x01" + topic, 41 bytes at most)
and the CURVE handshake commands (INITIATE is about 300 bytes), which the limit also covers."""
KEY_REQUEST_MAX_BYTES = 1024
"""ZMQ_MAXMSGSIZE of the key endpoint."""
MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
"""Only these two: with EVENT_HANDSHAKE_FAILED_PROTOCOL monitored, libzmq 4.3.5 never closes a
CURVE connection that sends a frame it cannot decrypt after the handshake (its descriptor leaks
and it is never reported DISCONNECTED); found by tests/test_fuzz_integration.py."""


@dataclass
class BrokerSockets:
    """The bound sockets. endpoints: kind -> "tcp://host:port" as bound; monitors: kind -> PAIR."""

    zap: zmq.Socket
    router: zmq.Socket
    pub: zmq.Socket
    key: zmq.Socket
    monitors: dict[str, zmq.Socket]
    endpoints: dict[str, str]

    def all(self) -> list[zmq.Socket]:
        """Every socket, monitors included (for closing)."""
        return [*self.monitors.values(), self.router, self.pub, self.key, self.zap]

    def close(self, linger_ms: int) -> None:
        """Close every socket; the ROUTER and PUB linger up to `linger_ms` to flush."""
        for sock in self.all():
            sock.close(linger_ms if sock in (self.router, self.pub) else 0)


def _secure(sock: zmq.Socket, cfg: Config, keys: BrokerKeys | None, domain: str, curve: bool) -> None:
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    sock.setsockopt(zmq.BACKLOG, 4096)
    if curve and keys is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def open_sockets(ctx: zmq.Context, cfg: Config, keys: BrokerKeys | None) -> BrokerSockets:
    """Create, configure and bind the broker's sockets on `cfg.bind`.

    keys: the broker's key pair (None with --insecure, which uses NULL everywhere).
    Raises zmq.ZMQError when a port cannot be bound (every socket made so far is closed).
    """
    curve = not cfg.insecure
    made: list[zmq.Socket] = []
    try:
        zap = ctx.socket(zmq.ROUTER)
        made.append(zap)
        zap.bind(ZAP_ENDPOINT)
        router = ctx.socket(zmq.ROUTER)
        made.append(router)
        _secure(router, cfg, keys, DOMAIN_ROUTER, curve)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.ROUTER_HANDOVER, 0)  # a routing id cannot be taken over (docs/security.md)
        router.setsockopt(zmq.MAXMSGSIZE, cfg.max_msg_bytes)
        router.setsockopt(zmq.SNDHWM, cfg.router_sndhwm)
        router.setsockopt(zmq.RCVHWM, cfg.router_rcvhwm)
        router.setsockopt(zmq.LINGER, cfg.linger_ms)
        pub = ctx.socket(zmq.XPUB)
        made.append(pub)
        _secure(pub, cfg, keys, DOMAIN_PUB, curve)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.XPUB_MANUAL, 1)  # a subscription counts only once the broker applies it
        pub.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX_BYTES)
        pub.setsockopt(zmq.SNDHWM, cfg.pub_sndhwm)
        pub.setsockopt(zmq.RCVHWM, 64)
        pub.setsockopt(zmq.LINGER, cfg.linger_ms)
        key = ctx.socket(zmq.ROUTER)
        made.append(key)
        _secure(key, cfg, keys, DOMAIN_KEY, curve=False)
        key.setsockopt(zmq.MAXMSGSIZE, KEY_REQUEST_MAX_BYTES)
        key.setsockopt(zmq.SNDHWM, 16)
        key.setsockopt(zmq.RCVHWM, 16)
        key.setsockopt(zmq.LINGER, 0)
        monitors = {}
        for kind, sock in ((ROUTER, router), (PUB, pub), (KEY, key)):
            monitors[kind] = sock.get_monitor_socket(MONITOR_EVENTS)
            made.append(monitors[kind])
        endpoints = {
            ROUTER: _bind(router, cfg.bind, cfg.port),
            PUB: _bind(pub, cfg.bind, cfg.effective_pub_port),
            KEY: _bind(key, cfg.bind, cfg.effective_key_port),
        }
    except zmq.ZMQError:
        for sock in made:
            sock.close(0)
        raise
    return BrokerSockets(zap, router, pub, key, monitors, endpoints)


def _bind(sock: zmq.Socket, host: str, port: int) -> str:
    sock.bind(f"tcp://{host}:{port if port else '*'}")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def port_of(endpoint: str) -> int:
    """The port of a bound endpoint "tcp://host:port"."""
    return int(endpoint.rsplit(":", 1)[1])
