"""Baselines measured in the same run as the broker (issue #3, "The benchmark"), and the helpers
the load processes of every baseline share:

- `relay_load` lives in bench/relay_baseline.py (the minimal relay, closed loop or paced);
- `pub_load` and `pub_sweep` live in bench/pub_baseline.py (a bare PUB, cheap subscribers);
- `argon2_capacity`: argon2id verifications per second with one thread per core;
- `held_baseline`: a bare ROUTER + PUB holding idle DEALER + SUB pairs (memory per client).

All traffic goes to 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
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


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: values in microseconds, 1 us .. 60 s, 3 significant digits."""
    return HdrHistogram(1, 60_000_000, 3)  # microseconds, 1 us .. 60 s


def split_evenly(total: int, processes: int) -> list[int]:
    """`total` split into `processes` near-equal whole parts (the first ones one larger), zeros dropped."""
    return [n for k in range(processes) if (n := total // processes + (1 if k < total % processes else 0))]


def input_poller(socks: list[zmq.Socket]) -> zmq.Poller:
    """A poller watching every socket of `socks` for input."""
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    return poller


def argon2_capacity(seconds: float = 3.0, threads: int | None = None) -> float:
    """argon2id verifications per second on this machine with `threads` threads (default one per
    core; INTERACTIVE limits, as the broker uses). Returns a rate (1/s)."""
    from zmq_chat.broker.auth import hash_password, verify_password

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


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid`, KiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _held_server(queue: mp.Queue, deadline: float) -> None:
    """Bare ROUTER + PUB: answer every request with an 80-byte reply; publish one 100-byte event
    to every subscriber at each client's first request (like a presence event at login)."""
    ctx = zmq.Context()
    router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    for s in (router, pub):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.BACKLOG, 4096)
        s.bind("tcp://127.0.0.1:0")
    queue.put((router.getsockopt_string(zmq.LAST_ENDPOINT), pub.getsockopt_string(zmq.LAST_ENDPOINT)))
    seen: set[bytes] = set()
    reply, event = b"r" * 80, b"e" * 100
    while time.monotonic() < deadline:
        if not router.poll(100):
            continue
        while True:
            try:
                rid, _body = router.recv_multipart(NOBLOCK)
            except zmq.Again:
                break
            router.send_multipart([rid, reply], NOBLOCK)
            if rid not in seen:
                seen.add(rid)
                pub.send_multipart([b"presence", event], NOBLOCK)
    router.close(0)
    pub.close(0)
    ctx.term()


def _held_clients(endpoints: tuple[str, str], clients: int, requests: int, every: float,
                  deadline: float, queue: mp.Queue) -> None:
    """`clients` DEALER + SUB pairs: `requests` round trips each at once, then one more every
    `every` seconds (a heartbeat) until `deadline`; SUBs are drained all along."""
    ctx = zmq.Context()
    ctx.max_sockets = 2 * clients + 16
    dealers, subs = [], []
    for _ in range(clients):
        d, s = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
        d.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        d.connect(endpoints[0])
        s.connect(endpoints[1])
        dealers.append(d)
        subs.append(s)
    poller = input_poller(dealers + subs)
    answered = 0
    for d in dealers:
        d.send(b"q" * 60)
    owed = {d: requests - 1 for d in dealers}
    next_beat = time.monotonic() + every
    while time.monotonic() < deadline:
        for s, _ in poller.poll(100):
            while True:
                try:
                    s.recv_multipart(NOBLOCK)
                except zmq.Again:
                    break
                if s in owed:
                    answered += 1
                    if owed[s] > 0:
                        owed[s] -= 1
                        s.send(b"q" * 60, NOBLOCK)
        if time.monotonic() >= next_beat:
            next_beat += every
            for d in dealers:
                d.send(b"h" * 40, NOBLOCK)
    queue.put(answered)
    for s in dealers + subs:
        s.close(0)
    ctx.term()


def held_baseline(clients: int, hold: float = 20.0, requests: int = 4, every: float = 5.0,
                  processes: int | None = None) -> dict:
    """Resident memory per client of a bare pyzmq ROUTER + PUB holding `clients` DEALER + SUB
    pairs with the traffic of held chat clients: `requests` round trips each (login, catch-up),
    a heartbeat every `every` s, and one PUB event per client arriving (so each SUB sees
    `clients` events), for `hold` s after the connections start.

    Returns {"kib_per_client": float (peak RSS minus RSS before any client, KiB / clients),
    "answered": int}. libzmq keeps per connection an 8 KiB in- and out-batch buffer and pipes
    whose message slots come in chunks of 256 x 64 bytes, so memory grows once messages flow.
    """
    processes = processes or max(1, min(4, clients // 1000 + 1))
    queue: mp.Queue = mp.Queue()
    deadline = time.monotonic() + hold + 5.0
    server = mp.Process(target=_held_server, args=(queue, deadline + 2.0))
    server.start()
    assert server.pid is not None
    endpoints = queue.get(timeout=30)
    time.sleep(0.3)
    before = rss_kib(server.pid)
    procs = [mp.Process(target=_held_clients, args=(endpoints, n, requests, every, deadline, queue))
             for n in split_evenly(clients, processes)]
    for p in procs:
        p.start()
    peak = before
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(server.pid))
        time.sleep(0.5)
    answered = sum(queue.get(timeout=60) for _ in procs)
    for p in procs + [server]:
        p.join(15)
    return {"kib_per_client": (peak - before) / clients, "answered": answered}
