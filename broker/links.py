"""Who may connect and what a connection may cost: the ZAP decisions, the socket monitors'
connection events, PUB subscriptions (with the welcome that marks a subscription active), the
PUB heartbeat, and the connections to cut off. A mixin of broker.core.BrokerCore; pure.

ZAP (docs/security.md): the ROUTER admits any CURVE key (the password decides, at login); the PUB
admits only keys of live sessions; every socket refuses an IP that already holds
--max-connections-per-ip connections. With --insecure every key is "" and the PUB admits anyone.
"""

from __future__ import annotations

import logging
import re

import msgspec

from zmq_chat.broker.connections import KEY, PUB, ROUTER, Conn
from zmq_chat.broker.corebase import CoreBase
from zmq_chat.broker.ratelimit import KeyedBuckets
from zmq_chat.broker.zap import DOMAIN_KEY, DOMAIN_PUB, DOMAIN_ROUTER
from zmq_chat.protocol import wire

log = logging.getLogger(__name__)

WELCOME_TOPIC = re.compile(rb"welcome\.[0-9a-f]{32}")
"""A client's own welcome topic: b"welcome." and 32 lowercase hex digits (docs 7.4)."""
EVENT_TOPICS = frozenset({wire.TOPIC_BCAST, wire.TOPIC_PRESENCE, wire.TOPIC_HEARTBEAT})

_encoder = msgspec.json.Encoder()


