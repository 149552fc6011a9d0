"""The broker's I/O edge: runs the poll loop over its sockets (broker.sockets), answers ZAP and the
key endpoint, feeds the socket monitors' connection events and the memory scans to the core, runs
argon2id jobs on worker threads, and turns SIGINT/SIGTERM into a clean shutdown.

Per wake-up the loop drains the ROUTER with NOBLOCK until EAGAIN (at most `BATCH` messages) and
feeds each request to the core. The wake-up's store writes go to the writer thread
(broker.writer.CommitWriter), which commits every batch queued meanwhile in one transaction, and
the wake-up's output (replies, deliveries, PUB events, cuts) is held until its batch is durable:
the loop goes on reading requests while the disk syncs, and no ok reply precedes its commit.
Output leaves in the order it was produced.
"""

from __future__ import annotations

import collections
import errno
import gc
import logging
import os
import queue
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import msgspec
import zmq
import zmq.utils.z85

from zmq_chat.broker import netio
from zmq_chat.broker import sidesockets as side
from zmq_chat.broker.auth import run_job, start_hasher
from zmq_chat.broker.accounts import AuthJob
from zmq_chat.broker.config import Config
from zmq_chat.broker.connections import CURVE_FRAME_OVERHEAD, PUB, ROUTER, wire_size
from zmq_chat.broker.core import BrokerCore
from zmq_chat.broker.keys import BrokerKeys
from zmq_chat.broker.sidesockets import origin
from zmq_chat.broker.sockets import open_sockets, port_of
from zmq_chat.broker.corebase import Output
from zmq_chat.broker.stages import StageTimes
from zmq_chat.broker.sharedio import SharedIO
from zmq_chat.broker.storage import Store, StoreError
from zmq_chat.broker.writer import CommitWriter

log = logging.getLogger(__name__)

