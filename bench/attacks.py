"""What one hostile peer can cost the broker (issue #7), measured on a real broker on 127.0.0.1.

    python bench/attacks.py [--json FILE] [--only mfl]

m  memory: the broker's RSS growth caused by one connection sending endless MORE frames, one
   announcing a 1 GiB frame on the PUB, one asking 300 history pages and never reading, and 500
   connections that never log in (bound: 64 MiB per connection);
f  flood: a canary pair's private-message latency p50/p99 alone, then while one logged-in user
   sends requests as fast as it can (target: p99 within 2x);
l  logins: a storm of wrong passwords from 100 loopback addresses; 20 logins from fresh addresses
   during it, each timed (target: 19 of 20 within 5 s); and 30 addresses guessing one account's
   password for 9 s (verifications counted; the owner's login timed).

The cost of CURVE against NULL is measured by bench/run.py (scenario 1) and chat-loadtest
--compare-insecure.

Traffic goes to 127.0.0.1 only (the storms use 127.0.x.y source addresses); every phase is bounded
in time. Figures vary with the machine; the script prints each with its target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Broker, Peer, ok, rss  # noqa: E402
from tests.zmtp import PeerClosed, ZmtpPeer, z85_to_raw  # noqa: E402

ROWS: list[dict] = []
MIB = 1024 * 1024


def row(figure: str, value: float, unit: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "MISSED")
    ROWS.append({"figure": figure, "value": value, "unit": unit, "target": target, "verdict": verdict})
    print(f"{figure:<58} {value:>12,.2f} {unit:<8} {target:<22} {verdict}", flush=True)


def broker(*flags: str, relaxed: bool = False) -> Broker:
    """A broker with the default limits (the test harness lifts some; put them back)."""
    defaults = {"--rate-limit": "20", "--max-registrations-per-ip": "10", "--max-failed-logins-per-ip": "20",
                "--max-queued-logins-per-ip": "8", "--max-connections-per-ip": "64", "--connection-rate": "10"}
    given = set(flags[::2])
    rest = [] if relaxed else [x for k, v in defaults.items() if k not in given for x in (k, v)]
    return Broker(Path(tempfile.mkdtemp(prefix="chat-attack-")), *flags, *rest)


def user(ctx: zmq.Context, b: Broker, name: str, **kw) -> Peer:
    p = Peer(ctx, b, **kw)
    ok(p.register(name))
    ok(p.login(name))
    return p


def raw(b: Broker, port: int | None = None, **kw) -> ZmtpPeer:
    return ZmtpPeer("127.0.0.1", port or b.port, mechanism="CURVE", server_key=z85_to_raw(b.server_key), **kw)


# -- m: memory ---------------------------------------------------------------------------------------

def memory(ctx: zmq.Context) -> None:
    """The broker's RSS growth caused by each memory attack in turn, on one broker (rows printed)."""
    b = broker("--max-message-chars", "5000", "--max-connections-per-ip", "1000", "--login-timeout", "5",
               "--rate-limit", "0", "--connection-rate", "100000")
    try:
        speaker = user(ctx, b, "speaker")
        for i in range(200):
            ok(speaker.broadcast(f"{i:04d} " + "y" * 4990))
        endless_more_frames(b)
        huge_pub_frame(b, speaker)
        unread_history(b, speaker)
        idle_connections(b)
    finally:
        b.stop()


def endless_more_frames(b: Broker) -> None:
    """One connection sends 60 kB frames with MORE set until the broker cuts it (at most 2 GiB)."""
    pid = b.proc.pid
    base = peak = rss(pid)
    with raw(b) as attacker:
        attacker.handshake()
        sent = 0
        try:
            while sent < 2048 * MIB:
                attacker.send_frame(b"x" * 60_000, more=True)
                sent += 60_000
                if sent % (2 * MIB) < 60_000:
                    peak = max(peak, rss(pid))
        except (OSError, PeerClosed):
            pass
        attacker.wait_closed(10)
    row("endless MORE frames: RSS growth before the cut", (peak - base) / MIB, "MiB", "<64 MiB", peak - base < 64 * MIB)
    row("endless MORE frames: bytes sent before the cut", sent / MIB, "MiB")


def huge_pub_frame(b: Broker, speaker: Peer) -> None:
    """A SUB with `speaker`'s keys announces a 1 GiB frame on the PUB port and sends 16 MiB of it."""
    pid = b.proc.pid
    base = rss(pid)
    with raw(b, b.pub_port, socket_type="SUB", public_key=z85_to_raw(speaker.public),
             secret_key=z85_to_raw(speaker.secret)) as attacker:
        attacker.handshake()
        attacker.send_raw(ZmtpPeer.frame_header(1 << 30, 0x02))
        try:
            attacker.send_raw(b"\x01" * (16 * MIB))
        except OSError:
            pass
        attacker.wait_closed(10)
    grown = max(0, rss(pid) - base)
    row("1 GiB frame announced on the PUB: RSS growth", grown / MIB, "MiB", "<64 MiB", grown < 64 * MIB)


