"""Integration fuzzer: random and mutated input on every port of a real broker, while a canary pair
of clients keeps chatting, and proof that the broker keeps serving and returns to its baseline.

One broker subprocess (tests/harness.py, CURVE, --login-timeout 2) is attacked in seeded rounds:

  a. CURVE DEALERs (harness Peers, anonymous or logged in as a throwaway user) send random frame
     lists (one at a time, or pipelined): real request words or random bytes in frame 0, bodies of
     random bytes, JSON objects of the right fields with hostile values, or valid bodies with a few
     byte mutations. Each request gets exactly one well-formed reply (docs/protocol.md sections 6
     and 8: status ok or error, a known code other than E_INTERNAL, E_FRAMES exactly for a wrong
     frame count, E_UNKNOWN_TYPE for an unknown word, `req` echoed as section 6 says); only a
     request of more than 16 frames or with a frame over 64 KiB may instead get its connection cut.
  b. raw ZMTP peers (tests/zmtp.py) on the ROUTER: garbage greetings, garbage after the greeting,
     NULL, forged vouches, stolen routing ids, random frame flags, huge frame headers, and valid
     CURVE requests (which must be answered). Every such connection must end up closed.
  c. the same on the PUB (keys without a session are refused; an admitted key gets its welcome,
     bad subscriptions are cut) and on the key endpoint (a [b"key", b"{}"] request is answered).
  d. plain TCP connections that send nothing or a few bytes and close.

After every round the canary pair exchanges a private message and a broadcast. At the end every
fuzz socket is closed and the broker must come back to its baseline of file descriptors and RSS,
hold no file descriptor of a TCP connection that has ended (named by the round that opened it), be
alive, and have logged no traceback and no internal error. Findings are collected and reported
together, each with the seed, the round and the frames that caused it.

The seed is fixed (override with FUZZ_SEED=n to explore) and printed in every assertion message.
Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import pytest
import zmq

from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.wire import REQUEST_TYPES
from tests.harness import Broker, Peer, ok, rss
from tests.zmtp import COMMAND, LONG, MORE, ZmtpError, ZmtpPeer, z85_to_raw

SEED = int(os.environ.get("FUZZ_SEED", "20241122"))
ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "100"))
"""Fuzz rounds (each followed by a canary exchange): about 25 s in all on 2 cores, 10 of them
waiting for the key endpoint to cut its silent connections."""

TYPES = list(REQUEST_TYPES)
FIELDS = {kind: [f.encode_name for f in msgspec.structs.fields(cls) if f.encode_name != "req"]
          for kind, cls in REQUEST_TYPES.items()}
"""Request word -> the JSON names of its fields besides `req` (read from protocol.messages)."""
CODES = {code.value for code in ErrorCode}
MAX_REQ = 2**53
MAX_FRAMES = 16
"""A request of more than this many frames may get its connection cut (broker --max-frames)."""
FRAME_CUT = 64 * 1024 - 64
"""A frame above this many bytes may get its connection cut (ZMQ_MAXMSGSIZE 64 KiB, CURVE adds 33)."""
MIB = 1024 * 1024
RSS_SLACK = 64 * MIB
FD_SLACK = 4
CLOSE_WITHIN = 10.0
"""Seconds within which the broker closes a ROUTER or PUB connection that broke the protocol or
stayed silent (--login-timeout 2 plus a tick)."""
KEY_CLOSE_WITHIN = 16.0
"""The same for the key endpoint, whose silence limit is 10 s (not configurable)."""
SENTINEL_BASE = 2**52 + 7_000_000
"""Request ids of the fuzzer's own pings (never produced by the generator)."""

INTERESTING = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\\u", b"\\ud83d", b"\\ude00", b"1e400",
               b"-0", b"null", b"\x00", b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x98",
               b"\xef\xbb\xbf", b"9" * 30, b"[" * 1500, b"true", b" ", b"\n"]  # fmt: skip
"""Byte strings worth inserting: JSON punctuation, escapes, odd numbers, invalid UTF-8, a BOM."""
INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
                b"\xe2\x98", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]  # fmt: skip
SURROGATES = [b"\\ud83d", b"\\ude00", b"\\uDBFF", b"\\udc00\\ud800", b"\\ud83d\\u0041"]
ODD_TEXT = ["\u00a0", " \t\n", "\u2028", "\U0001f600" * 3, "\u202e rtl", "\x00nul", "a\u0301", "\ufeffbom",
            "\U0010ffff", "x" * 1001, "é" * 600, "\u3000"]  # fmt: skip


# -- JSON with hostile fragments ------------------------------------------------------------------------

class Raw(bytes):
    """An already encoded JSON fragment, written as is (invalid on purpose, or beyond Python's json)."""


class Obj(list):
    """A JSON object as (key, value) pairs: keeps the order and allows duplicate keys."""