BATCH = 256
"""Most requests handled per wake-up before its batch goes to the writer. The writer merges the
batches that queue up during a commit, so a smaller wake-up costs no extra fsync; it lets output
leave sooner (closed loop, 100 clients x 20 in flight: 2000 gave a median of 33 ms between the
poll and the core, 256 gives 3.4 ms)."""
PER_PEER_BATCH = 64
"""A wake-up ends early once one connection has sent this many of its requests: the ROUTER reads
its peers round robin, so everyone else's requests are in by then, and a flooder's backlog would
otherwise delay their replies by a whole batch of its own."""
PRUNE_EVERY = 60.0
"""Seconds between trims of the event log and of old send ids."""
RSS_CHECK_EVERY = 0.02
"""Seconds between reads of the broker's RSS (a scan of all connections runs when it grew by
Config.rss_scan_step since the last scan)."""
SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it (Python's default is 0.005): the
writer thread takes the GIL back after each SQLite step and fsync, and the loop after each commit
it waited for; 5 ms per hand-over showed as commit waits of 6 ms at p50 (--stage-times)."""
SCAN_EVERY = 10.0
"""Seconds between scans of all connections when the RSS does not grow (slow or small attacks)."""

# Plain ints: pyzmq's enum flags cost a measurable share of the loop in `flags | SNDMORE`.
NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)

_encoder = msgspec.json.Encoder()


class BrokerLoop:
    """Owns the zmq context, the sockets, the hashing pool and the core.

    Args:
        config: the settings; store: the open store; keys: the broker's CURVE key pair (None
            with --insecure).
    Raises zmq.ZMQError from the constructor when a port cannot be bound (e.g. EADDRINUSE).
    """

    def __init__(self, config: Config, store: Store, keys: BrokerKeys | None) -> None:
        self.cfg = config
        self.store = store
        self.keys = keys
        self.curve = not config.insecure
        self.ctx = zmq.Context()
        self.ctx.max_sockets = 64
        try:
            self.socks = open_sockets(self.ctx, config, keys)
        except zmq.ZMQError:
            self.ctx.term()
            raise
        self.endpoints = self.socks.endpoints
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.writer = CommitWriter(store, on_durable=self._wake, record=bool(config.stage_times))
        self.core = BrokerCore(config, self.writer, port_of(self.endpoints[PUB]),
                               peer_behind=lambda fd: netio.peer_behind(fd, config.backlog_limit),
                               broker_id=getattr(store, "broker_id", ""))
        self.shared = SharedIO(store, config.backplane_ttl, self._wake) if store.shared else None
        """A shared store's backplane and reading thread (broker.sharedio)."""
        self.exit_status = 0
        self.held: collections.deque[tuple[int, Output, tuple | None]] = collections.deque()
        """Output waiting for its batch: (writer ticket, output, stage-times token)."""
        self.stages = StageTimes() if config.stage_times else None
        if self.stages:
            self.core.on_request = self.stages.wrap(self.core.on_request)  # type: ignore[method-assign]
        self.pool = ThreadPoolExecutor(config.hash_workers, thread_name_prefix="argon2",
                                       initializer=start_hasher, initargs=(config.hash_nice,))
        self.results: queue.SimpleQueue[AuthJob] = queue.SimpleQueue()
        self.rss = netio.RssReader()
        self.stop_requested = False
        self._key_reply = _encoder.encode({
            "version": 1,
            "curve": self.curve,
            "public_key": keys.public.decode() if keys and self.curve else "",
            "fingerprint": keys.fingerprint if keys and self.curve else "",
            "port": port_of(self.endpoints[ROUTER]),
        })

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
        self._wake()

    def _wake(self) -> None:
        """End the loop's poll (any thread)."""
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already awake

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGINT/SIGTERM (or request_stop). Returns the exit status: 0, or 3 when a
        shared store lost the event log (broker.feed.EpochLost) or a commit failed with StoreError
        (other errors of a commit propagate)."""
        old = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        old_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        s = self.socks
        poller = zmq.Poller()
        for sock in (s.router, s.pub, s.key, s.zap, *s.monitors.values()):
            poller.register(sock, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        tick_every = min(1.0, self.cfg.heartbeat_timeout / 4, self.cfg.idle_timeout / 4, self.cfg.pub_heartbeat)
        next_tick = time.monotonic() + tick_every
        next_prune = time.monotonic()
        next_rss = 0.0
        next_scan = time.monotonic() + SCAN_EVERY
        rss_base = self.rss.read()
        stages = self.stages
        gc.collect()
        gc.freeze()  # what start-up loaded (accounts, send ids) is never collected: fewer, shorter pauses
        sys.setswitchinterval(SWITCH_INTERVAL)
        if stages:
            stages.watch_gc()
        if self.shared:
            self.shared.start()
        try:
            while not self.stop_requested:
                timeout = max(0.0, min(next_tick, next_rss) - time.monotonic())  # RSS checks go on while idle
                ready = dict(poller.poll(int(timeout * 1000)))
                if stages:
                    stages.woke()
                if self.held and self.wake_r in ready:
                    self._release()  # durable output first: it waited for a commit already
                if ready.keys() & s.monitors.values() or s.zap in ready:
                    self._drain_monitors()
                if s.zap in ready:
                    self._drain_zap()
                if s.router in ready:
                    self._drain_router()
                if s.pub in ready:
                    self._drain_subscriptions()
                if s.key in ready:
                    self._drain_key()
                if self.wake_r in ready:
                    self._drain_wake()
                now = time.monotonic()
                if now >= next_rss:
                    next_rss = now + RSS_CHECK_EVERY
                    rss = self.rss.read()
                    if rss > rss_base + self.cfg.rss_scan_step or now >= next_scan:
                        self._scan()
                        rss_base = self.rss.read()
                        next_scan = now + SCAN_EVERY
                    elif rss < rss_base:
                        rss_base = rss
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
            while self.held:
                self.writer.wait()
                self._flush()
            if stages:
                stages.write(self.cfg.stage_times, self.writer.commits or [])
        except StoreError as exc:  # a commit failed: nothing of it, or of later batches, was acknowledged
            log.error("stopping: %s (exit status 3)", exc)
            self.exit_status = 3
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.close()
        return self.exit_status

    def _drain_router(self) -> None:
        recv = self.socks.router.recv
        on_request = self.core.on_request
        curve = self.curve
        max_frames = self.cfg.max_frames
        overhead = CURVE_FRAME_OVERHEAD if curve else 0
        per_peer: dict[int, int] = {}
        for _ in range(BATCH):
            try:
                head = recv(NOBLOCK, copy=False)
            except zmq.Again:
                return
            fd, key = origin(head, curve)
            parts: list[bytes] = []
            size = 0
            frame = head
            count = 0
            while frame.more:
                frame = recv(NOBLOCK, copy=False)
                count += 1
                n = len(frame.buffer) + overhead  # connections.wire_size, inlined: the hot path
                size += n + (2 if n < 256 else 9)
                if count <= max_frames:
                    parts.append(frame.bytes)
            if count > max_frames:  # not kept: the first two and the last say enough (E_FRAMES)
                parts = [*parts[:2], frame.bytes]
                self.core.on_too_many_frames(fd)
            on_request(head.bytes, parts, fd, key, size)
            seen = per_peer.get(fd, 0) + 1
            if seen >= PER_PEER_BATCH:
                return
            per_peer[fd] = seen

    def _drain_subscriptions(self) -> None:
        recv = self.socks.pub.recv
        for _ in range(BATCH):
            try:
                frame = recv(NOBLOCK, copy=False)
            except zmq.Again:
                return
            fd, key = origin(frame, self.curve)
            data = frame.bytes
            size = wire_size(len(data), self.curve)
            more = frame.more
            while frame.more:  # a subscription is one frame; discard the rest
                frame = recv(NOBLOCK, copy=False)
                size += wire_size(len(frame.buffer), self.curve)
            if more:
                self.core.on_too_many_frames(fd)
            elif self.core.on_subscribe(fd, key, data, size):  # counts every message it is given
                self.socks.pub.setsockopt(zmq.SUBSCRIBE, data[1:])  # XPUB_MANUAL: to the pipe it came from
            elif data[:1] == b"\x00":  # an unsubscription: removing is always safe
                self.socks.pub.setsockopt(zmq.UNSUBSCRIBE, data[1:])

    def _drain_key(self) -> None:
        side.drain_key(self.socks.key, self.core, self._key_reply)

    def _drain_zap(self) -> None:
        side.drain_zap(self.socks.zap, self.core)

    def _drain_monitors(self) -> None:
        side.drain_monitors(self.socks.monitors, self.core)

    def _scan(self) -> None:
        """Read the bytes received on every connection; the core cuts those that buffer too much."""
        received = {}
        for conn in self.core.conns:
            count = netio.bytes_received(conn.fd)
            if count is not None:
                received[conn.fd] = count
        self.core.on_scan(received)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        lost = self.shared.drain(self.core) if self.shared else None
        if lost and not self.stop_requested:  # what was acknowledged is gone from the store: stop
            log.error("the shared store lost this broker's event log (%s); stopping (exit status 3): "
                      "restart the brokers, and restore the store's data if it was not meant to go", lost)
            self.stop_requested, self.exit_status = True, 3
        while True:
            try:
                job = self.results.get_nowait()
            except queue.Empty:
                return
            self.core.on_auth_result(job)

    def _flush(self) -> None:
        """Hand the core's output to the writer and hold it; send what is durable; repeat while
        sends reveal departed peers (their ends are new output)."""
        while True:
            out = self.core.drain()
            token = self.stages.take() if self.stages else None
            if out:
                for job in out.jobs:
                    self.pool.submit(run_job, job).add_done_callback(self._job_done)
                self.held.append((self.writer.submit(out.writes), out, token))
            if not self._release() and not out:
                return

    def _release(self) -> int:
        """Send the held output whose batches are durable, oldest first. Returns how many outputs
        left. Raises the writer's exception if a commit failed (the broker stops)."""
        held = self.held
        if not held:
            return 0
        durable = self.writer.settle()
        dups = self.writer.take_dups() if self.shared else None  # (sends another broker stored first)
        sent = 0
        while held and held[0][0] <= durable:
            _, out, token = held.popleft()
            released = time.monotonic() if token else 0.0
            if dups and self.shared:
                self.shared.drop_unstored(out, dups, self.core)
            self._send(out)
            sent += 1
            if token and self.stages:
                self.stages.sent(token, released)
        return sent

    def _send(self, out: Output) -> None:
        """Publish out.pub, send out.router, make out.cuts; tell the core of unreachable peers and
        of pushes past a peer's high-water mark."""
        pub_send = self.socks.pub.send
        for topic, body in out.pub:
            try:
                pub_send(topic, NOBLOCK_MORE)
                pub_send(body, NOBLOCK)
            except zmq.Again:  # pragma: no cover - XPUB drops at the high-water mark instead
                pass
        gone: set[bytes] = set()
        send = self.socks.router.send
        for rid, kind, body, mail_id in out.router:
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
                elif mail_id:  # past the peer's high-water mark: it stays in the mailbox
                    self.core.on_push_dropped(rid, mail_id)
        for conn in out.cuts:
            netio.cut(conn.fd, conn.ip, conn.port)
        if out.reads and self.shared:
            self.shared.read(out.reads)
        for rid in gone:
            self.core.on_unreachable(rid)

    def close(self) -> None:
        """Stop the workers, close the store (every batch is committed by then) and the sockets
        (lingering to flush)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.shared:
            self.shared.close()
        try:
            self.writer.close()  # commits what is queued, then closes the store
        except Exception as exc:  # the loop raised it already; closing must still release the rest
            log.error("store writer: %s", exc)
        self.socks.close(self.cfg.linger_ms)
        self.ctx.term()
        self.rss.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
