"""The integration fuzzer's rounds below the DEALER (tests/test_fuzz_integration.py): raw ZMTP peers
(tests/zmtp.py) on the ROUTER, the PUB and the key endpoint, and plain TCP connections. Each raw
peer the broker must close is checked at its deadline (`reap`); the broker-side socket serving it
is remembered, to name the round that opened a connection whose file descriptor leaks.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import zmq

from tests.fuzz_harness import SEED, DealerFuzzer, short
from tests.proc_net import tcp_table
from tests.zmtp import COMMAND, LONG, MORE, ZmtpError, ZmtpPeer, z85_to_raw

CLOSE_WITHIN = 10.0
"""Seconds within which the broker closes a ROUTER or PUB connection that broke the protocol or
stayed silent (--login-timeout 2 plus a tick)."""
KEY_CLOSE_WITHIN = 16.0
"""The same for the key endpoint, whose silence limit is 10 s (not configurable)."""


class Fuzzer(DealerFuzzer):
    """The DEALER rounds of DealerFuzzer, and the rounds of raw ZMTP peers on the ROUTER (b), on the
    PUB and the key endpoint (c), and of plain TCP (d)."""

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