def unread_history(b: Broker, speaker: Peer) -> None:
    """A logged-in user "reader" asks 300 history pages and never reads the replies."""
    pid = b.proc.pid
    ok(speaker.register("reader"))
    with raw(b) as reader:
        reader.handshake()
        reader.send_multipart([b"login", b'{"req": 1, "version": 1, "user": "reader", "password": "correct horse"}'])
        reader.recv_multipart(timeout=10)
        base = peak = rss(pid)
        for i in range(300):
            reader.send_multipart([b"history", f'{{"req": {100 + i}, "after": 0}}'.encode()])
        for _ in range(20):
            ok(speaker.call("who"))
            peak = max(peak, rss(pid))
    row("300 history pages never read: RSS growth", (peak - base) / MIB, "MiB", "<64 MiB", peak - base < 64 * MIB)


def idle_connections(b: Broker) -> None:
    """500 handshaken connections that never log in: RSS per connection, and how many the broker
    still holds 20 s later (its --login-timeout is 5 s)."""
    pid = b.proc.pid
    base = rss(pid)
    idle = [raw(b) for _ in range(500)]
    try:
        for p in idle:
            p.handshake()
        grown = rss(pid) - base
        row("500 connections that never log in: RSS per connection", grown / 500 / 1024, "KiB")
        deadline = time.monotonic() + 20
        while any(p.alive() for p in idle) and time.monotonic() < deadline:
            time.sleep(0.2)
        still_open = sum(p.alive() for p in idle)
        row("... still open 20 s later (--login-timeout 5)", still_open, "conns", "0", still_open == 0)
    finally:
        for p in idle:
            p.close()


# -- f: flood ----------------------------------------------------------------------------------------

