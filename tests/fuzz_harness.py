"""The integration fuzzer's machinery (tests/test_fuzz_integration.py): the canaries whose chat
must survive every round, the model of the `req` a reply echoes, and the fuzzer's state, findings and
reply checks with the rounds of CURVE DEALERs (harness Peers); tests/fuzz_raw.py adds the rounds of
raw ZMTP peers and plain TCP.

A finding is a str naming the seed, the round and the frames that caused it; the fuzzer collects
them for the test to report together. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import zmq

from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.wire import REQUEST_TYPES
from tests.fuzz_gen import FRAME_CUT, MAX_REQ, Gen
from tests.harness import Broker, Peer, ok
from tests.zmtp import ZmtpPeer, z85_to_raw

SEED = int(os.environ.get("FUZZ_SEED", "20241122"))
"""The fuzzer's seed (override with FUZZ_SEED=n to explore), printed in every finding."""
CODES = {code.value for code in ErrorCode}
MAX_FRAMES = 16
"""A request of more than this many frames may get its connection cut (broker --max-frames)."""
SENTINEL_BASE = 2**52 + 7_000_000
"""Request ids of the fuzzer's own pings (never produced by the generator)."""


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _all_valid_unicode(value) -> bool:
    """No string (key or value) anywhere in `value` holds a lone surrogate (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def model_req(frame: bytes) -> int | None:
    """What docs/protocol.md section 6 says a reply echoes as `req` for a request whose `req` is read
    from `frame`: its `req` when the frame is a UTF-8 JSON object (no BOM, no lone surrogate) whose
    `req` is an int in 0..2^53, else None."""
    try:
        text = frame.decode("utf-8")
        if text.startswith("\ufeff"):
            return None
        obj = json.loads(text, parse_constant=_no_constants, parse_int=lambda s: -1 if len(s) > 4000 else int(s))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not _all_valid_unicode(obj):
        return None
    req = obj.get("req")
    return req if isinstance(req, int) and not isinstance(req, bool) and 0 <= req <= MAX_REQ else None


def short(frames: list[bytes]) -> str:
    """A readable, bounded repr of a frame list for assertion messages."""
    shown = []
    for f in frames[:8]:
        shown.append(repr(f) if len(f) <= 160 else f"<{len(f)} bytes {f[:80]!r}...{f[-24:]!r}>")
    if len(frames) > 8:
        shown.append(f"... {len(frames) - 8} more frames")
    return "[" + ", ".join(shown) + "]"


# -- the canaries and the fuzzer ---------------------------------------------------------------------------

@dataclass
class Stats:
    """What the fuzzer did, printed at the end: rounds {kind: count}, seconds {kind: seconds spent},
    replies {error code or status: count}, tally {what: count} ("requests", "allowed cuts", "raw peers",
    "raw closed", "key answers", "welcomes", "tcp")."""

    rounds: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    replies: Counter[str] = field(default_factory=Counter)
    tally: Counter[str] = field(default_factory=Counter)


class Canary:
    """Two logged-in users that exchange a private message and a broadcast, and the key holder
    (whose live session lets raw SUB peers in), which pings."""

    def __init__(self, broker: Broker, alice: Peer, bob: Peer, keyholder: Peer) -> None:
        self.broker, self.alice, self.bob, self.keyholder = broker, alice, bob, keyholder

    def keepalive(self) -> None:
        """A ping of each of the three (their sessions end after 15 s without a request)."""
        for p in (self.alice, self.bob, self.keyholder):
            ok(p.call("ping"))

    def exchange(self, tag: str) -> None:
        """Alice sends Bob a private message, Bob broadcasts, both get what was meant for them, their
        mail is acked, and no one got an end push. Raises AssertionError naming `tag`, the seed and
        the broker's log tail otherwise."""
        alice, bob = self.alice, self.bob
        try:
            text = f"private {tag} {uuid.uuid4().hex[:8]}"
            ok(alice.send(bob.user, text))
            bob.wait_for(lambda: any(x.text == text for x in bob.msgs), 10, f"the private message of {tag}")
            shout = f"broadcast {tag} {uuid.uuid4().hex[:8]}"
            ok(bob.broadcast(shout))
            for p in (alice, bob):
                p.wait_event(lambda e: e.text == shout and e.user == bob.user, 10)
            ok(self.keyholder.call("ping"))
            for p in (alice, bob):
                ids = [x.id for x in p.msgs]
                for i in range(0, len(ids), 1000):
                    ok(p.call("ack", ids=ids[i:i + 1000]))
                p.msgs.clear()
                p.events.clear()
            for p in (alice, bob, self.keyholder):
                assert not p.ends, f"{p.user} got {p.ends}"
        except AssertionError as exc:
            alive = self.broker.proc.poll() is None
            raise AssertionError(f"[seed {SEED}] canary exchange '{tag}' failed: {exc}; broker alive: {alive}\n"
                                 f"broker log tail:\n{self.broker.log_text()[-3000:]}") from None


