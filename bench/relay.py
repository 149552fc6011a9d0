"""Baseline for the benchmark: the fastest ROUTER relay a plain pyzmq Poller loop gives.

Wire: a DEALER sends `[destination_routing_id, payload]`; the relay receives
`[source, destination, payload]` and sends `[destination, source, payload]`, with no parsing,
no storage and no acknowledgement. Run: `python bench/relay.py PORT` (stops on SIGTERM/SIGINT).
"""

from __future__ import annotations

import signal
import sys

import zmq


def serve(port: int, bind: str = "127.0.0.1") -> None:
    """Relay until SIGTERM/SIGINT. Drains the socket with NOBLOCK until EAGAIN per wake-up."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 100_000)
    router.setsockopt(zmq.RCVHWM, 100_000)
    router.setsockopt(zmq.BACKLOG, 4096)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://{bind}:{port}")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    recv, send = router.recv_multipart, router.send_multipart
    while not stop:
        if not poller.poll(200):
            continue
        while True:
            try:
                src, dst, payload = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                continue
            try:
                send([dst, src, payload], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # departed peer or full queue: a relay drops
    router.close()
    ctx.term()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
