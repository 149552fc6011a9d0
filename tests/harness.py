"""Test harness: a real broker subprocess on 127.0.0.1 ephemeral ports, and raw DEALER/SUB peers
that speak the protocol through protocol.wire (no client UI). Every wait polls with a deadline."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import zmq

from zmq_chat.broker.launch import LaunchedBroker
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.version import PROTOCOL_VERSION

PASSWORD = "correct horse"


RELAXED = {"--max-connections-per-ip": "1000", "--connection-rate": "100000", "--rate-limit": "0",
           "--max-registrations-per-ip": "100000", "--max-failed-logins-per-ip": "100000",
           "--max-queued-logins-per-ip": "1000"}
"""Limits lifted for tests that are not about them (name -> value)."""


class Broker(LaunchedBroker):
    """A `python -m zmq_chat.broker` subprocess on 127.0.0.1, started at construction and ready
    (broker.launch: `port`/`pub_port`/`key_port`/`server_key` come from its ready file; ports 0 =
    ephemeral). `stop(kill=False)`, `restart(kill=False)` (same ports and data), `log_text()`.

    Tests run many peers from 127.0.0.1 as fast as they can, so the per-IP and per-connection
    limits are lifted here (RELAXED) unless `flags` set them."""

    def __init__(self, data_dir: Path, *flags: str, port: int = 0, pub_port: int = 0, key_port: int = 0) -> None:
        self.flags = (*flags, *(f for name, value in RELAXED.items() if name not in flags for f in (name, value)))
        self.insecure = "--insecure" in flags
        super().__init__(data_dir, self.flags, port=port, pub_port=pub_port, key_port=key_port)
        self.start()

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the broker's log contains `text` (polling with a deadline); returns the log."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the broker never logged {text!r}")
            time.sleep(0.02)
        return log


class Peer:
    """One chat client made of a DEALER (and, after `subscribe`, a SUB) socket, with its own CURVE
    key pair (both sockets use it) unless the broker runs --insecure.

    Replies are matched by request id; pushes (`msg`, `end`) and PUB events are kept in lists;
    PUB heartbeats in `heartbeats`, the welcome's seq in `welcome`.
    """

    _req = itertools.count(1)

    def __init__(self, ctx: zmq.Context, broker: Broker, routing_id: bytes | None = None,
                 keypair: tuple[bytes, bytes] | None = None, server_key: bytes | None = None,
                 source: str | None = None) -> None:
        self.ctx = ctx
        self.broker = broker
        self.public, self.secret = keypair or zmq.curve_keypair()
        self.server_key = server_key or broker.server_key
        self.dealer = self._socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, routing_id or b"t" + uuid.uuid4().bytes)
        self.source = source  # a loopback address to connect from (e.g. 127.0.0.7), as another host would
        self.dealer.connect(self._endpoint(broker.port))
        self.sub: zmq.Socket | None = None
        self.replies: dict[Any, dict] = {}
        self.msgs: list[m.PrivateMessage] = []
        self.ends: list[m.End] = []
        self.events: list[m.Event] = []
        self.heartbeats: list[dict] = []
        self.welcome: int | None = None
        self.welcome_topic = b"welcome." + uuid.uuid4().hex.encode()
        self.user = ""

    def _endpoint(self, port: int) -> str:
        return f"tcp://{self.source}:0;127.0.0.1:{port}" if self.source else f"tcp://127.0.0.1:{port}"

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self.server_key is not None:
            sock.curve_serverkey = self.server_key
            sock.curve_publickey = self.public
            sock.curve_secretkey = self.secret
        return sock

    def close(self) -> None:
        self.dealer.close(0)
        if self.sub is not None:
            self.sub.close(0)

    # -- raw I/O ----------------------------------------------------------------------------------
    def send_raw(self, frames: list[bytes]) -> None:
        self.dealer.send_multipart(frames)

    def pump(self, timeout: float) -> None:
        """Receive whatever arrives within `timeout` seconds (stops early once something came)."""
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        if self.sub is not None:
            poller.register(self.sub, zmq.POLLIN)
        ready = dict(poller.poll(timeout * 1000))
        if self.dealer in ready:
            while True:
                try:
                    frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind, body = wire.decode_push(frames)
                if kind == wire.REPLY:
                    self.replies[body["req"]] = body
                elif kind == wire.MSG:
                    self.msgs.append(body)
                else:
                    self.ends.append(body)
        if self.sub is not None and self.sub in ready:
            while True:
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frames[0] == wire.TOPIC_HEARTBEAT:
                    self.heartbeats.append(json.loads(frames[1]))
                elif frames[0] == self.welcome_topic:
                    self.welcome = json.loads(frames[1])["seq"]
                else:
                    self.events.append(wire.decode_event(frames))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            self.pump(min(left, 0.05))

    # -- requests -------------------------------------------------------------------------------
    def call(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict:
        """Send request `kind` with `fields` (req added) and return its reply dict."""
        req = next(self._req)
        cls = wire.REQUEST_TYPES[kind.encode()]
        if kind in ("hello", "login", "register"):
            fields.setdefault("version", PROTOCOL_VERSION)
        self.send_raw(wire.encode_request(cls(req=req, **fields)))
        return self.wait_for(lambda: self.replies.pop(req, None), timeout, f"reply to {kind}")

    def register(self, user: str, password: str = PASSWORD) -> dict:
        return self.call("register", user=user, password=password)

    def login(self, user: str, password: str = PASSWORD, subscribe: bool = True) -> dict:
        """Log in; with `subscribe`, open the SUB after the ok reply and wait for its welcome."""
        reply = self.call("login", user=user, password=password)
        if reply["status"] == "ok":
            self.user = user
            if subscribe and self.sub is None:
                self.subscribe()
        return reply

    def subscribe(self, wait: bool = True) -> None:
        """Open the SUB (same key pair), subscribe to bcast, presence, hb and the welcome topic;
        with `wait`, wait until the welcome says the subscription is active."""
        self.sub = self._socket(zmq.SUB)
        for topic in (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE, wire.TOPIC_HEARTBEAT, self.welcome_topic):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(self._endpoint(self.broker.pub_port))
        if wait:
            self.wait_for(lambda: self.welcome is not None, 5, "the PUB welcome")

    def send(self, to: list[str] | str, text: str, cid: str | None = None) -> dict:
        to = [to] if isinstance(to, str) else to
        return self.call("send", id=cid or uuid.uuid4().hex, to=to, text=text)

    def broadcast(self, text: str, cid: str | None = None) -> dict:
        return self.call("broadcast", id=cid or uuid.uuid4().hex, text=text)

    def wait_msgs(self, count: int, timeout: float = 5.0) -> list[m.PrivateMessage]:
        self.wait_for(lambda: len(self.msgs) >= count, timeout, f"{count} private messages")
        return self.msgs

    def ack_all(self) -> dict:
        reply = self.call("ack", ids=[x.id for x in self.msgs])
        return reply

    def wait_event(self, predicate: Callable[[m.Event], bool], timeout: float = 5.0) -> m.Event:
        return self.wait_for(lambda: next((e for e in self.events if predicate(e)), None), timeout, "a PUB event")


def ok(reply: dict) -> dict:
    """Assert the reply is ok and return it."""
    assert reply["status"] == "ok", reply
    return reply


def err(reply: dict, code: str) -> dict:
    """Assert the reply is an error with `code` and return it."""
    assert reply["status"] == "error" and reply["code"] == code, reply
    return reply


def rss(pid: int) -> int:
    """Resident set size of process `pid`, bytes (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class FakeRouter:
    """A NULL zmq ROUTER on 127.0.0.1 (random `port`) in a thread, answering each message with
    `answer(frames)` (frames without the routing id; None: no answer); `asked` counts the answers."""

    def __init__(self, answer: Callable[[list[bytes]], list[bytes] | None]) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.answer = answer
        self.asked = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                rid, *frames = self.sock.recv_multipart()
                reply = self.answer(frames)
                if reply is not None:
                    self.asked += 1
                    self.sock.send_multipart([rid, *reply])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()
