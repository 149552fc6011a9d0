"""The broker's I/O edge: binds the ROUTER and PUB sockets, runs the poll loop, runs argon2id jobs on
worker threads, and turns SIGINT/SIGTERM into a clean shutdown.

Per wake-up the loop drains the ROUTER with NOBLOCK until EAGAIN (at most `BATCH` messages), feeds
each request to the core, commits the store once, then sends every reply, delivery and PUB event
that the batch produced: one fsync covers the whole batch, and no ok reply precedes its commit.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import zmq

from broker.auth import AuthJob, lower_thread_priority, run_job
from broker.config import Config
from broker.core import BrokerCore
from broker.store import Store

log = logging.getLogger("broker")

BATCH = 2000
"""Most requests handled per wake-up before committing and sending."""

PRUNE_EVERY = 60.0

# Plain ints: pyzmq's enum flags cost a measurable share of the loop in `flags | SNDMORE`.
NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
"""Seconds between trims of the event log and of old send ids."""


class BrokerLoop:
    """Owns the zmq context, the ROUTER and PUB sockets, the hashing pool and the core.

    Raises zmq.ZMQError from the constructor when a port cannot be bound (e.g. EADDRINUSE).
    """

    def __init__(self, config: Config, store: Store) -> None:
        self.cfg = config
        self.store = store
        self.ctx = zmq.Context()
        self.ctx.max_sockets = 64
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        try:
            self._configure()
            self.router_endpoint = self._bind(self.router, config.port)
            self.pub_endpoint = self._bind(self.pub, config.effective_pub_port)
        except zmq.ZMQError:
            self.router.close(0)
            self.pub.close(0)
            self.ctx.term()
            raise
        pub_port = int(self.pub_endpoint.rsplit(":", 1)[1])
        self.core = BrokerCore(config, store, pub_port)
        self.pool = ThreadPoolExecutor(config.hash_workers, thread_name_prefix="argon2",
                                       initializer=lower_thread_priority, initargs=(config.hash_nice,))
        self.results: queue.SimpleQueue[AuthJob] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.stop_requested = False

    def _configure(self) -> None:
        r = self.router
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.ROUTER_HANDOVER, 1)
        r.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_msg_bytes)
        r.setsockopt(zmq.SNDHWM, self.cfg.hwm)
        r.setsockopt(zmq.RCVHWM, self.cfg.hwm)
        r.setsockopt(zmq.LINGER, self.cfg.linger_ms)
        r.setsockopt(zmq.BACKLOG, 4096)
        self.pub.setsockopt(zmq.SNDHWM, self.cfg.hwm)
        self.pub.setsockopt(zmq.LINGER, self.cfg.linger_ms)
        self.pub.setsockopt(zmq.BACKLOG, 4096)

    def _bind(self, sock: zmq.Socket, port: int) -> str:
        host = self.cfg.bind
        sock.bind(f"tcp://{host}:{port if port else '*'}")
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- signals and wake-ups ---------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        """Ask the loop to shut down (signal-safe: sets a flag, the wake pipe ends the poll)."""
        self.stop_requested = True

    def _job_done(self, future) -> None:  # runs on a worker thread
        try:
            self.results.put(future.result())
        except Exception:  # pragma: no cover - run_job catches what it expects
            log.exception("argon2id job failed")
            return
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already awake

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGINT/SIGTERM (or request_stop). Returns the exit status (0)."""
        old = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        old_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        tick_every = min(1.0, self.cfg.heartbeat_timeout / 4, self.cfg.idle_timeout / 4)
        next_tick = time.monotonic() + tick_every
        next_prune = time.monotonic()
        try:
            while not self.stop_requested:
                timeout = max(0.0, next_tick - time.monotonic())
                ready = dict(poller.poll(timeout * 1000))
                if self.router in ready:
                    self._drain_router()
                if self.wake_r in ready:
                    self._drain_wake()
                now = time.monotonic()
                if now >= next_tick:
                    self.core.tick()
                    next_tick = now + tick_every
                if now >= next_prune:
                    self.core.prune()
                    next_prune = now + PRUNE_EVERY
                self._flush()
            log.info("shutting down: telling %d clients", len(self.core.sessions))
            self.core.shutdown()
            self._flush()
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.close()
        return 0

    def _drain_router(self) -> None:
        recv = self.router.recv
        on_request = self.core.on_request
        for _ in range(BATCH):
            try:
                head = recv(NOBLOCK, copy=False)
            except zmq.Again:
                return
            parts: list[bytes] = []
            frame = head
            while frame.more:
                frame = recv(NOBLOCK, copy=False)
                parts.append(frame.bytes)
            ip = ""
            if parts and parts[0] == b"login":
                ip = head.get("Peer-Address") or ""
            on_request(head.bytes, parts, ip)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                job = self.results.get_nowait()
            except queue.Empty:
                return
            self.core.on_auth_result(job)

    def _flush(self) -> None:
        """Commit, then send everything the core produced; repeat while sends reveal departed peers."""
        while True:
            router_out, pub_out, jobs = self.core.drain()
            if not (router_out or pub_out or jobs):
                self.store.commit()
                return
            self.store.commit()
            for job in jobs:
                self.pool.submit(run_job, job).add_done_callback(self._job_done)
            pub_send = self.pub.send
            for topic, body in pub_out:
                pub_send(topic, NOBLOCK_MORE)
                pub_send(body, NOBLOCK)
            gone: set[bytes] = set()
            send = self.router.send
            for rid, (kind, body) in router_out:
                if rid in gone:
                    continue
                try:
                    send(rid, NOBLOCK_MORE)  # a failure (EHOSTUNREACH, EAGAIN) comes on this frame
                    send(kind, NOBLOCK_MORE)
                    send(body, NOBLOCK)
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EHOSTUNREACH:
                        gone.add(rid)
                    elif exc.errno != errno.EAGAIN:
                        raise
                    # EAGAIN: that peer is past its high-water mark; a private message stays in
                    # its mailbox and is sent again at its next login.
            for rid in gone:
                self.core.on_unreachable(rid)

    def close(self) -> None:
        """Stop the workers, commit and close the store, close sockets (lingering to flush)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        self.router.close()
        self.pub.close()
        self.ctx.term()
        os.close(self.wake_r)
        os.close(self.wake_w)