def enc(value) -> bytes:
    """Encode `value` as JSON bytes, `Raw` fragments verbatim (so the result may be invalid)."""
    if isinstance(value, Raw):
        return bytes(value)
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if isinstance(value, Obj):
        return b"{" + b",".join(enc(k) + b":" + enc(v) for k, v in value) + b"}"
    return b"[" + b",".join(enc(v) for v in value) + b"]"


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


# -- the generator ----------------------------------------------------------------------------------------

class Gen:
    """Random requests from one seeded random.Random.

    names: usernames the bodies may mention (canaries, a fuzz target account, unknown and invalid
    names); passwords: the target's password among random ones. Names of the accounts the test logs
    in deliberately are never generated (so fuzz logins cannot replace or block them)."""

    def __init__(self, rng: random.Random, names: list[str], passwords: list[str]) -> None:
        self.rng = rng
        self.names = names
        self.passwords = passwords
        self._req = 0
        self.long_left = 0  # long strings still allowed in the body being built

    def next_req(self) -> int:
        self._req += 1
        return self._req

    def text(self, lo: int = 1, hi: int = 300) -> str:
        r = self.rng
        if r.random() < 0.2:
            return r.choice(ODD_TEXT)
        alphabet = "abcdefghij KLMNOP 0123456789 \u00e9\u4e2d\U0001f600\t"
        return "t" + "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi) - 1))

    def name(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.5:
            return r.choice(self.names)
        if pick < 0.75:
            return "fz" + "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(r.randint(1, 30)))
        return r.choice(["all", "ALL", "ab", "x" * 33, "y" * 64, "z" * 65, "bad name", "\u00c4\u00d6\u00dc", "",
                         "user\x00", "\U0001f600" * 4])

    def long_string(self):
        r = self.rng
        self.long_left -= 1
        size = r.choice([1000, 4097, 20_000, 60_000 - r.randrange(2000)])
        if r.random() < 0.7:
            return "L" * size
        return "\u00e9" * (size // 2)  # 2 UTF-8 bytes per character

    def value(self, depth: int = 0):
        """A random, mostly hostile, JSON value (Raw fragments included)."""
        r = self.rng
        k = r.randrange(15)
        if k == 0:  # huge ints
            if r.random() < 0.2:
                return Raw(b"9" * r.randint(4301, 6000))
            return r.choice([MAX_REQ, MAX_REQ + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**100, 10**1000])
        if k == 1:  # negatives
            return r.choice([-1, -MAX_REQ, -r.randrange(1, 10**12), Raw(b"-0")])
        if k == 2:  # floats
            if r.random() < 0.4:
                return Raw(r.choice([b"1e400", b"-1e400", b"7e0", b"1E2", b"1.0e-400", b"0.1e1", b"7.0"]))
            return r.choice([0.0, -0.0, 0.5, 1.0, 7.0, 1e308, -1e-308, r.uniform(-1e6, 1e6)])
        if k == 3:
            return None
        if k == 4:
            return r.choice([True, False])
        if k == 5:  # nested arrays, deep or unbalanced
            if r.random() < 0.5 and depth < 3:
                return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
            n = r.choice([3, 100, 900, 1100, 5000])
            return Raw(b"[" * n + (b"]" * n if r.random() < 0.8 else b""))
        if k == 6 and self.long_left > 0:
            return self.long_string()
        if k == 7:  # invalid UTF-8 inside a string
            return Raw(b'"ab' + r.choice(INVALID_UTF8) + b'cd"')
        if k == 8:  # lone surrogate escapes
            return Raw(b'"x' + r.choice(SURROGATES) + b'y"')
        if k == 9:
            return self.text(1, 40)
        if k == 10:
            return r.choice([0, 1, 2, 7, 1000, 1001, 10_000, 10_001, 10_080, 10_081])
        if k == 11:
            return self.name()
        if k == 12 and depth < 3:
            return Obj((self.key(), self.value(depth + 1)) for _ in range(r.randint(0, 4)))
        if k == 13:
            return r.choice(["", [], Obj(), Raw(b"{}"), Raw(b'""')])
        return self.text(1, 12)

    def key(self):
        r = self.rng
        if r.random() < 0.15:
            return Raw(r.choice([b'"\\ud800"', b'"k\xff"', b'""', b'"\\u0000"']))
        return r.choice(["x", "Req", "REQ", "req ", "", "to", "ids", "text", "\u00e9", "version"])

    def valid_field(self, f: str):
        """A value of the right type and range for field `f`."""
        r = self.rng
        if f == "version":
            return 1
        if f == "client":
            return r.choice(["", "fuzz/1.0", "c" * 200])
        if f == "user":
            return self.name()
        if f == "password":
            return r.choice(self.passwords)
        if f == "minutes":
            return r.randint(1, 10080)
        if f == "id":
            return "%032x" % r.getrandbits(128) if r.random() < 0.9 else "i" * 64
        if f == "text":
            return self.text()
        if f == "to":
            return [self.name() for _ in range(r.randint(1, 4))]
        if f == "after":
            return r.choice([0, r.randint(0, 200), MAX_REQ])
        if f == "limit":
            return r.randint(1, 10_000)
        if f == "ids":
            return [r.choice([1, r.randint(1, 5000), MAX_REQ]) for _ in range(r.randint(1, 8))]
        return self.value()

    def valid_body(self, kind: bytes) -> bytes:
        return enc(Obj([("req", self.next_req()), *((f, self.valid_field(f)) for f in FIELDS[kind])]))

    def fields_body(self, kind: bytes) -> bytes:
        """A JSON object with the fields of `kind`, values random (valid or hostile), some missing,
        some unknown or duplicated; now and then not an object at all."""
        r = self.rng
        if r.random() < 0.05:
            return enc(self.value())
        pairs = Obj()
        valid = r.choice([0.5, 0.8, 0.95])  # the share of fields drawn valid
        for f in ["req", *FIELDS[kind]]:
            if r.random() < 0.1:
                continue
            if r.random() < valid:
                pairs.append((f, self.next_req() if f == "req" else self.valid_field(f)))
            else:
                pairs.append((f, self.value()))
        for _ in range(r.choice([0, 0, 0, 1, 2])):
            pairs.append((self.key(), self.value()))
        if pairs and r.random() < 0.1:
            pairs.append(r.choice(pairs))  # a duplicate key
        r.shuffle(pairs)
        body = enc(pairs)
        if r.random() < 0.1:
            body = r.choice([b" ", b"\n\t", b"\xef\xbb\xbf", b""]) + body + r.choice([b" ", b"\n", b"x", b"{}", b""])
        return body

    def mutate(self, data: bytes) -> bytes:
        """A few random byte mutations: flip, insert, delete, duplicate, truncate."""
        r = self.rng
        b = bytearray(data)
        for _ in range(r.randint(1, 4)):
            op = r.randrange(5)
            i = r.randrange(len(b) + 1)
            if op == 0 and b:
                b[min(i, len(b) - 1)] ^= 1 << r.randrange(8)
            elif op == 1:
                b[i:i] = r.choice(INTERESTING) if r.random() < 0.7 else bytes([r.randrange(256)])
            elif op == 2:
                del b[i:i + r.randint(1, 4)]
            elif op == 3:
                b[i:i] = b[i:i + r.randint(1, 16)]
            else:
                del b[i:]
        return bytes(b)

    def random_bytes(self) -> bytes:
        r = self.rng
        size = r.choice([0, r.randint(1, 16), r.randint(17, 300), r.randint(17, 300), r.randint(1000, 60_000)])
        if r.random() < 0.3:
            return b"".join(r.choice(INTERESTING) for _ in range(r.randint(1, 12)))[:60_000]
        return r.randbytes(size)

    def body(self, kind: bytes) -> bytes:
        self.long_left = 1
        pick = self.rng.random()
        if pick < 0.2:
            return self.random_bytes()
        if pick < 0.55:
            return self.fields_body(kind)
        if pick < 0.65:
            return self.valid_body(kind)
        return self.mutate(self.valid_body(kind))

    def word(self) -> bytes:
        r = self.rng
        if r.random() < 0.8:
            return r.choice(TYPES)
        return r.choice([r.randbytes(r.randint(0, 20)), b"HELLO", b"Ping", b"ping\x00", b" who", b"", b"lats",
                         r.choice(TYPES) + b"x", b"\xff" * 3, b"reply", b"key"])

    def frames(self, allow_cut: bool = True) -> list[bytes]:
        """One request: 0..5 frames (0 frames is sent as one empty frame, the least a message has),
        frame 0 a request word or random bytes; with `allow_cut`, now and then more than 16 frames
        or a frame over 64 KiB."""
        r = self.rng
        word = self.word()
        kind = word if word in REQUEST_TYPES else r.choice(TYPES)
        n = r.choices([2, 1, 3, 4, 5, 0, 17], weights=[62, 9, 9, 6, 6, 4, 4 if allow_cut else 0])[0]
        if n == 0:
            return [b""]
        if n == 17:
            n = r.randint(17, 30)
            return [word, *(self.rng.randbytes(r.randint(0, 30)) for _ in range(n - 1))]
        frames = [word, *(self.body(kind) for _ in range(n - 1))]
        if allow_cut and r.random() < 0.03:
            frames[r.randrange(len(frames))] = r.randbytes(r.randint(64 * 1024 + 1, 100_000))
        if not allow_cut:
            frames = [f if len(f) <= FRAME_CUT else f[:FRAME_CUT] for f in frames]
        return frames


# -- the fuzzer ---------------------------------------------------------------------------------------------

@dataclass
class Stats:
    """What the fuzzer did, printed at the end: rounds {kind: count}, seconds {kind: seconds spent},
    replies {error code or status: count}, tally {what: count} ("requests", "allowed cuts", "raw peers",
    "raw closed", "key answers", "welcomes", "tcp")."""

    rounds: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    replies: Counter[str] = field(default_factory=Counter)
    tally: Counter[str] = field(default_factory=Counter)


class Fuzzer:
    """Rounds of hostile input against the canaries' broker, drawn from `gen` (and its rng); the
    canaries' routing ids are stolen and the key holder's keys reused on the PUB; DEALER rounds may
    log in as one of `throwaways` (password `throwaway_password`)."""

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

    # -- raw ZMTP peers ------------------------------------------------------------------------------
    def raw(self, port: int, mechanism: str = "CURVE", **kw) -> ZmtpPeer:
        self.written = []
        p = ZmtpPeer("127.0.0.1", port, mechanism=mechanism,
                     server_key=self.server_key if mechanism == "CURVE" else None, timeout=5.0, **kw)
        self.open.append(p)
        self.stats.tally["raw peers"] += 1
        return p

    def must_close(self, p: ZmtpPeer, within: float = CLOSE_WITHIN) -> None:
        self.pending.append((p, time.monotonic() + within, self.where))
        try:  # remember which broker socket serves this connection, to name it if it leaks
            mine, theirs = p.sock.getsockname()[1], p.sock.getpeername()[1]
        except OSError:
            return
        for inode, ports in tcp_table().items():
            if ports == (theirs, mine) and inode != "0":
                self.broker_sockets[inode] = self.where + (
                    "\n    wrote: " + "; ".join(self.written) if self.written else "")

    def reap(self) -> None:
        """Check the raw peers the broker must have closed by their deadline."""
        for item in list(self.pending):
            p, deadline, where = item
            closed = not p.alive()
            if not closed and time.monotonic() < deadline:
                continue
            if closed:
                self.stats.tally["raw closed"] += 1
            else:
                self.findings.append(f"[seed {SEED}] {where}: the broker did not close the connection in time")
            p.close()
            self.pending.remove(item)
            self.open.remove(p)

    def greeting(self, mechanism: bytes = b"CURVE") -> bytes:
        return b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + mechanism.ljust(20, b"\0") + b"\0" * 32

    def quietly(self, action) -> bool:
        """Run `action`; True if it completed, False if the broker refused or closed (any error)."""
        try:
            action()
            return True
        except (OSError, ZmtpError):
            return False

    def writes(self, p: ZmtpPeer, steps: list[tuple[str, object]]) -> None:
        """Perform `steps` ((method name, argument) pairs on `p`, drawn beforehand so the random
        sequence does not depend on where the broker cut us off) until one fails."""
        self.written.extend(f"{method} {short(arg) if method == 'multipart' else repr(arg)[:200]}"
                            for method, arg in steps)

        def run():
            for method, arg in steps:
                if method == "raw":
                    p.send_raw(arg)
                elif method == "frame":
                    p.send_frame(arg)
                elif method == "more":
                    p.send_frame(arg, more=True)
                elif method == "multipart":
                    p.send_multipart(arg)
                else:  # "boxed": (inner flags, body) in a CURVE MESSAGE
                    p._send_message(*arg)
        self.quietly(run)

    def garbage(self, p: ZmtpPeer, variant: str) -> None:
        """The variants every port shares: nothing, garbage greetings, garbage after a greeting."""
        r = self.rng
        data = b""
        if variant == "garbage_greeting":
            data = r.randbytes(r.randint(1, 128))
            if r.random() < 0.5:
                data = b"\xff" + data
        elif variant == "partial_greeting":
            data = self.greeting()[: r.randint(1, 63)]
        elif variant == "greeting_garbage":
            mech = r.choice([b"CURVE", b"NULL", b"PLAIN", b"GSSAPI", r.randbytes(20)])
            data = self.greeting(mech) + r.randbytes(r.randint(1, 600))
        elif variant == "old_version":
            data = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([r.choice([0, 1, 2])]) + r.randbytes(r.randint(0, 80))
        if data:
            self.writes(p, [("raw", data)])

    def after_handshake(self, p: ZmtpPeer, variant: str) -> None:
        """Misbehaviour after a completed handshake."""
        r = self.rng
        steps: list[tuple[str, object]] = []
        if variant == "then_garbage":
            steps = [("raw", r.randbytes(r.randint(1, 2000)))]
        elif variant == "random_flags":  # unencrypted frames with random flags
            for _ in range(r.randint(1, 6)):
                body = r.randbytes(r.randint(0, 255))
                steps.append(("raw", bytes([r.randrange(256) & ~LONG, len(body)]) + body))
        elif variant == "boxed_flags":  # well encrypted frames with random inner flags
            for _ in range(r.randint(1, 6)):
                body = r.choice([r.randbytes(r.randint(0, 100)), b"\x05ERROR\x03bad", b"\x04PING\x00\x10ab",
                                 b"\x09SUBSCRIBE", b"\x07MESSAGE" + r.randbytes(40)])
                steps.append(("boxed", (r.choice([0, MORE, COMMAND, MORE | COMMAND]), body)))
        elif variant == "huge_header":
            size = r.choice([64 * 1024 + 1, 1 << 20, 1 << 31, (1 << 63) - 1, (1 << 64) - 1])
            head = bytes([LONG | r.choice([0, MORE, COMMAND])]) + struct.pack(">Q", size)
            steps = [("raw", head + r.randbytes(r.randint(0, 4000)))]
        elif variant == "endless_more":
            steps = [("more", r.randbytes(r.randint(0, 200))) for _ in range(r.randint(20, 60))]
        self.writes(p, steps)

    def round_raw_router(self) -> None:
        r = self.rng
        variant = r.choice(["silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version",
                            "null", "bad_vouch", "stolen_rid", "then_garbage", "random_flags", "boxed_flags",
                            "huge_header", "endless_more", "requests", "requests", "requests"])
        self.where += f" raw-router({variant})"
        port = self.broker.port
        if variant in ("silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version"):
            p = self.raw(port)
            self.garbage(p, variant)
        elif variant == "null":
            p = self.raw(port, "NULL", routing_id=b"n" + r.randbytes(15))

            def attempt():
                p.handshake()
                p.send_multipart([b"hello", b'{"req": 1, "version": 1}'])
                frames = p.recv_multipart(timeout=1.0)
                self.finding("a NULL connection to the ROUTER got an answer", frames)
            self.quietly(attempt)
        elif variant == "bad_vouch":  # a public key that does not match the secret key
            p = self.raw(port, public_key=r.randbytes(32))
            if self.quietly(p.handshake):
                self.finding("the ROUTER completed a handshake whose vouch does not open")
        elif variant == "stolen_rid":
            p = self.raw(port, routing_id=r.choice(self.canary_rids))

            def attempt():
                p.handshake()
                p.send_multipart([b"who", b'{"req": 1}'])
                frames = p.recv_multipart(timeout=0.5)
                if len(frames) == 2 and b'"ok"' in frames[1]:
                    self.finding("a stolen routing id got an ok reply", frames)
            self.quietly(attempt)
        else:
            rid = r.choice([b"", b"r" + r.randbytes(15), r.randbytes(r.randint(1, 255))])
            if variant == "requests":
                rid = r.choice([b"", b"r" + r.randbytes(15)])
            p = self.raw(port, routing_id=rid)
            if not self.quietly(p.handshake):
                self.finding(f"a valid CURVE handshake (routing id {rid!r}) was refused")
            elif variant == "requests":
                self.raw_requests(p)
            else:
                self.after_handshake(p, variant)
        self.must_close(p)

    def raw_requests(self, p: ZmtpPeer) -> None:
        """Well-formed frames on a raw CURVE connection: each request gets exactly one reply."""
        for _ in range(self.rng.randint(1, 5)):
            frames = self.gen.frames(allow_cut=False)
            self.stats.tally["requests"] += 1
            try:
                p.send_multipart(frames)
                body = self.raw_reply(p, 10.0)
            except (OSError, ZmtpError) as exc:
                self.finding(f"no reply on a raw CURVE connection ({type(exc).__name__}: {exc})", frames)
                return
            self.check(body, frames)
        self._sentinel += 1
        try:
            p.send_multipart([b"ping", b'{"req": %d}' % self._sentinel])
            body = self.raw_reply(p, 10.0)
        except (OSError, ZmtpError) as exc:
            self.finding(f"no reply to a ping on a raw CURVE connection ({exc})")
            return
        if body.get("req") != self._sentinel:
            self.finding("a reply more than requests on a raw CURVE connection", None, body)

    def raw_reply(self, p: ZmtpPeer, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frames = p.recv_multipart(timeout=max(0.0, deadline - time.monotonic()))
            kind, body = self.decode(frames)
            if kind == b"reply" and body is not None:
                return body

    # -- c. the PUB and the key endpoint -------------------------------------------------------------
    def round_raw_pub(self) -> None:
        r = self.rng
        variant = r.choice(["silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version",
                            "null", "no_session", "bad_vouch", "admitted_frames", "admitted_frames",
                            "then_garbage", "random_flags", "boxed_flags", "huge_header", "endless_more",
                            "welcome", "welcome"])
        self.where += f" raw-pub({variant})"
        port = self.broker.pub_port
        mine = {"public_key": z85_to_raw(self.keyholder.public), "secret_key": z85_to_raw(self.keyholder.secret)}
        if variant in ("silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version"):
            p = self.raw(port, socket_type="SUB")
            self.garbage(p, variant)
        elif variant == "null":
            p = self.raw(port, "NULL", socket_type="SUB")

            def attempt():
                p.handshake()
                p.subscribe(b"")
                frames = p.recv_multipart(timeout=1.0)
                self.finding("a NULL SUB received from the PUB", frames)
            self.quietly(attempt)
        elif variant in ("no_session", "bad_vouch"):
            p = self.raw(port, socket_type="SUB", public_key=r.randbytes(32) if variant == "bad_vouch" else None)
            if self.quietly(p.handshake):
                self.finding(f"the PUB admitted a key without a session ({variant})")
        elif variant == "welcome":
            p = self.raw(port, socket_type="SUB", **mine)
            topic = b"welcome." + b"%032x" % r.getrandbits(128)
            try:
                p.handshake()
                p.subscribe(topic)
                frames = p.recv_multipart(timeout=5.0)
                mark = json.loads(frames[1]) if len(frames) == 2 else None
                if frames[0] != topic or not isinstance(mark, dict) or not isinstance(mark.get("seq"), int):
                    self.finding("a bad welcome", frames)
                else:
                    self.stats.tally["welcomes"] += 1
            except (OSError, ZmtpError, ValueError) as exc:
                self.finding(f"no welcome for a live session's key ({type(exc).__name__}: {exc})")
            p.close()  # subscribed, so the broker keeps it: we close it
            self.open.remove(p)
            return
        else:
            p = self.raw(port, socket_type="SUB", **mine)
            if not self.quietly(p.handshake):
                self.finding("the PUB refused the key of a live session")
            elif variant == "admitted_frames":
                self.writes(p, self.subscription_steps())
            else:
                self.after_handshake(p, variant)
        self.must_close(p)

    def subscription_steps(self) -> list[tuple[str, object]]:
        """1 to 6 writes for an admitted SUB (see writes()): random topics, unsubscriptions and
        frames that are no subscription, subscriptions of several frames, frames over the PUB's
        1 KiB message limit."""
        r = self.rng
        steps: list[tuple[str, object]] = []
        for _ in range(r.randint(1, 6)):
            pick = r.randrange(4)
            if pick == 0:  # a random topic
                steps.append(("frame", b"\x01" + r.randbytes(r.randint(0, 60))))
            elif pick == 1:  # an unsubscription, or not a subscription at all
                steps.append(("frame", r.choice([b"\x00", b"\x02", b""]) + r.randbytes(r.randint(0, 60))))
            elif pick == 2:  # a subscription of several frames
                steps.append(("multipart", [b"\x01bcast", *(r.randbytes(8) for _ in range(r.randint(1, 4)))]))
            else:  # over the PUB's 1 KiB message limit
                steps.append(("frame", b"\x01" + r.randbytes(r.randint(1025, 3000))))
        return steps

    def round_raw_key(self) -> None:
        r = self.rng
        variant = r.choice(["silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version",
                            "curve", "key", "key", "key_then_frames", "frames", "huge_header", "endless_more",
                            "libzmq"])
        self.where += f" raw-key({variant})"
        port = self.broker.key_port
        if variant == "libzmq":
            dealer = self.ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send_multipart([b"key", b"{}"])
            frames = self.read(dealer, time.monotonic() + 5.0)
            self.check_key(frames)
            dealer.close(0)
            return
        if variant in ("silent", "garbage_greeting", "partial_greeting", "greeting_garbage", "old_version"):
            p = self.raw(port, "NULL")
            self.garbage(p, variant)
        elif variant == "curve":
            p = self.raw(port, "CURVE")
            if self.quietly(p.handshake):
                self.finding("the key endpoint completed a CURVE handshake")
        else:
            p = self.raw(port, "NULL", routing_id=r.choice([b"", b"k" + r.randbytes(15)]))
            if not self.quietly(p.handshake):
                self.finding("the key endpoint refused a NULL handshake")
            elif variant in ("key", "key_then_frames"):
                try:
                    p.send_multipart([b"key", b"{}"])
                    self.check_key(p.recv_multipart(timeout=5.0))
                except (OSError, ZmtpError) as exc:
                    self.finding(f"a key request was not answered ({type(exc).__name__}: {exc})")
                if variant == "key_then_frames":
                    self.key_frames(p)
            elif variant == "frames":
                self.key_frames(p)
            else:
                self.after_handshake(p, variant)
        self.must_close(p, KEY_CLOSE_WITHIN)

    def key_frames(self, p: ZmtpPeer) -> None:
        r = self.rng

        steps: list[tuple[str, object]] = []
        for _ in range(r.randint(1, 5)):
            frames = [r.choice([b"key", b"KEY", b"", r.randbytes(r.randint(1, 10))])]
            frames += [r.randbytes(r.choice([0, 2, 100, 1000, 1025, 2000])) for _ in range(r.randint(0, 3))]
            steps.append(("multipart", frames))
        self.writes(p, steps)

    def check_key(self, frames: list[bytes] | None) -> None:
        if frames is None:
            self.finding("a key request was not answered within 5 s")
            return
        try:
            info = json.loads(frames[1]) if len(frames) == 2 and frames[0] == b"key" else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("curve") is not True \
                or info.get("public_key") != self.broker.server_key.decode() or info.get("port") != self.broker.port:
            self.finding("a bad key reply", frames)
        else:
            self.stats.tally["key answers"] += 1

    # -- d. plain TCP --------------------------------------------------------------------------------
    def round_tcp(self) -> None:
        r = self.rng
        self.where += " tcp"
        for _ in range(r.randint(1, 8)):
            port = r.choice([self.broker.port, self.broker.pub_port, self.broker.key_port])
            data = r.randbytes(r.randint(1, 64)) if r.random() < 0.6 else b""
            reset = r.random() < 0.3
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            self.stats.tally["tcp"] += 1
            try:
                s.sendall(data)
                if reset:  # close with a RST instead of a FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            s.close()

    def close_all(self) -> None:
        for s in self.open:
            s.close()
        self.open.clear()


# -- the broker's resources ----------------------------------------------------------------------------

def fds(pid: int) -> int:
    """Open file descriptors of process `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_table() -> dict[str, tuple[int, int]]:
    """Every IPv4/IPv6 TCP socket the kernel lists: inode -> (local port, remote port)."""
    table = {}
    for name in ("tcp", "tcp6"):
        with open(f"/proc/net/{name}") as f:
            next(f)
            for line in f:
                cols = line.split()
                table[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return table


def dead_sockets(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds open that no /proc/net table lists any more: TCP
    connections that ended (closed or reset) while the process kept their file descriptor."""
    listed = set(tcp_table())
    for name in ("udp", "udp6", "unix", "raw", "raw6", "netlink", "packet"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    listed.add(cols[6] if name == "unix" else cols[9] if len(cols) > 9 else cols[-1])
        except OSError:
            continue
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return held - listed


def poll_until(done, timeout: float, keepalive) -> bool:
    """Poll `done()` until it is true or `timeout` seconds passed, calling `keepalive()` every 2 s
    meanwhile (the canaries' sessions end after 15 s without a request). Returns done()."""
    deadline = time.monotonic() + timeout
    next_keepalive = time.monotonic() + 2.0
    while not done():
        now = time.monotonic()
        if now > deadline:
            return bool(done())
        if now >= next_keepalive:
            keepalive()
            next_keepalive = now + 2.0
        time.sleep(0.05)
    return True


class Canary:
    """Two logged-in users that exchange a private message and a broadcast, and the key holder
    (whose live session lets raw SUB peers in), which pings."""

    def __init__(self, broker: Broker, alice: Peer, bob: Peer, keyholder: Peer) -> None:
        self.broker, self.alice, self.bob, self.keyholder = broker, alice, bob, keyholder

    def keepalive(self) -> None:
        for p in (self.alice, self.bob, self.keyholder):
            ok(p.call("ping"))

    def exchange(self, tag: str) -> None:
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


# -- the test ---------------------------------------------------------------------------------------------

def start(ctx: zmq.Context, broker: Broker, rng: random.Random, made: list[Peer]) -> tuple[Canary, Fuzzer]:
    """Log the canaries and the key holder in, register the fuzz target and the throwaway users, and
    build the fuzzer on `rng`; every Peer opened is appended to `made`, for the caller to close."""
    tag = "%06x" % rng.getrandbits(24)

    def peer() -> Peer:
        p = Peer(ctx, broker)
        made.append(p)
        return p

    alice, bob, keyholder = peer(), peer(), peer()
    for p, name in ((alice, f"alice{tag}"), (bob, f"bob{tag}"), (keyholder, f"keys{tag}")):
        ok(p.register(name))
        ok(p.login(name, subscribe=p is not keyholder))
    target, target_pw = f"fz{tag}", "fuzz target password"
    throwaway_pw = "throwaway " + uuid.uuid4().hex
    setup = peer()
    ok(setup.register(target, target_pw))
    throwaways = [f"thr{tag}{i}" for i in range(2)]
    for name in throwaways:
        ok(setup.register(name, throwaway_pw))
    setup.close()
    canary = Canary(broker, alice, bob, keyholder)
    names = [alice.user, bob.user, target, "nobody" + tag]
    passwords = [target_pw, "short", "p" * 1025, "\u00e9" * 600, "x" * 4097, "12345678", "correct horse x"]
    return canary, Fuzzer(canary, ctx, Gen(rng, names, passwords), throwaways, throwaway_pw)


def run_rounds(fuzzer: Fuzzer, canary: Canary) -> None:
    """ROUNDS rounds, each of a kind drawn by weight and followed by a canary exchange."""
    rounds = {"dealer": fuzzer.round_dealer, "router": fuzzer.round_raw_router, "pub": fuzzer.round_raw_pub,
              "key": fuzzer.round_raw_key, "tcp": fuzzer.round_tcp}
    for n in range(ROUNDS):
        kind = fuzzer.rng.choices(list(rounds), weights=[40, 22, 16, 12, 10])[0]
        fuzzer.where = f"round {n}"
        fuzzer.trace = []
        fuzzer.stats.rounds[kind] += 1
        t0 = time.monotonic()
        rounds[kind]()
        fuzzer.stats.seconds[kind] = fuzzer.stats.seconds.get(kind, 0.0) + time.monotonic() - t0
        fuzzer.reap()
        canary.exchange(f"round {n} ({fuzzer.where})")


def settle(fuzzer: Fuzzer, canary: Canary, pid: int, base_fds: int, base_rss: int) -> tuple[int, int]:
    """Wait for the broker to close every raw peer it must, close the other fuzz sockets, and add a
    finding when the broker is not back within 20 s to its baseline of file descriptors and RSS
    (bytes), or still holds the socket of a connection that ended. Returns (fds, RSS) after it."""
    fuzzer.where = "end"

    def all_closed() -> bool:
        fuzzer.reap()  # each pending peer is judged at its own deadline
        return not fuzzer.pending
    poll_until(all_closed, KEY_CLOSE_WITHIN + 5, canary.keepalive)
    fuzzer.close_all()
    canary.exchange("after")

    def at_baseline() -> bool:
        return fds(pid) <= base_fds + FD_SLACK and rss(pid) <= base_rss + RSS_SLACK
    if not poll_until(at_baseline, 20, canary.keepalive):
        now_fds, now_rss = fds(pid), rss(pid)
        fuzzer.findings.append(
            f"[seed {SEED}] the broker did not return to its baseline within 20 s: "
            f"fds {now_fds} (baseline {base_fds}, allowed +{FD_SLACK}), "
            f"RSS {now_rss / MIB:.1f} MiB (baseline {base_rss / MIB:.1f} MiB, allowed +{RSS_SLACK // MIB})")
    now_fds, now_rss = fds(pid), rss(pid)
    if not poll_until(lambda: not dead_sockets(pid), 5, canary.keepalive):
        leaks = sorted((fuzzer.broker_sockets.get(inode, "a connection the fuzzer did not map"), inode)
                       for inode in dead_sockets(pid))
        for where, inode in leaks:
            head, _, wrote = where.partition("\n")
            fuzzer.findings.append(f"[seed {SEED}] {head}: the broker still holds the file descriptor of this "
                                   f"connection (socket inode {inode}), which ended on both sides\n{wrote}")
    return now_fds, now_rss


def check_broker_health(fuzzer: Fuzzer, broker: Broker) -> None:
    """Add a finding for a broker that has died or logged a traceback or an internal error."""
    log = broker.log_text()
    if broker.proc.poll() is not None:
        fuzzer.findings.append(f"[seed {SEED}] the broker died: exit status {broker.proc.returncode}")
    for bad in ("Traceback", "internal error"):
        if bad in log:
            at = log.index(bad)
            fuzzer.findings.append(f"[seed {SEED}] the broker logged {bad!r}:\n{log[max(0, at - 500):at + 2500]}")


def report(stats: Stats, base: tuple[int, int], now: tuple[int, int], started: float, fuzz_done: float) -> None:
    """Print what the fuzzer did, the broker's (fds, RSS bytes) at the baseline and at the end, and
    the seconds spent (monotonic `started` and `fuzz_done`)."""
    seconds = {k: round(v, 1) for k, v in stats.seconds.items()}
    t = stats.tally
    print(f"\nfuzz seed={SEED} rounds={dict(stats.rounds)} seconds={seconds} requests={t['requests']} "
          f"replies={dict(stats.replies)} allowed cuts={t['allowed cuts']} raw peers={t['raw peers']} "
          f"(closed by the broker: {t['raw closed']}) key answers={t['key answers']} welcomes={t['welcomes']} "
          f"tcp={t['tcp']}\nfds {base[0]} -> {now[0]}, RSS {base[1] / MIB:.1f} -> {now[1] / MIB:.1f} MiB; "
          f"fuzzing {fuzz_done - started:.1f} s, total {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(120)
def test_fuzz_every_port_while_the_canaries_chat(tmp_path, ctx):
    started = time.monotonic()
    rng = random.Random(SEED)
    broker = Broker(tmp_path / "data", "--login-timeout", "2")
    made: list[Peer] = []
    fuzzer = None
    try:
        canary, fuzzer = start(ctx, broker, rng, made)
        canary.exchange("baseline")
        pid = broker.proc.pid
        base = fds(pid), rss(pid)
        run_rounds(fuzzer, canary)
        fuzz_done = time.monotonic()
        now = settle(fuzzer, canary, pid, *base)
        canary.exchange("final")
        check_broker_health(fuzzer, broker)
        report(fuzzer.stats, base, now, started, fuzz_done)
        assert not fuzzer.findings, f"[seed {SEED}] {len(fuzzer.findings)} findings:\n" + "\n".join(fuzzer.findings)
    finally:
        if fuzzer is not None:
            fuzzer.close_all()
        for p in made:
            p.close()
        broker.stop()
