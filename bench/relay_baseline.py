"""The relay baseline of the benchmark (issue #3; paced mode issue #9): private-message load against
bench/relay.py, a ROUTER forwarding `[destination, payload]` with no parsing, storage or
acknowledgement, shaped like chat-loadtest's load.

`relay_load` starts the relay and `processes` load processes, each driving clients/processes
DEALERs that send `size`-byte messages to random peers of the same process, either

- closed loop (`rate=None`): each DEALER keeps `window` messages in flight, as fast as they go; or
- paced (`rate` messages/s per DEALER): each process sends rate x its DEALERs messages/s, round
  robin over the DEALERs with fewer than `window` undelivered (a due send finding every window
  full is skipped), as `chat-loadtest --rate` does.

Latency is measured as chat-loadtest measures it: each message carries its send time (monotonic
ns, 8 bytes big-endian; in paced mode the time the batch was due) and the receiver records
now - send time in an HDR histogram, microseconds. Traffic goes to 127.0.0.1 only; every loop is
bounded in time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import struct
import subprocess
import sys
import time
from typing import Iterator

import zmq

from baselines import HERE, NOBLOCK, free_port, input_poller, new_histogram, split_evenly

SETTLE_S = 0.5
"""Seconds a load process waits after connecting: the relay drops sends to peers not yet connected."""
DRAIN_NS = 2_000_000_000
"""Paced mode: after the sending window, wait at most this long (ns) for messages still in flight."""


def _relay_dealers(ctx: zmq.Context, port: int, clients: int) -> tuple[list[zmq.Socket], list[bytes]]:
    """`clients` DEALERs connected to the relay on 127.0.0.1:`port`, and their routing ids
    (b"r" + 8 random bytes + the DEALER's index as 4 big-endian bytes, which the relay passes on
    as the sender so a reply finds its way back to the index)."""
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
    return socks, ids


def _arrivals(sock: zmq.Socket) -> Iterator[tuple[int, int]]:
    """Every message waiting on DEALER `sock` (frames `[source routing id, payload]`, read without
    blocking) as (sender's index, latency in microseconds, at least 1)."""
    while True:
        try:
            src, payload = sock.recv_multipart(NOBLOCK)
        except zmq.Again:
            return
        sent_ns = struct.unpack(">Q", payload[:8])[0]
        yield int.from_bytes(src[-4:], "big"), max(1, (time.monotonic_ns() - sent_ns) // 1000)


def _setup(port: int, clients: int) -> tuple[zmq.Context, list[zmq.Socket], list[bytes], zmq.Poller]:
    """A load process's context, its `clients` DEALERs connected to the relay on `port` (with their
    routing ids) and a poller over them, after SETTLE_S seconds for the connections."""
    ctx = zmq.Context()
    ctx.max_sockets = clients + 16
    socks, ids = _relay_dealers(ctx, port, clients)
    poller = input_poller(socks)
    time.sleep(SETTLE_S)
    return ctx, socks, ids, poller


def _closed_worker(port: int, clients: int, duration: float, window: int, size: int, queue: mp.Queue) -> None:
    """One closed-loop load process: `clients` DEALERs each keeping `window` messages of `size`
    bytes in flight to random peers for `duration` s; latencies are recorded after a warm-up of
    min(1 s, duration / 5). Puts {"sent", "delivered", "counted" (recorded), "elapsed" (s since the
    warm-up), "hist" (encoded, us)} on `queue`."""
    ctx, socks, ids, poller = _setup(port, clients)
    hist = new_histogram()
    inflight = [0] * clients
    pad = b"x" * max(0, size - 8)
    sent = delivered = counted = 0

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
    while (now := time.monotonic()) < end:
        for s, _ in poller.poll(50):
            for sender, latency_us in _arrivals(s):
                delivered += 1
                if now >= measured_from:
                    counted += 1
                    hist.record_value(latency_us)
                inflight[sender] -= 1
                sent += fill(sender)
    elapsed = time.monotonic() - measured_from
    for s in socks:
        s.close(0)
    ctx.term()
    queue.put({"sent": sent, "delivered": delivered, "counted": counted, "elapsed": elapsed,
               "hist": hist.encode()})


def _paced_worker(port: int, clients: int, duration: float, window: int, size: int, rate: float,
                  queue: mp.Queue) -> None:
    """One paced load process: `clients` DEALERs sending `rate` x `clients` messages/s of `size`
    bytes in all for `duration` s (what is due is sent every wake-up, at most ~1 ms apart), round
    robin over the DEALERs with fewer than `window` undelivered, each to a random other DEALER;
    then up to DRAIN_NS for the messages in flight. Every delivery's latency is recorded (no
    warm-up, as chat-loadtest). Puts {"sent", "delivered", "counted" (= delivered), "skipped"
    (due sends that found every window full), "elapsed" (s from the start to the last delivery,
    at least `duration`), "hist" (encoded, us)} on `queue`."""
    ctx, socks, ids, poller = _setup(port, clients)
    hist = new_histogram()
    inflight = [0] * clients
    pad = b"x" * max(0, size - 8)
    sent = delivered = skipped = scheduled = rr = 0
    per_ns = rate * clients / 1e9
    start = last = time.monotonic_ns()
    end = start + int(duration * 1e9)

    def send_due(due: int, now: int) -> int:
        """Send `due` messages stamped `now`; returns how many found every window full."""
        nonlocal rr
        stamp, missed = struct.pack(">Q", now) + pad, 0
        for _ in range(due):
            for _ in range(clients):
                rr = (rr + 1) % clients
                if inflight[rr] < window:
                    dst = random.randrange(clients)
                    if dst == rr and clients > 1:
                        dst = random.randrange(clients)
                    socks[rr].send_multipart([ids[dst], stamp], NOBLOCK)
                    inflight[rr] += 1
                    break
            else:
                missed += 1
        return missed

    while (now := time.monotonic_ns()) < end + DRAIN_NS and (now < end or sent > delivered):
        if now < end and (due := int((now - start) * per_ns) - scheduled) > 0:
            scheduled += due
            missed = send_due(due, now)
            skipped += missed
            sent += due - missed
        for s, _ in poller.poll(1 if now < end else 10):
            for sender, latency_us in _arrivals(s):
                delivered += 1
                hist.record_value(latency_us)
                inflight[sender] -= 1
            last = time.monotonic_ns()
    for s in socks:
        s.close(0)
    ctx.term()
    queue.put({"sent": sent, "delivered": delivered, "counted": delivered, "skipped": skipped,
               "elapsed": max(duration, (last - start) / 1e9), "hist": hist.encode()})


def relay_load(clients: int, duration: float = 5.0, window: int = 20, size: int = 100,
               processes: int | None = None, rate: float | None = None) -> dict:
    """Run the minimal relay under a private-message load of `clients` DEALERs sending `size`-byte
    messages for `duration` s: closed loop with `window` in flight each (`rate` None), or paced at
    `rate` messages/s per DEALER with at most `window` undelivered each.

    Returns {"msgs_per_s": float (deliveries per second: closed loop after a warm-up of up to 1 s;
    paced over the start to the last delivery), "p50_ms", "p99_ms", "max_ms": float (latency, ms),
    "sent", "delivered", "skipped": int (paced: due sends that found every window full; else 0)}.
    Raises RuntimeError when the relay cannot start, queue.Empty when a load process reports
    nothing in time (duration + 60 s).
    """
    processes = processes or min(clients, os.cpu_count() or 1)
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(HERE / "relay.py"), str(port)])
    try:
        time.sleep(0.3)
        if relay.poll() is not None:
            raise RuntimeError(f"bench/relay.py exited with status {relay.returncode} on port {port}")
        queue: mp.Queue = mp.Queue()
        procs = [mp.Process(target=_closed_worker, args=(port, n, duration, window, size, queue))
                 if rate is None else
                 mp.Process(target=_paced_worker, args=(port, n, duration, window, size, rate, queue))
                 for n in split_evenly(clients, processes)]
        for p in procs:
            p.start()
        parts = [queue.get(timeout=duration + 60) for _ in procs]
        for p in procs:
            p.join(10)
    finally:
        relay.terminate()
        relay.wait(10)
    hist = new_histogram()
    for part in parts:
        hist.decode_and_add(part["hist"])
    return {
        "msgs_per_s": sum(p["counted"] for p in parts) / max(p["elapsed"] for p in parts),
        "p50_ms": hist.get_value_at_percentile(50) / 1000,
        "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "max_ms": hist.get_max_value() / 1000,
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
        "skipped": sum(p.get("skipped", 0) for p in parts),
    }