class DealerFuzzer:
    """Rounds of hostile input against the canaries' broker, drawn from `gen` (and its rng); the
    canaries' routing ids are stolen and the key holder's keys reused on the PUB; DEALER rounds may
    log in as one of `throwaways` (password `throwaway_password`). This class holds the state, the
    findings and the checks of replies, and the DEALER rounds; tests/fuzz_raw.py's Fuzzer the rest."""

    def __init__(self, canary: Canary, ctx: zmq.Context, gen: Gen, throwaways: list[str],
                 throwaway_password: str) -> None:
        self.broker, self.keyholder = canary.broker, canary.keyholder
        self.canary_rids = [p.dealer.getsockopt(zmq.ROUTING_ID) for p in (canary.alice, canary.bob)]
        self.ctx, self.gen, self.rng = ctx, gen, gen.rng
        self.throwaways, self.throwaway_password = throwaways, throwaway_password
        self.server_key = z85_to_raw(self.broker.server_key)
        self.findings: list[str] = []
        self.pending: list[tuple[ZmtpPeer, float, str]] = []  # raw peers the broker must close
        self.open: list = []  # every fuzz socket still open
        self.stats = Stats()
        self.where = ""
        self._sentinel = SENTINEL_BASE
        self.sentinels: set[int] = set()
        self.trace: list[str] = []  # the requests and replies of the current round, for findings
        self.broker_sockets: dict[str, str] = {}  # broker-side socket inode -> the round that made it
        self.written: list[str] = []  # what the current raw peer wrote after its handshake

    def finding(self, what: str, frames: list[bytes] | None = None, reply=None) -> None:
        text = f"[seed {SEED}] {self.where}: {what}"
        if frames is not None:
            text += f"\n    frames={short(frames)}"
        if reply is not None:
            text += f"\n    reply={str(reply)[:400]}"
        if self.trace:
            text += "\n    earlier in this round:\n      " + "\n      ".join(self.trace[-12:])
        self.findings.append(text)
        print("FINDING", text)

    # -- replies --------------------------------------------------------------------------------------
    def decode(self, frames: list[bytes]) -> tuple[bytes, dict | None]:
        """A broker message on a DEALER: (kind, body dict); a malformed one is a finding."""
        if len(frames) != 2 or frames[0] not in (b"reply", b"msg", b"end"):
            self.finding("malformed message from the broker", frames)
            return b"", None
        try:
            body = json.loads(frames[1])
        except ValueError:
            self.finding("a broker message whose body is not JSON", frames)
            return frames[0], None
        if not isinstance(body, dict):
            self.finding("a broker message whose body is not an object", frames)
            return frames[0], None
        return frames[0], body

    def check(self, body: dict, frames: list[bytes]) -> None:
        """The reply to request `frames` follows docs/protocol.md sections 6 and 8."""
        problems = []
        status, code = body.get("status"), body.get("code")
        if status not in ("ok", "error"):
            problems.append("status is neither ok nor error")
        if status == "error":
            if code not in CODES:
                problems.append(f"unknown error code {code!r}")
            elif code == ErrorCode.INTERNAL.value:
                problems.append("E_INTERNAL")
            if not isinstance(body.get("message"), str):
                problems.append("an error without a message")
        self.stats.replies[code or str(status)] += 1
        expected = ErrorCode.FRAMES.value if len(frames) != 2 else (
            ErrorCode.UNKNOWN_TYPE.value if frames[0] not in REQUEST_TYPES else None)
        if expected and code != expected:
            problems.append(f"expected {expected}")
        if not expected and code in (ErrorCode.FRAMES.value, ErrorCode.UNKNOWN_TYPE.value):
            problems.append(f"{code} for a 2-frame request with a known type")
        want, got = model_req(frames[-1]), body.get("req")
        if status == "ok" and got != want:
            problems.append(f"ok reply echoes req {got!r}, the request has req {want!r}")
        if status == "error":
            if code == ErrorCode.BAD_JSON.value and got is not None:
                problems.append("E_BAD_JSON with a req")
            elif got is not None and got != want:
                problems.append(f"req {got!r} echoed, but the request's last frame has req {want!r} (docs 6)")
        if problems:
            self.finding("bad reply: " + "; ".join(problems), frames, body)

    def read(self, sock: zmq.Socket, deadline: float) -> list[bytes] | None:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000):
            return None
        return sock.recv_multipart()

    def await_reply(self, peer: Peer, deadline: float) -> dict | None:
        """The next reply on `peer` that is not to one of our pings (pushes are skipped)."""
        while True:
            frames = self.read(peer.dealer, deadline)
            if frames is None:
                return None
            kind, body = self.decode(frames)
            if kind == b"reply" and body is not None and body.get("req") not in self.sentinels:
                return body
            self.trace.append(f"got {kind.decode()} {str(body)[:200]}")

    def sync(self, peer: Peer, timeout: float = 15.0) -> list[dict] | None:
        """Ping until a ping is answered (resent every 0.5 s: the connection may have been cut and
        the DEALER reconnected); returns the other replies that came first (None: no ping answered)."""
        got = []
        mine: set[int] = set()
        deadline = time.monotonic() + timeout
        next_ping = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_ping:
                self._sentinel += 1
                mine.add(self._sentinel)
                self.sentinels.add(self._sentinel)
                peer.send_raw([b"ping", b'{"req": %d}' % self._sentinel])
                next_ping = now + 0.5
            frames = self.read(peer.dealer, min(deadline, next_ping))
            if frames is None:
                continue
            kind, body = self.decode(frames)
            if kind != b"reply" or body is None:
                continue
            if body.get("req") in mine:
                if body.get("status") != "ok":
                    self.finding("a ping got an error", [b"ping"], body)
                return got
            if body.get("req") not in self.sentinels:
                got.append(body)

    # -- a. CURVE DEALERs -------------------------------------------------------------------------------
    def round_dealer(self) -> None:
        r = self.rng
        peer = Peer(self.ctx, self.broker)
        self.open.append(peer)
        mode = "anonymous"
        if r.random() < 0.5:
            mode = r.choice(self.throwaways)
            reply = peer.login(mode, self.throwaway_password, subscribe=False)
            if reply["status"] != "ok":
                self.finding(f"login of throwaway user {mode} failed", None, reply)
        self.where += f" dealer({mode})"
        self.trace = [f"Peer routing id {peer.dealer.getsockopt(zmq.ROUTING_ID)!r}, logged in as {mode}"]
        if r.random() < 0.3:
            self.pipelined(peer)
        else:
            self.one_by_one(peer)
        peer.close()
        self.open.remove(peer)

    def pipelined(self, peer: Peer) -> None:
        """Several requests sent at once, then their replies collected: the broker answers one
        connection in order, except login and register, which wait for argon2id (left out here)."""
        batch: list[list[bytes]] = []
        size = self.rng.randint(3, 12)
        while len(batch) < size:
            frames = self.gen.frames(allow_cut=False)
            if frames[0] not in (b"login", b"register"):
                batch.append(frames)
        self.trace[0] += ", pipelined"
        for frames in batch:
            peer.send_raw(frames)
            self.trace.append(f"sent {short(frames)[:300]}")
        self.stats.tally["requests"] += len(batch)
        deadline = time.monotonic() + 10.0
        for frames in batch:
            body = self.await_reply(peer, deadline)
            if body is None:
                self.finding(f"no reply within 10 s to a pipelined request ({len(batch)} sent)", frames)
                return
            self.check(body, frames)
            self.trace.append(f"reply {str(body)[:200]}")
        extra = self.sync(peer)
        if extra is None:
            self.finding("no ping answered at the end of the round")
        elif extra:
            self.finding(f"{len(extra)} replies more than requests", None, extra)

    def one_by_one(self, peer: Peer) -> None:
        """Requests sent one at a time, each reply awaited before the next request."""
        r = self.rng
        for _ in range(r.randint(3, 12)):
            frames = self.gen.frames()
            self.stats.tally["requests"] += 1
            risky = len(frames) > MAX_FRAMES or any(len(f) > FRAME_CUT for f in frames)
            peer.send_raw(frames)
            self.trace.append(f"sent {short(frames)[:300]}")
            if risky:
                # The broker may answer it and cut the connection, or cut it unanswered. Requests sent
                # after it may be lost with the connection, so it is the last request of the round.
                replies = self.sync(peer)
                if replies is None:
                    self.finding("no ping answered after a request that may be cut", frames)
                elif len(replies) > 1:
                    self.finding(f"{len(replies)} replies to one request", frames, replies)
                elif not replies:
                    self.stats.tally["allowed cuts"] += 1
                for body in (replies or [])[:1]:
                    self.check(body, frames)
                break
            body = self.await_reply(peer, time.monotonic() + 10.0)
            if body is None:
                self.finding("no reply within 10 s", frames)
                break
            self.check(body, frames)
            self.trace.append(f"reply {str(body)[:200]}")
        else:
            extra = self.sync(peer)
            if extra is None:
                self.finding("no ping answered at the end of the round")
            elif extra:
                self.finding(f"{len(extra)} replies more than requests", None, extra)

    def close_all(self) -> None:
        """Close every fuzz socket still open (Peers and raw peers alike)."""
        for s in self.open:
            s.close()
        self.open.clear()