def canary_latency(a: Peer, b: Peer, seconds: float, phase: str, rate: float = 15.0) -> HdrHistogram:
    """a sends to b at `rate`/s (send ids `phase` + a counter, so phases never collide with each
    other's ids); end-to-end latency (send to push received), microseconds."""
    hist = HdrHistogram(1, 60_000_000, 3)
    sent: dict[str, int] = {}
    poller = zmq.Poller()
    poller.register(a.dealer, zmq.POLLIN)
    poller.register(b.dealer, zmq.POLLIN)
    end = time.monotonic() + seconds
    nxt = time.monotonic()
    i = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= nxt:
            tag = f"{phase}{i}"
            i += 1
            sent[tag] = time.monotonic_ns()
            a.send_raw([b"send", json.dumps({"req": 10**9 + i, "id": tag, "to": [b.user], "text": tag}).encode()])
            nxt += 1.0 / rate
        for sock, _ in poller.poll(max(0.0, min(nxt, end) - time.monotonic()) * 1000):
            while True:
                try:
                    kind, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sock is b.dealer and kind == b"msg":
                    msg = json.loads(body)
                    t0 = sent.pop(msg.get("cid", ""), None)
                    if t0:
                        hist.record_value(max(1, (time.monotonic_ns() - t0) // 1000))
                    b.send_raw([b"ack", json.dumps({"req": 1, "ids": [msg["id"]]}).encode()])
    return hist


def flood_client(port: int, server_key: bytes, stop_at: float, counter) -> None:
    """A separate process at nice 19 (standing in for an attacker on another machine, so its own
    CPU use does not count against the broker): logs in as `flooder` and sends `send` requests as
    fast as its socket takes them, until `stop_at` (time.time())."""
    import os

    os.nice(19)
    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.curve_serverkey, d.curve_publickey, d.curve_secretkey = server_key, public, secret
    d.setsockopt(zmq.SNDTIMEO, 100)
    d.connect(f"tcp://127.0.0.1:{port}")
    d.send_multipart([b"login", b'{"req": 1, "version": 1, "user": "flooder", "password": "correct horse"}'])
    d.poll(10_000)
    i = 0
    while time.time() < stop_at:
        try:
            d.send_multipart([b"send", b'{"req": %d, "id": "f%d", "to": ["canaryb"], "text": "spam"}' % (i, i)])
            i += 1
        except zmq.Again:
            pass
        try:
            while True:
                d.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            pass
    counter.value = i
    d.close(0)
    ctx.term()


def flood(ctx: zmq.Context, seconds: float) -> None:
    import multiprocessing

    b = broker("--max-registrations-per-ip", "100")
    try:
        a, c = user(ctx, b, "canarya"), user(ctx, b, "canaryb")
        ok(a.register("flooder"))
        quiet = canary_latency(a, c, seconds, "quiet")
        counter = multiprocessing.Value("q", 0)
        proc = multiprocessing.Process(target=flood_client, args=(b.port, b.server_key, time.time() + seconds + 2, counter))
        proc.start()
        time.sleep(1.0)
        loud = canary_latency(a, c, seconds, "loud")
        proc.join(30)
        p99q, p99l = quiet.get_value_at_percentile(99) / 1000, loud.get_value_at_percentile(99) / 1000
        row("canary messages delivered alone / while flooded", quiet.get_total_count(), f"/{loud.get_total_count()}")
        row("canary private latency alone: p50", quiet.get_value_at_percentile(50) / 1000, "ms")
        row("canary private latency alone: p99", p99q, "ms")
        row("canary p50 while one user floods", loud.get_value_at_percentile(50) / 1000, "ms")
        row("canary p99 while one user floods", p99l, "ms", "<=2x alone", p99l <= 2 * p99q)
        row("flooder's requests sent (client at nice 19)", counter.value / (seconds + 2), "req/s")
        row("flooder's connections cut", b.log_text().count("over its rate limit"), "cuts")
    finally:
        b.stop()


# -- l: logins ---------------------------------------------------------------------------------------

def storm(ctx: zmq.Context) -> None:
    b = broker("--max-registrations-per-ip", "1000", "--max-connections-per-ip", "1000")
    stop = threading.Event()
    try:
        setup = Peer(ctx, b, source="127.0.1.1")
        for i in range(20):
            ok(setup.register(f"legit{i}"))
        ok(setup.register("stormed"))
        attackers = [Peer(ctx, b, source=f"127.0.2.{i + 1}") for i in range(100)]
        wrong = b'{"req": 1, "version": 1, "user": "stormed", "password": "wrong!!!"}'

        def hammer() -> None:
            poller = zmq.Poller()
            for d in attackers:
                poller.register(d.dealer, zmq.POLLIN)
                d.dealer.send_multipart([b"login", wrong])
            while not stop.is_set():
                for sock, _ in poller.poll(50):
                    sock.recv_multipart()
                    sock.send_multipart([b"login", wrong])

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        time.sleep(2.0)
        times = []
        for i in range(20):
            p = Peer(ctx, b, source=f"127.0.4.{i + 1}")
            t0 = time.monotonic()
            reply = p.call("login", timeout=60, user=f"legit{i}", password="correct horse")
            times.append(time.monotonic() - t0 if reply["status"] == "ok" else float("inf"))
            p.close()
        stop.set()
        thread.join(10)
        within = sum(t <= 5.0 for t in times)
        row("logins from fresh addresses during a 100-address storm: within 5 s", within, "of 20", ">=19", within >= 19)
        row("... slowest of them", max(times), "s")
    finally:
        stop.set()
        b.stop()


def guessing(ctx: zmq.Context) -> None:
    b = broker("--max-registrations-per-ip", "100", "--max-connections-per-ip", "1000")
    try:
        owner = Peer(ctx, b, source="127.0.5.1")
        ok(owner.register("target"))
        ok(owner.login("target"))
        ok(owner.call("logout"))
        guessers = [Peer(ctx, b, source=f"127.0.6.{i + 1}") for i in range(30)]
        wrong = b'{"req": 1, "version": 1, "user": "target", "password": "guess!!!"}'
        poller = zmq.Poller()
        for g in guessers:
            poller.register(g.dealer, zmq.POLLIN)
            g.dealer.send_multipart([b"login", wrong])
        verified = 0
        end = time.monotonic() + 9.0
        owner_time = None
        t_owner = time.monotonic() + 4.0
        while time.monotonic() < end:
            if owner_time is None and time.monotonic() >= t_owner:
                owner.send_raw([b"login", b'{"req": 5, "version": 1, "user": "target", "password": "correct horse"}'])
                poller.register(owner.dealer, zmq.POLLIN)
                t_sent = time.monotonic()
                owner_time = -1.0
            for sock, _ in poller.poll(50):
                kind, body = sock.recv_multipart()
                reply = json.loads(body)
                if sock is owner.dealer:
                    if reply.get("req") == 5:
                        owner_time = time.monotonic() - t_sent
                    continue
                code, message = reply.get("code"), reply.get("message", "")
                if code == "E_BAD_CREDENTIALS" or code == "E_BLOCKED" and message.startswith("wrong password"):
                    verified += 1  # the password was checked (the others were refused before hashing)
                sock.send_multipart([b"login", wrong])
        row("30 addresses guessing one account for 9 s: passwords checked", verified, "checks",
            "<=3+2+9 (was 90)", verified <= 14)
        row("... the owner's login during it", owner_time if owner_time and owner_time > 0 else float("nan"), "s",
            "a few seconds", bool(owner_time and 0 < owner_time <= 5))
    finally:
        b.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="mfl", help="parts to run: m memory, f flood, l logins")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each latency phase")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; command: python bench/attacks.py {' '.join(sys.argv[1:])}")
    ctx = zmq.Context()
    if "m" in args.only:
        memory(ctx)
    if "f" in args.only:
        flood(ctx, args.seconds)
    if "l" in args.only:
        storm(ctx)
        guessing(ctx)
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=2))
    ctx.destroy(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