class Links(CoreBase):
    """Connection-level decisions; mixed into BrokerCore (the state they use: broker.corebase.CoreBase)."""

    def __init__(self) -> None:
        self._next_pub_heartbeat = 0.0
        self.new_conns = KeyedBuckets(self.cfg.conn_rate, max(1.0, self.cfg.conn_rate * 4))

    # -- ZAP ------------------------------------------------------------------------------------
    def authorize(self, domain: str, address: str, mechanism: str, key: str) -> tuple[int, str, str]:
        """Decide one ZAP request (RFC 27). `key` is the client's CURVE public key in Z85 ("" for
        NULL). Returns (status code, status text, user id): 200 admits with the key as the user
        id; 400 refuses (libzmq then closes the connection)."""
        status, text, user_id = self._authorize(domain, address, mechanism, key)
        log.debug("ZAP %s %s %s: %d %s", domain, address, mechanism, status, text)
        return status, text, user_id

    def _authorize(self, domain: str, address: str, mechanism: str, key: str) -> tuple[int, str, str]:
        if self.conns.over_limit(address):
            log.info("refused connection ip=%s: more than %d connections", address, self.cfg.max_conns_per_ip)
            return 400, "too many connections from this address", ""
        if self.new_conns.take(address, self.clock()) > 0:
            log.info("refused connection ip=%s: more than %g new connections a second", address, self.cfg.conn_rate)
            return 400, "too many new connections from this address", ""
        expected = "NULL" if self.cfg.insecure or domain == DOMAIN_KEY else "CURVE"
        if mechanism != expected:
            return 400, f"mechanism {mechanism} is not accepted here", ""
        if domain == DOMAIN_PUB and not self.cfg.insecure and key not in self.by_key:
            return 400, "no session with this key", ""
        if domain not in (DOMAIN_ROUTER, DOMAIN_PUB, DOMAIN_KEY):
            return 400, "unknown ZAP domain", ""
        return 200, "OK", key

    # -- connection events (socket monitors) ------------------------------------------------------
    def on_accepted(self, fd: int, kind: str, ip: str, port: int) -> None:
        """A connection was accepted on socket `kind` (ROUTER, PUB or KEY). The monitors of the
        three sockets are not ordered with each other, so a record still on this fd belongs to
        a connection that closed (its DISCONNECTED is still on the way): close it now."""
        stale = self.conns.get(fd)
        if stale is not None:
            self.on_disconnected(fd, stale.kind)
        if not self.conns.accepted(fd, kind, ip, port, self.clock()):
            log.info("cut connection ip=%s: connection flood", ip)
            self._out.cuts.append(self.conns[fd])

    def on_disconnected(self, fd: int, kind: str) -> None:
        """The connection of socket `kind` on `fd` closed (an event for a record of another kind
        is late news about a connection already closed here, and is ignored). A session using it
        is detached: nothing is pushed to its routing id until a request with the session's key
        comes on a new connection, and its unacknowledged pushes are sent again then (they may
        have been lost with the connection). Its waiting argon2id jobs are dropped."""
        conn = self.conns.get(fd)
        if conn is None or conn.kind != kind:
            return
        self.conns.closed(fd)
        if kind != ROUTER:
            return
        self._drop_jobs(conn)
        s = self.sessions.get(conn.rid)
        if s is not None and s.fd == fd:
            s.detached = True
            s.fd = -1
            s.dropped.update(s.inflight)
            s.inflight.clear()

    def on_subscribe(self, fd: int, key: str, data: bytes, wire_bytes: int) -> bool:
        """The XPUB (in XPUB_MANUAL mode) read a subscription message `data` (b"\\x01" + topic)
        from connection `fd` with client key `key`. Returns True when the loop may apply it (only
        then does the SUB receive that topic). Allowed: bcast, presence, hb and one
        welcome.<32 hex>, which is answered at once with [topic, {"seq", "ts"}] (docs 7.4), from a
        key with a live session, at most 8 subscriptions. Otherwise the connection is cut."""
        conn = self.conns.message(fd, wire_bytes, self.clock(), key)
        if conn is None or conn.kind != PUB or not data or data[0] != 1:
            return False
        topic = data[1:]
        conn.subs += 1
        live = self.cfg.insecure or key in self.by_key
        welcome = WELCOME_TOPIC.fullmatch(topic) is not None
        if not live or conn.subs > self.conns.max_subscriptions or not (topic in EVENT_TOPICS or welcome) or (
            welcome and conn.welcomed
        ):
            log.info("cut SUB connection ip=%s: %s", conn.ip, "no session" if not live else "subscription refused")
            self._out.cuts.append(conn)
            return False
        conn.bound = True
        if welcome:
            conn.welcomed = True
            self._out.pub.append((topic, _encoder.encode({"seq": self.seq, "ts": self.clock()})))
        return True

    def on_scan(self, received: dict[int, int]) -> None:
        """A memory scan read the bytes received on each connection (fd -> tcpi_bytes_received);
        cut those buffering more than --pending-limit beyond their last complete message."""
        for fd, count in received.items():
            if self.conns.scanned(fd, count):  # only a known connection can be
                conn = self.conns[fd]
                log.warning("cut connection ip=%s: %d bytes buffered without a complete message",
                            conn.ip, count - conn.consumed)
                self._out.cuts.append(conn)

    def on_too_many_frames(self, fd: int) -> None:
        """A request on `fd` had more than --max-frames frames: no client sends that; cut it."""
        conn = self.conns.get(fd)
        if conn is not None:
            log.info("cut connection ip=%s: a request of more than %d frames", conn.ip, self.cfg.max_frames)
            self._out.cuts.append(conn)

    def on_key_request(self, fd: int, wire_bytes: int) -> None:
        """Count a request read on the key endpoint (it is answered by the loop)."""
        self.conns.message(fd, wire_bytes, self.clock())

    def _cut_key(self, key: str) -> None:
        """Cut the SUB connections of client key `key` (its session ended)."""
        self._out.cuts.extend(self.conns.with_key(key, PUB))

    def _links_tick(self, now: float) -> None:
        """Cut silent connections; publish the PUB heartbeat when due; forget old connection counts."""
        for conn in self.conns.idle(now):
            log.debug("cut idle connection ip=%s kind=%s", conn.ip, conn.kind)
            conn.last_msg = now  # cut once; the record goes when the monitor reports the close
            self._out.cuts.append(conn)
        if now >= self._next_pub_heartbeat:
            self._next_pub_heartbeat = now + self.cfg.pub_heartbeat
            self._out.pub.append((wire.TOPIC_HEARTBEAT, _encoder.encode({"seq": self.seq, "ts": now})))
        self.new_conns.purge(now)

    def connection_kinds(self) -> dict[str, int]:
        """Open connections per socket kind (for logs and tests)."""
        counts = {ROUTER: 0, PUB: 0, KEY: 0}
        for conn in self.conns:
            counts[conn.kind] += 1
        return counts


__all__ = ["Links", "Conn", "WELCOME_TOPIC"]
