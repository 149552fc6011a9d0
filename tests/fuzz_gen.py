"""The integration fuzzer's generator (tests/test_fuzz_integration.py): random, mostly hostile
requests from one seeded random.Random, as lists of frames (bytes) for a DEALER or a raw ZMTP peer.

JSON is written by `enc`, which keeps key order, allows duplicate keys and writes `Raw` fragments
verbatim (invalid on purpose, or beyond Python's json). Pure: no zmq, no sockets, no clock.
"""

from __future__ import annotations

import json
import random

import msgspec

from zmq_chat.protocol.wire import REQUEST_TYPES

TYPES = list(REQUEST_TYPES)
FIELDS = {kind: [f.encode_name for f in msgspec.structs.fields(cls) if f.encode_name != "req"]
          for kind, cls in REQUEST_TYPES.items()}
"""Request word -> the JSON names of its fields besides `req` (read from protocol.messages)."""
MAX_REQ = 2**53
"""The largest `req` a request may carry (docs/protocol.md section 3)."""
FRAME_CUT = 64 * 1024 - 64
"""A frame above this many bytes may get its connection cut (ZMQ_MAXMSGSIZE 64 KiB, CURVE adds 33)."""

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
