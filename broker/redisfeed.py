"""The reading side of the Redis store (broker.feed.Backplane): a daemon thread with its own
connection that reads the event log (zc:log), the feed every broker reads (zc:feed) and this
broker's own (zc:feed:<id>: mail for its sessions, dups of its commits) from where
RedisStore.load() left them, keeps this broker alive in Redis, watches the epoch, and reaps dead
brokers.

Every read is `XREAD BLOCK 200 COUNT 1000 STREAMS zc:log zc:feed zc:feed:<id> <positions>`: log
entries become LogEvents (in seq order), feed entries the broker.feed struct of their kind, less
this broker's own notices from zc:feed. A stream trimmed past the position before it was read (this
broker fell more than the stream's length behind; or zc:log pruned past it) shows in the first
entry a read returns: its seq (zc:log) or its number n (the feed streams, numbered 1, 2, 3 ... by
the scripts) is not the next one. A FeedLost(stream) item goes before that entry, once per gap.

Every `interval` seconds (1, or ttl / 3 when shorter) one script (broker.redislua.TICK) refreshes
`zc:broker:<id>` (expires after ttl), checks zc:epoch (changed or gone: an EpochLost item, and the
thread stops) and names the brokers of zc:brokers without a liveness key; each is reaped by
broker.redislua.REAP, atomically and once across all brokers: its sessions end (presence `lost`
unless hidden, last seen, OfflineNotice) and its stream zc:feed:<id> is deleted.

A lost connection is retried with backoff (0.1 s doubling to BACKOFF_CAP), logged once per outage
(a WARNING when it starts, an INFO when it ends); reading resumes from the last entry ids read (the
append-only file keeps the streams across a restart of Redis), and the first tick back refreshes
the liveness key. A restarted Redis may hold every broker's liveness key expired (its TTL ran
out while Redis was down; a Redis that stalled, e.g. on a slow fsync, expires them as well), so a
broker reaps only after it has talked to the same Redis run (INFO run_id) without a connection
error or a stalled command for REAP_GRACE seconds: time enough for every live broker to come back
and refresh its key. The loop never waits for any of this: it only calls drain().
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from zmq_chat.broker import redislua
from zmq_chat.broker.feed import (
    DupNotice, EpochLost, FeedItem, FeedLost, LogEvent, MailNotice, OfflineNotice, OnlineNotice, SeenNotice,
    UserNotice,
)
from zmq_chat.broker.redisstore import client
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.wire import encode_json

log = logging.getLogger(__name__)

BLOCK_MS = 200
"""Milliseconds one XREAD waits for new entries (also how late a stop or a tick may come)."""
READ_COUNT = 1000
"""Entries per stream one XREAD returns at most."""
BACKOFF_CAP = 1.0
"""Seconds between tries at most while Redis is unreachable."""
REAP_GRACE = 3.0
"""Seconds this broker must have talked to one Redis run without a connection error before it
reaps a broker without a liveness key: more than a live broker needs to refresh its key once
Redis answers again (BACKOFF_CAP, plus a tick interval of at most 1 s, plus a BLOCK_MS read)."""

_DECODERS: dict[bytes, msgspec.json.Decoder] = {
    b"mail": msgspec.json.Decoder(MailNotice), b"user": msgspec.json.Decoder(UserNotice),
    b"seen": msgspec.json.Decoder(SeenNotice),
    b"online": msgspec.json.Decoder(OnlineNotice), b"offline": msgspec.json.Decoder(OfflineNotice),
    b"dup": msgspec.json.Decoder(DupNotice),
}
_online = msgspec.json.Decoder(OnlineNotice)


class RedisBackplane:
    """broker.feed.Backplane on Redis (made by RedisStore.backplane()).

    Args:
        url: the store's Redis URL. broker_id: this broker's id (RedisStore.broker_id).
        epoch: zc:epoch as loaded. log_seq: the newest seq the Snapshot holds (reading starts
            after it). feeds: {"zc:feed": (id, n), "zc:feed:<broker_id>": (id, n)}, each stream's
            newest entry id at load (bytes or str, "0-0" for none) and its number (0 for none, -1
            for an entry without one: the first read is then not checked for a gap).
        ttl: seconds this broker's liveness key lives without a refresh (others reap it after).
        clock: seconds since the epoch (time.time), for the reaped sessions' last-seen time.
        feed_maxlen: entries zc:feed keeps, about (broker.redislua.FEED_MAXLEN; the reaping adds).
    Attributes: reaped (sessions this broker ended by reaping, for tests and the log), outages
        (connection losses seen by the thread, for tests and the log).
    """

    def __init__(self, url: str, broker_id: str, epoch: str, log_seq: int, feeds: dict[str, tuple[bytes | str, int]],
                 ttl: float = 10.0, clock: Callable[[], float] = time.time,
                 feed_maxlen: int = redislua.FEED_MAXLEN) -> None:
        self.broker_id = broker_id
        self.epoch = epoch
        self.ttl = ttl
        self.interval = min(1.0, ttl / 3)
        self.clock = clock
        self.reaped = 0
        self.outages = 0
        self._run_id: str | None = None  # the Redis run (INFO run_id) talked to since _steady_since
        self._steady_since = 0.0
        self._own = f"zc:feed:{broker_id}"
        self._positions: dict[str, bytes | str] = {"zc:log": f"{log_seq}-0"}
        self._numbers: dict[str, int] = {"zc:log": log_seq}  # per stream, the seq or n of the last entry read
        for stream in ("zc:feed", self._own):
            self._positions[stream], self._numbers[stream] = feeds[stream]
        # its own connection (no pool sharing with the store): a blocked XREAD holds it; no retries
        # inside redis-py: _run sees every lost connection (and backs off itself)
        self._db = client(url, socket_connect_timeout=5.0, socket_timeout=BLOCK_MS / 1000 + 10.0,
                          retry=Retry(NoBackoff(), 0))
        self._tick = self._db.register_script(redislua.TICK)
        self._reap = self._db.register_script(redislua.with_feed_maxlen(redislua.REAP, feed_maxlen))
        self._items: list[FeedItem] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: Callable[[], None] = lambda: None
        self._next_tick = 0.0

    def start(self, wake: Callable[[], None]) -> None:
        """Start the reading thread; it calls `wake()` when items are ready (from that thread).
        Refreshes this broker's liveness before it returns, when Redis answers (so no other
        broker takes it for dead), else the thread keeps trying."""
        self._wake = wake
        try:
            if not self._tick_once(reap=False):
                return  # EpochLost is waiting in drain()
        except redis.RedisError as exc:
            log.warning("backplane: Redis not reachable at start (%s); retrying", exc)
        self._next_tick = 0.0  # the thread's first tick reaps
        self._thread = threading.Thread(target=self._run, name="redis-backplane", daemon=True)
        self._thread.start()

    def drain(self) -> list[FeedItem]:
        """The items read since the last call, each stream in its order (LogEvents by seq)."""
        with self._lock:
            items, self._items = self._items, []
        return items

    def close(self) -> None:
        """Stop the thread (within about BLOCK_MS), remove this broker's liveness key, its id
        from zc:brokers and its feed stream zc:feed:<id> (its sessions are not reaped: the broker
        ended them itself; no script writes to the stream of a broker not in zc:brokers)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BLOCK_MS / 1000 + 12.0)
        try:
            self._db.srem("zc:brokers", self.broker_id)
            self._db.delete(f"zc:broker:{self.broker_id}", self._own)
        except redis.RedisError as exc:
            log.warning("backplane: could not remove broker %s from Redis at close: %s", self.broker_id, exc)
        self._db.close()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff, down = 0.1, 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= self._next_tick and not self._tick_once():
                    return  # the epoch is lost: nothing more is read
                self._read()
                if down:
                    log.info("backplane: Redis reachable again after %.1f s; reading on from the log's seq %s",
                             time.monotonic() - down, self._positions["zc:log"])
                backoff, down = 0.1, 0.0
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:  # (BusyLoadingError too)
                self._run_id = None  # not steady: no reaping until REAP_GRACE after Redis is back
                if not down:
                    self.outages += 1
                    down = time.monotonic()
                    log.warning("backplane: lost Redis (%s); retrying with backoff", exc)
                self._stop.wait(backoff)
                backoff = min(BACKOFF_CAP, backoff * 2)
            except Exception:  # a bug must not end the thread silently
                log.exception("backplane: internal error; retrying")
                self._stop.wait(1.0)

    def _read(self) -> None:
        """One XREAD of the three streams; appends what it read (a FeedLost before the first entry
        after a gap) and wakes the loop."""
        started = time.monotonic()
        reply = self._db.xread(self._positions, count=READ_COUNT, block=BLOCK_MS)
        self._note_stall(started, BLOCK_MS / 1000)
        if not reply:
            return
        items: list[FeedItem] = []
        for key, entries in reply:
            stream = key.decode() if isinstance(key, bytes) else key
            is_log = stream == "zc:log"
            for i, (entry_id, fields) in enumerate(entries):
                number = int(entry_id.split(b"-", 1)[0]) if is_log else int(fields.get(b"n", -1))
                last = self._numbers[stream]
                if i == 0 and number != last + 1 and last >= 0 and number >= 0:
                    log.warning("backplane: %s was trimmed past this broker's position (entry %d follows %d): "
                                "what it held in between is lost", stream, number, last)
                    items.append(FeedLost(stream))
                self._numbers[stream] = number
                item = LogEvent(number, fields[b"b"]) if is_log else self._feed_item(fields, stream == self._own)
                if item is not None:
                    items.append(item)
            self._positions[stream] = entries[-1][0]
        if items:
            self._push(items)

    def _feed_item(self, fields: dict[bytes, bytes], own_stream: bool) -> FeedItem | None:
        """The notice of one feed entry, or None: this broker's own on zc:feed (everything on its
        own stream is for it), or an unknown kind or undecodable body (logged)."""
        kind = fields.get(b"k", b"")
        if not own_stream and fields.get(b"o", b"").decode() == self.broker_id:
            return None
        decoder = _DECODERS.get(kind)
        try:
            if decoder is None:
                raise ValueError(f"unknown kind {kind!r}")
            item: FeedItem = decoder.decode(fields[b"b"])
            return item
        except (ValueError, KeyError, msgspec.DecodeError) as exc:
            log.error("backplane: a feed entry was skipped: %s", exc)
            return None

    def _push(self, items: list[FeedItem]) -> None:
        with self._lock:
            self._items += items
        self._wake()

    def _tick_once(self, reap: bool = True) -> bool:
        """Refresh the liveness key, check the epoch, reap the dead brokers (if `reap`). False
        when the epoch is lost (an EpochLost item was pushed)."""
        self._next_tick = time.monotonic() + self.interval
        try:
            started = time.monotonic()
            dead = self._tick(args=[self.epoch, self.broker_id, max(1, int(self.ttl * 1000))])
            self._note_stall(started, 0.0)
        except redis.ResponseError as exc:
            if not str(exc).startswith("EPOCH"):
                raise
            now = self._db.get("zc:epoch")
            reason = (f"the Redis store's epoch is {now.decode() if now else 'gone'}, not {self.epoch}: "
                      "its data was lost or replaced")
            log.critical("backplane: %s", reason)
            self._push([EpochLost(reason)])
            return False
        if dead and reap and self._steady():
            for broker in dead:
                self._reap_one(broker.decode())
        return True

    def _note_stall(self, started: float, expected: float) -> None:
        """A command begun at `started` (monotonic seconds) that should take `expected` seconds took
        a tick interval longer: Redis (or this process) stalled, e.g. on a slow fsync or SIGSTOP,
        and the liveness keys may have expired meanwhile: not steady, as after a lost connection."""
        if time.monotonic() - started > expected + self.interval:
            self._run_id = None

    def _steady(self) -> bool:
        """True when this broker has talked to the same Redis run (INFO run_id) without a lost
        connection or a stalled command for REAP_GRACE seconds: every live broker had the time to refresh its liveness
        key since Redis came back (after a restart the keys may all have expired). Measured from
        the first call that saw this run, so a broker just started or reconnected waits too."""
        try:
            run = str(self._db.info("server").get("run_id", ""))
        except redis.ResponseError:  # INFO renamed or disabled: only lost connections count
            run = ""
        now = time.monotonic()
        if run != self._run_id:
            self._run_id, self._steady_since = run, now
            log.info("backplane: brokers without liveness; reaping them if still so in %g s", REAP_GRACE)
        return now - self._steady_since >= REAP_GRACE

    def _reap_one(self, dead: str) -> None:
        """End the sessions zc:online holds for the dead broker `dead` (one REAP script; it does
        nothing when another broker reaped it first)."""
        now = self.clock()
        args: list[Any] = [self.epoch, dead, repr(float(now))]
        for user, body in self._db.hgetall("zc:online").items():
            notice = _online.decode(body)
            if notice.broker != dead:
                continue
            lost = encode_json(m.Event(0, now, "presence", notice.user, event="lost"))
            args += [user, body, "1" if notice.hidden else "0", lost, encode_json(OfflineNotice(notice.user, dead))]
        ended = self._reap(args=args)
        if ended >= 0:
            self.reaped += ended
            log.info("backplane: broker %s is gone (no liveness for %.1f s): %d of its sessions ended", dead,
                     self.ttl, ended)
