"""The bare PUB baseline of the benchmark's broadcast scenario (issue #3; cheap counting and the
rate sweep issue #9): a plain pyzmq PUB publishing `size`-byte messages at a fixed rate to SUB
sockets spread over load processes, with the socket options of the broker (PUB SNDHWM 1000, as
broker.config pub_sndhwm) and of the chat client (SUB RCVHWM 100,000, as client.sockets).

The subscribers count frames and nothing else per message: one recv() and one unpack of the
send time. No sequence bookkeeping (a SUB never sees a duplicate or a reordering, so what it
received is a count), one clock read per drained socket, latencies kept in an array and put
into the histogram after the run. So the baseline measures zmq, not the Python loop counting.

`pub_sweep` finds the highest publish rate at which this baseline loses nothing: every
subscriber received every message within DRAIN_S seconds of the last publish (a subscriber that
falls behind counts its backlog as lost, as a PUB past its high-water mark would drop it).
Traffic goes to 127.0.0.1 only; every loop is bounded in time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import struct
import time
from array import array
from collections import Counter
from typing import Any, Callable

import zmq

from baselines import NOBLOCK, free_port, input_poller, new_histogram, split_evenly

PUB_SNDHWM = 1000
"""Messages queued to one SUB in the publisher (the broker's pub_sndhwm default)."""
SUB_RCVHWM = 100_000
"""Messages queued in one SUB (client.sockets.SUB_RCVHWM)."""
DRAIN_S = 2.0
"""Seconds after the last publish for every message to arrive; later ones count as lost."""
JOIN_TIMEOUT_S = 30.0
"""Seconds for every SUB to receive a probe (connected and subscribed) before giving up."""
_HEAD = struct.Struct(">QQ")  # seq (0 = a join probe), send time (monotonic ns)


def _count(index: dict[zmq.Socket, int], poller: zmq.Poller, counts: list[int], lat_us: array, timeout_ms: int) -> int:
    """One poll round: drain every ready SUB until EAGAIN, adding to counts[i] (messages of
    sequence > 0) and appending each one's latency (us, against one clock read per socket) to
    `lat_us`. Returns the monotonic ns of the round (0 when nothing arrived)."""
    last = 0
    unpack = _HEAD.unpack_from
    for s, _ in poller.poll(timeout_ms):
        recv, n = s.recv, 0
        last = now = time.monotonic_ns()
        while True:
            try:
                payload = recv(NOBLOCK)
            except zmq.Again:
                break
            seq, sent = unpack(payload)
            if seq:
                n += 1
                lat_us.append((now - sent) // 1000)
        counts[index[s]] += n
    return last


def _sub_worker(port: int, subs: int, queue: mp.Queue, total: Any, server_key: bytes | None = None) -> None:
    """One load process: `subs` SUBs on 127.0.0.1:`port`. Reports "joined" once each received a
    probe, then counts until every SUB has `total.value` messages (a shared multiprocessing
    Value, -1 until the parent sets it after the last publish) or DRAIN_S after it learned it.
    With `server_key` (Z85) the SUBs speak CURVE. Puts {"received", "last_ns", "hist"} on `queue`."""
    ctx = zmq.Context()
    ctx.max_sockets = subs + 16
    socks: list[zmq.Socket] = []
    for _ in range(subs):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        if server_key:
            public, secret = zmq.curve_keypair()
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key, public, secret
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
    poller = input_poller(socks)
    index = {s: k for k, s in enumerate(socks)}
    counts, lat_us = [0] * subs, array("q")
    joined = [False] * subs
    give_up = time.monotonic() + JOIN_TIMEOUT_S
    while not all(joined) and time.monotonic() < give_up:
        for s, _ in poller.poll(50):
            while True:
                try:
                    s.recv(NOBLOCK)
                except zmq.Again:
                    break
                joined[index[s]] = True
    queue.put("joined" if all(joined) else "not joined")
    last_ns, stop_at = 0, None
    while stop_at is None or time.monotonic() < stop_at:
        last_ns = _count(index, poller, counts, lat_us, 20) or last_ns
        if stop_at is None and total.value >= 0:
            stop_at = time.monotonic() + DRAIN_S
        if stop_at is not None and min(counts) >= total.value:
            break
    for s in socks:
        s.close(0)
    ctx.term()
    hist = new_histogram()
    for us, n in Counter(lat_us).items():
        hist.record_value(max(1, us), n)
    queue.put({"received": sum(counts), "last_ns": last_ns, "hist": hist.encode()})


def _publish(pub: zmq.Socket, rate: float, duration: float, pad: bytes) -> tuple[int, int]:
    """Publish `rate` messages/s (seq 1, 2, ...) for `duration` s, what is due every ~1 ms.
    Returns (published, start monotonic ns)."""
    published = 0
    start = time.monotonic_ns()
    end = start + int(duration * 1e9)
    while (now := time.monotonic_ns()) < end:
        due = int((now - start) * rate / 1e9)
        while published < due:
            published += 1
            pub.send(_HEAD.pack(published, time.monotonic_ns()) + pad)
        time.sleep(0.001)
    return published, start


def _join(pub: zmq.Socket, procs: list[mp.Process], queue: mp.Queue, pad: bytes) -> None:
    """Publish probes (seq 0) every 10 ms until every load process says all its SUBs got one
    (the PUB drops what it sends before a subscription arrives). Raises RuntimeError when one
    does not within JOIN_TIMEOUT_S."""
    said: list[str] = []
    deadline = time.monotonic() + JOIN_TIMEOUT_S + 5.0
    while len(said) < len(procs) and time.monotonic() < deadline:
        pub.send(_HEAD.pack(0, time.monotonic_ns()) + pad)
        try:
            said.append(queue.get(timeout=0.01))
        except Exception:  # queue.Empty
            pass
    if said.count("joined") < len(procs):
        raise RuntimeError(f"bare PUB baseline: subscribers not joined within {JOIN_TIMEOUT_S:.0f} s ({said})")


def pub_load(subscribers: int, rate: float, duration: float = 5.0, size: int = 100,
             processes: int | None = None, curve: bool = False) -> dict:
    """Publish `rate` messages/s for `duration` s on a bare PUB to `subscribers` SUBs in
    `processes` load processes (default: one per core), `size` bytes each; with `curve` every
    connection is encrypted (the broker's setting) instead of NULL.

    Returns {"rate": publishes/s asked, "deliveries_per_s" (received / the time from the first
    publish to the last delivery, at least `duration`), "published", "expected", "received",
    "lost" (expected - received DRAIN_S after the last publish; zmq has no repair), "p50_ms",
    "p99_ms"}. Raises RuntimeError when the subscribers do not join, queue.Empty when a load
    process reports nothing in time.
    """
    processes = processes or (os.cpu_count() or 1)
    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, PUB_SNDHWM)
    pub.setsockopt(zmq.LINGER, 0)
    server_key = None
    if curve:  # every connection encrypted, as the broker's
        server_key, secret = zmq.curve_keypair()
        pub.curve_server, pub.curve_secretkey = True, secret
    pub.bind(f"tcp://127.0.0.1:{port}")
    queue: mp.Queue = mp.Queue()
    total = mp.Value("q", -1)
    procs = [mp.Process(target=_sub_worker, args=(port, n, queue, total, server_key))
             for n in split_evenly(subscribers, processes)]
    pad = b"x" * max(0, size - _HEAD.size)
    try:
        for p in procs:
            p.start()
        _join(pub, procs, queue, pad)
        published, start_ns = _publish(pub, rate, duration, pad)
        total.value = published
        parts = [queue.get(timeout=DRAIN_S + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        pub.close(0)
        ctx.term()
    hist = new_histogram()
    for part in parts:
        hist.decode_and_add(part["hist"])
    received = sum(p["received"] for p in parts)
    active = max(duration, (max(p["last_ns"] for p in parts) - start_ns) / 1e9)
    return {"rate": rate, "deliveries_per_s": received / active, "published": published,
            "expected": published * subscribers, "received": received,
            "lost": published * subscribers - received,
            "p50_ms": hist.get_value_at_percentile(50) / 1000, "p99_ms": hist.get_value_at_percentile(99) / 1000}


def pub_sweep(subscribers: int, duration: float, start: float = 250.0, factor: float = 2.0,
              most: int = 6, on_step: Callable[[dict], None] | None = None) -> tuple[dict | None, list[dict]]:
    """Find the highest publish rate at which the bare PUB loses nothing: run pub_load at
    `start`, `start` x `factor`, ... (messages/s) until one loses or `most` runs were made, then
    once halfway between the last clean rate and the first lossy one. `on_step(result)` is
    called after each run.

    Returns (the pub_load result of the highest clean rate, or None when even `start` lost;
    every result in the order run). Raises what pub_load raises.
    """
    runs: list[dict] = []
    best: dict | None = None
    rate = start
    for _ in range(most):
        res = pub_load(subscribers, rate, duration)
        runs.append(res)
        if on_step:
            on_step(res)
        if res["lost"]:
            break
        best = res
        rate *= factor
    if best is not None and runs[-1]["lost"]:
        res = pub_load(subscribers, (best["rate"] + runs[-1]["rate"]) / 2, duration)
        runs.append(res)
        if on_step:
            on_step(res)
        if not res["lost"]:
            best = res
    return best, runs
