"""The cost per message of the Redis path against SQLite, without sockets (bench/cluster.py's
last part): bench/store_cost.py's Rig (BrokerCore driven in process, one thread: decode, core,
encode, then Store.commit per wake-up of 200 requests), on a SqliteStore and on a RedisStore (a
redis-server of its own, appendfsync always), both fsyncing every commit.

Two timed phases per store, private sends to one online recipient: sends alone, and sends with
the acks of each wake-up's pushes in the next one, send ids pruned (store_cost's "send + ack +
prune"). Each gives microseconds per send spent in Store.commit (for Redis: the round trip, the
Lua script and the fsync, on the other core) and outside it (the core).

ReadingRig: with a shared store a login's mailbox pump is a read job (broker/reads.py) that the
loop runs on a reading thread; store_cost.Rig drops it, so the sessions stay waiting for it and
nothing is pushed. ReadingRig runs those reads (run_read, then core.on_read) as the loop would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import store_cost
from zmq_chat.broker.reads import run_read

PHASES = ("private sends, N=1", "send + ack + prune, N=1")


class ReadingRig(store_cost.Rig):
    """store_cost.Rig whose logins also run their shared store's read jobs (see the module)."""

    def _login(self, name: str, fd: int) -> tuple[bytes, int, str]:
        core, reads = self.core, []
        real = core.drain

        def drain():
            out = real()
            reads.extend(out.reads)
            return out

        core.drain = drain  # type: ignore[method-assign]
        try:
            client = super()._login(name, fd)
        finally:
            del core.drain  # the class's method again
        for job in reads:
            core.on_read(run_read(self.store, job))
        self.store.commit(core.drain().writes)
        return client


def measure_store(store: str, messages: int) -> dict[str, tuple[float, float, float]]:
    """The PHASES on `store` ("sqlite" or "redis": a redis-server of its own) with `messages`
    sends each, after one untimed round of a tenth. Returns {phase: (sends/s, commit us per
    send, core us per send)}. Raises AssertionError when a send was not pushed, StoreError,
    RuntimeError (redis-server did not start)."""
    with tempfile.TemporaryDirectory(prefix="cluster_cost_") as tmp, store_cost._server(store, Path(tmp)) as url:
        rig = ReadingRig(Path(tmp), 50, 1, "FULL", 200, 3600.0, 10, url)
        try:
            rig.run(rig.mixed(rig.sends(messages // 10, 1, "w"), 20))
            took, commit = rig.run(rig.chunks(rig.sends(messages, 1, "m")))
            pushed = sum(map(len, rig.received.values()))
            assert pushed == messages, f"{pushed} pushes for {messages} sends"
            out = {PHASES[0]: (messages / took, commit / messages * 1e6, (took - commit) / messages * 1e6)}
            rig.run(rig.chunks(rig.acks(20)))
            rig.keep(0.05)
            took, commit = rig.run(rig.mixed(rig.sends(messages, 1, "n"), 20))
            out[PHASES[1]] = (messages / took, commit / messages * 1e6, (took - commit) / messages * 1e6)
        finally:
            rig.store.close()
    return out
