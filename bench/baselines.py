"""Baselines measured in the same run as the broker (issue #3, "The benchmark"):

- `relay_load`: private-message load against bench/relay.py (a ROUTER forwarding
  `[destination, payload]` with no parsing, storage or acknowledgement), shaped like chat-loadtest's
  load: `processes` load processes, each driving clients/processes DEALERs, each keeping `window`
  messages in flight to random peers of the same process.
- `pub_load`: a bare PUB socket publishing at a fixed rate to SUB sockets.
- `argon2_capacity`: argon2id verifications per second with one thread per core.

All traffic goes to 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq
from hdrh.histogram import HdrHistogram

HERE = Path(__file__).resolve().parent
NOBLOCK = int(zmq.NOBLOCK)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature; good enough for a benchmark)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # microseconds, 1 us .. 60 s


def _relay_worker(port: int, clients: int, duration: float, window: int, size: int, queue: mp.Queue) -> None:
    ctx = zmq.Context()
    ctx.max_sockets = clients + 16
    socks, ids = [], []
    for i in range(clients):
        s = ctx.socket(zmq.DEALER)
        rid = b"r" + os.urandom(8) + struct.pack(">I", i)
        s.setsockopt(zmq.ROUTING_ID, rid)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
        ids.append(rid)
    index = {s: i for i, s in enumerate(socks)}
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    time.sleep(0.5)  # connections settle; the relay drops sends to peers not yet connected
    hist = _histogram()
    inflight = [0] * clients
    pad = b"x" * max(0, size - 8)
    sent = delivered = 0

    def fill(i: int) -> int:
        n = 0
        s = socks[i]
        while inflight[i] < window:
            dst = ids[random.randrange(clients)]
            s.send_multipart([dst, struct.pack(">Q", time.monotonic_ns()) + pad], NOBLOCK)
            inflight[i] += 1
            n += 1
        return n

    start = time.monotonic()
    end = start + duration
    for i in range(clients):
        sent += fill(i)
    measured_from = start + min(1.0, duration / 5)
    counted = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for s, _ in poller.poll(50):
            while True:
                try:
                    src, payload = s.recv_multipart(NOBLOCK)
                except zmq.Again:
                    break
                delivered += 1
                recv_ns = time.monotonic_ns()
                if now >= measured_from:
                    counted += 1
                    hist.record_value(max(1, (recv_ns - struct.unpack(">Q", payload[:8])[0]) // 1000))
                sender = int.from_bytes(src[-4:], "big")
                inflight[sender] -= 1
                sent += fill(sender)
    elapsed = time.monotonic() - measured_from
    for s in socks:
        s.close(0)
    ctx.term()
    queue.put({"sent": sent, "delivered": delivered, "counted": counted, "elapsed": elapsed,
               "hist": hist.encode()})


def relay_load(clients: int, duration: float = 5.0, window: int = 20, size: int = 100,
               processes: int | None = None) -> dict:
    """Run the minimal relay under a private-message load; return figures.

    Returns {"msgs_per_s": float (messages delivered per second, after a warm-up of up to 1 s),
    "p50_ms", "p99_ms", "max_ms": float, "sent": int, "delivered": int}.
    Raises RuntimeError when a load process reports nothing.
    """
    processes = processes or min(clients, os.cpu_count() or 1)
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(HERE / "relay.py"), str(port)])
    try:
        time.sleep(0.3)
        queue: mp.Queue = mp.Queue()
        share = [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]
        procs = [mp.Process(target=_relay_worker, args=(port, n, duration, window, size, queue)) for n in share if n]
        for p in procs:
            p.start()
        parts = [queue.get(timeout=duration + 60) for _ in procs]
        for p in procs:
            p.join(10)
    finally:
        relay.terminate()
        relay.wait(10)
    hist = _histogram()
    for part in parts:
        hist.decode_and_add(part["hist"])
    counted = sum(p["counted"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    return {
        "msgs_per_s": counted / elapsed,
        "p50_ms": hist.get_value_at_percentile(50) / 1000,
        "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "max_ms": hist.get_max_value() / 1000,
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
    }


def _sub_worker(port: int, subs: int, duration: float, queue: mp.Queue) -> None:
    ctx = zmq.Context()
    ctx.max_sockets = subs + 16
    socks = []
    for _ in range(subs):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    hist = _histogram()
    seen: list[set[int]] = [set() for _ in socks]
    index = {s: i for i, s in enumerate(socks)}
    queue.put("ready")
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for s, _ in poller.poll(50):
            i = index[s]
            while True:
                try:
                    payload = s.recv(NOBLOCK)
                except zmq.Again:
                    break
                seq, sent_ns = struct.unpack(">QQ", payload[:16])
                seen[i].add(seq)
                hist.record_value(max(1, (time.monotonic_ns() - sent_ns) // 1000))
    for s in socks:
        s.close(0)
    ctx.term()
    queue.put({"received": sum(len(x) for x in seen), "hist": hist.encode()})


def pub_load(subscribers: int, rate: float, duration: float = 5.0, size: int = 100,
             processes: int | None = None) -> dict:
    """Publish `rate` messages/s for `duration` s on a bare PUB to `subscribers` SUBs.

    Returns {"deliveries_per_s", "published", "expected", "received", "lost" (no repair exists),
    "p50_ms", "p99_ms"}.
    """
    processes = processes or (os.cpu_count() or 1)
    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    queue: mp.Queue = mp.Queue()
    share = [subscribers // processes + (1 if k < subscribers % processes else 0) for k in range(processes)]
    procs = [mp.Process(target=_sub_worker, args=(port, n, duration + 3.0, queue)) for n in share if n]
    for p in procs:
        p.start()
    for _ in procs:
        assert queue.get(timeout=60) == "ready"
    time.sleep(1.0)  # slow joiners
    pad = b"x" * max(0, size - 16)
    published = 0
    start = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        due = int((now - start) * rate)
        while published < due:
            published += 1
            pub.send(struct.pack(">QQ", published, time.monotonic_ns()) + pad)
        time.sleep(0.001)
    parts = [queue.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(10)
    pub.close(0)
    ctx.term()
    hist = _histogram()
    for part in parts:
        hist.decode_and_add(part["hist"])
    received = sum(p["received"] for p in parts)
    expected = published * subscribers
    return {
        "deliveries_per_s": received / duration,
        "published": published,
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "p50_ms": hist.get_value_at_percentile(50) / 1000,
        "p99_ms": hist.get_value_at_percentile(99) / 1000,
    }


def argon2_capacity(seconds: float = 3.0, threads: int | None = None) -> float:
    """argon2id verifications per second on this machine, one thread per core (INTERACTIVE limits,
    as the broker uses). Returns a rate (1/s)."""
    from broker.auth import hash_password, verify_password

    threads = threads or (os.cpu_count() or 1)
    stored = hash_password("benchmark password")
    end = time.monotonic() + seconds

    def spin() -> int:
        n = 0
        while time.monotonic() < end:
            verify_password(stored, "benchmark password")
            n += 1
        return n

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: spin(), range(threads)))
    return total / (time.monotonic() - start)
