"""The loop's side of a shared store (docs/scaling.md): the backplane reader and the reading
thread, both off the loop, whose results the loop hands to the core when it wakes.

- broker.feed.Backplane (broker.redisfeed.RedisBackplane): the event log and the other brokers'
  notices, read on its own thread; items go to BrokerCore.on_backplane. EpochLost stops the broker.
- Reads (broker.reads.ReadJob): started once the output that asked for them is durable, run on
  one thread (run_read), finished by BrokerCore.on_read.
"""

from __future__ import annotations

import logging
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from zmq_chat.broker.feed import Backplane, EpochLost
from zmq_chat.broker.reads import ReadJob, run_read
from zmq_chat.broker.storage import Store

log = logging.getLogger(__name__)


class SharedIO:
    """The backplane and the reading thread of one broker on a shared store.

    Args:
        store: the shared store (its `backplane(ttl)` after load(); read on the reading thread).
        ttl: seconds after its last heartbeat this broker counts as dead (--backplane-ttl).
        wake: ends the loop's poll (called from the other threads when results are ready).
    """

    def __init__(self, store: Store, ttl: float, wake: Callable[[], None]) -> None:
        self.store = store
        self.wake = wake
        self.backplane: Backplane = store.backplane(ttl)  # type: ignore[attr-defined]
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self.results: queue.SimpleQueue[ReadJob] = queue.SimpleQueue()

    def start(self) -> None:
        """Start reading the backplane."""
        self.backplane.start(self.wake)

    def read(self, jobs: list[ReadJob]) -> None:
        """Start `jobs` (their output is durable) on the reading thread."""
        for job in jobs:
            self.pool.submit(run_read, self.store, job).add_done_callback(self._done)

    def _done(self, future: Future[ReadJob]) -> None:  # runs on the reading thread
        if future.cancelled():  # dropped at close
            return
        self.results.put(future.result())  # run_read catches what the store raises
        self.wake()

    def drain(self, core: Any) -> str | None:
        """Hand the backplane's items and the finished reads to `core` (BrokerCore). Returns the
        reason when the store lost this broker's event log (the loop must stop), else None."""
        items = self.backplane.drain()
        lost = next((x.reason for x in items if isinstance(x, EpochLost)), None)
        core.on_backplane([x for x in items if not isinstance(x, EpochLost)])
        while True:
            try:
                job = self.results.get_nowait()
            except queue.Empty:
                return lost
            core.on_read(job)

    @staticmethod
    def drop_unstored(out: Any, dups: set[tuple[str, str]], core: Any) -> None:
        """Take out of `out` (a durable broker.corebase.Output) the pushes of mail its commit did
        not store: retried sends (`dups`: (sender, send id)) that another broker stored first, whose
        recipients get that copy. Their window slots are freed as for a dropped push (core:
        BrokerCore.on_push_dropped; the next pump finds the ids gone). The sender's ok reply stays."""
        unstored = {x.id for x in out.writes.mail if (x.sender, x.cid) in dups}
        if not unstored:
            return
        log.info("dropped %d pushes of sends another broker had stored", len(unstored))
        for rid, _, _, mail_id in out.router:
            if mail_id in unstored:
                core.on_push_dropped(rid, mail_id)
        out.router = [x for x in out.router if x[3] not in unstored]

    def close(self) -> None:
        """Stop the reads (unstarted ones are dropped) and the backplane."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.backplane.close()
