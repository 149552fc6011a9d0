"""What each durable message costs the broker, without sockets (issue 9): BrokerCore driven in
process on a SqliteStore in a temporary directory, as the loop drives it (a wake-up's requests,
then drain() and one commit).

    flock /tmp/bench.lock python bench/store_cost.py [--messages 60000] [--sync normal] [--profile]
        [--store sqlite|redis|redis://HOST:PORT/DB]

Three timed phases for a send to one recipient (N=1) and to a group of 3, each recipient online
(so every message is also pushed): sends alone (sends/s); their acks, in acks of --ack-ids ids as a
client sends them (messages acked/s; send ids are kept 1 h, so acked rows are marked and nothing
is pruned yet); then sends with the acks of each wake-up's pushes in the next wake-up and send ids
kept only --keep fake seconds (the clock moves 1 ms per wake-up) with core.prune() every
--prune-every wake-ups, so deleting what a message leaves behind (its send id, its acked row) is
timed too: at the broker's 1 h and 60 s nothing would be pruned within a run. Requests are encoded
outside the timed parts: the figures are the broker's decode, core, encode and commit work in one
thread, each with the microseconds per item spent in SqliteStore.commit and outside it (the
core). --sync full adds one fsync per wake-up (the disk's figure, not Python's); normal is the
default so that the figures show the CPU's.
--profile prints the top functions by own time (cProfile) instead of the rates.

--store redis (issue 10) runs the same batches on broker.redisstore.RedisStore (the core in shared
mode: one EVALSHA per commit) against a redis-server of its own, started in the temporary directory
(appendonly yes; --sync full: appendfsync always, normal: appendfsync no); --store redis://... uses
that server instead and EMPTIES its database (FLUSHDB) before each group. Redis runs in its own
process, so its work is in the commit's time (the round trip included), on the other core.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import nacl.pwhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmq_chat.broker.config import Config  # noqa: E402
from zmq_chat.broker.connections import ROUTER  # noqa: E402
from zmq_chat.broker.core import BrokerCore  # noqa: E402
from zmq_chat.broker.storage import UserRecord, WriteBatch  # noqa: E402
from zmq_chat.broker.store import SqliteStore  # noqa: E402
from zmq_chat.broker.redisstore import RedisStore  # noqa: E402
from zmq_chat.protocol import messages as m  # noqa: E402
from zmq_chat.protocol import wire  # noqa: E402
from zmq_chat.protocol.version import PROTOCOL_VERSION  # noqa: E402

PASSWORD = "benchmark password"
T0 = 1_800_000_000.0
Request = tuple[tuple[bytes, int, str], list[bytes]]
"""((routing id, fd, key) of a client, the request's frames)."""


class Rig:
    """A core on a store with `pairs` senders and `pairs * group` recipients, all logged in.

    Args:
        data_dir: an empty directory for the store. pairs: senders. group: recipients per send.
        sync: "FULL" or "NORMAL" (SqliteStore; with a Redis store: appendfsync always or no).
        per_wakeup: requests per wake-up (commit). store: "sqlite" or a Redis URL (emptied first).
        keep: --sends-keep-seconds (fake seconds; the clock moves 1 ms per wake-up).
        prune_every: wake-ups between calls of core.prune() (0: never).
    """

    def __init__(self, data_dir: Path, pairs: int, group: int, sync: str, per_wakeup: int, keep: float,
                 prune_every: int, store: str = "sqlite") -> None:
        self.now = T0
        self.per_wakeup = per_wakeup
        self.prune_every = prune_every
        self.store: SqliteStore | RedisStore
        if store == "sqlite":
            self.store = SqliteStore(data_dir, synchronous=sync)
        else:
            self.store = _redis_store(store, sync)
        pwhash = nacl.pwhash.argon2id.str(PASSWORD.encode(), opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
                                          memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN).decode()
        self.senders = [f"sender{i}" for i in range(pairs)]
        self.recipients = [f"recipient{i}" for i in range(pairs * group)]
        batch = WriteBatch()
        batch.users += [UserRecord(name, pwhash, T0) for name in self.senders + self.recipients]
        self.store.commit(batch)
        cfg = Config(data_dir=str(data_dir), rate_limit=0, mailbox_quota=10**9, mail_window=10**9,
                     max_clients=10**6, conn_rate=10**6, sends_keep_seconds=keep)
        self.core = BrokerCore(cfg, self.store, 4120, clock=lambda: self.now,
                               broker_id=getattr(self.store, "broker_id", ""))
        self.clients: dict[str, tuple[bytes, int, str]] = {}
        for k, name in enumerate(self.senders + self.recipients):
            self.clients[name] = self._login(name, 100 + k)
        self.received: dict[bytes, list[int]] = {}
        self.wakeups = 0

    def _login(self, name: str, fd: int) -> tuple[bytes, int, str]:
        rid, key = f"rid{fd}".encode(), f"key{fd:037d}"
        self.core.on_accepted(fd, ROUTER, f"10.{fd // 250}.{fd % 250}.1", 40000)
        frames = wire.encode_request(m.Login(req=1, version=PROTOCOL_VERSION, user=name, password=PASSWORD))
        self.core.on_request(rid, frames, fd, key, sum(map(len, frames)))
        for job in self.core.drain().jobs:
            job.result = True  # the hash is right; the benchmark is not about argon2id
            self.core.on_auth_result(job)
        out = self.core.drain()
        self.store.commit(out.writes)
        assert any(rid == r and b'"ok"' in body for r, _, body, _ in out.router), f"login of {name} failed"
        return rid, fd, key

    def run(self, wakeups: Iterable[list[Request]]) -> tuple[float, float]:
        """Handle each wake-up's requests (client, frames), then drain and commit (the fake clock
        moves 1 ms per wake-up; core.prune() every prune_every wake-ups); remember the pushed mail
        ids per routing id. Making the requests is not timed. Returns (seconds, in commit)."""
        core, store, received, clock = self.core, self.store, self.received, time.perf_counter
        took = in_commit = 0.0
        for requests in wakeups:
            start = clock()
            for (rid, fd, key), frames in requests:
                core.on_request(rid, frames, fd, key, 0)
            self.wakeups += 1
            if self.prune_every and self.wakeups % self.prune_every == 0:
                core.prune()
            out = core.drain()
            before = clock()
            store.commit(out.writes)
            in_commit += clock() - before
            for rid, _, _, mail_id in out.router:
                if mail_id:
                    received.setdefault(rid, []).append(mail_id)
            self.now += 0.001
            took += clock() - start
        return took, in_commit

    def chunks(self, requests: list[Request]) -> Iterator[list[Request]]:
        """`requests` in wake-ups of per_wakeup."""
        for first in range(0, len(requests), self.per_wakeup):
            yield requests[first:first + self.per_wakeup]

    def mixed(self, sends: list[Request], ids_per_ack: int) -> Iterator[list[Request]]:
        """Wake-ups of per_wakeup sends, each followed by the acks of what the one before pushed
        (as clients ack soon after delivery); then the acks of the last."""
        for requests in self.chunks(sends):
            yield requests + self.acks(ids_per_ack)
        yield self.acks(ids_per_ack)

    def keep(self, seconds: float) -> None:
        """Set --sends-keep-seconds of the running core."""
        self.core.cfg = dataclasses.replace(self.core.cfg, sends_keep_seconds=seconds)

    def sends(self, count: int, group: int, tag: str) -> list[Request]:
        """`count` send requests, round robin over the senders, each to its `group` recipients."""
        reqs = []
        n = len(self.senders)
        for i in range(count):
            k = i % n
            to = self.recipients[k * group:(k + 1) * group]
            frames = wire.encode_request(m.Send(req=i + 2, id=f"{tag}{i}", to=to, text=f"message number {i} " * 3))
            reqs.append((self.clients[self.senders[k]], frames))
        return reqs

    def acks(self, ids_per_ack: int) -> list[Request]:
        """Acks of every mail id pushed so far, `ids_per_ack` ids each, interleaved over the recipients."""
        per_client = []
        by_rid = {c[0]: c for c in self.clients.values()}
        for rid, ids in self.received.items():
            chunks = [ids[i:i + ids_per_ack] for i in range(0, len(ids), ids_per_ack)]
            per_client.append([(by_rid[rid], wire.encode_request(m.Ack(req=j + 10**6, ids=c)))
                               for j, c in enumerate(chunks)])
        self.received.clear()  # in place: run() holds it
        reqs = []
        for row in range(max(map(len, per_client), default=0)):
            reqs += [chunks[row] for chunks in per_client if row < len(chunks)]
        return reqs


def measure(args: argparse.Namespace, profile: cProfile.Profile | None) -> list[tuple[str, float, str]]:
    """For N=1 and N=3, each in a fresh store: sends alone, then their acks (send ids kept 1 h:
    rows are marked, nothing is pruned yet), then sends with the acks right behind them and the
    send ids kept --keep s, so the prune deletes what they leave. Returns (figure, rate, unit) rows."""
    rows = []
    for group in (1, 3):
        with tempfile.TemporaryDirectory(prefix="store_cost_") as tmp, _server(args.store, Path(tmp)) as url:
            rig = _rig_class(url)(Path(tmp), args.pairs, group, args.sync.upper(), args.per_wakeup, 3600.0,
                                  args.prune_every, url)
            for rep in range(args.warmup):  # the tables hold rows, the code paths are warm
                rig.run(rig.mixed(rig.sends(args.messages // 10, group, f"w{rep}-"), args.ack_ids))
            if profile:
                profile.enable()
            took, commit = rig.run(rig.chunks(rig.sends(args.messages, group, "m")))
            pushed = sum(map(len, rig.received.values()))
            assert pushed == args.messages * group, f"{pushed} pushes for {args.messages} sends"
            rows.append((f"private sends, N={group}", args.messages / took, _unit("sends/s", took, commit, args.messages)))
            took, commit = rig.run(rig.chunks(rig.acks(args.ack_ids)))
            rows.append((f"  their acks ({args.ack_ids} ids each)", pushed / took,
                         _unit("msgs acked/s", took, commit, pushed)))
            rig.keep(args.keep)
            took, commit = rig.run(rig.mixed(rig.sends(args.messages, group, "n"), args.ack_ids))
            rows.append((f"  send + ack + prune, N={group}", args.messages / took,
                         _unit("sends/s", took, commit, args.messages)))
            if profile:
                profile.disable()
            assert sum(rig.core.mail_counts.values()) == 0, "every message was acked"
            rig.store.close()
    return rows


def _rig_class(store: str) -> type[Rig]:
    """Rig for SQLite; for a Redis store bench/cluster_cost.py's ReadingRig, whose logins run the
    shared store's mailbox reads (broker/reads.py) as the loop would (Rig drops them: nothing would
    be pushed)."""
    if store == "sqlite":
        return Rig
    from cluster_cost import ReadingRig  # (it imports this module: imported here, not at the top)

    return ReadingRig


@contextlib.contextmanager
def _server(store: str, tmp: Path) -> Iterator[str]:
    """The --store value to open: "sqlite", the given redis:// URL, or for "redis" the URL of a
    redis-server of our own in `tmp/redis` (tests/redis_server.py; killed on exit)."""
    if store != "redis":
        yield store
        return
    from tests.redis_server import RedisServer

    server = RedisServer(tmp / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _redis_store(url: str, sync: str) -> RedisStore:
    """A RedisStore on `url` after FLUSHDB, its appendfsync set for `sync` (FULL: always, NORMAL: no)."""
    import redis

    admin = redis.Redis.from_url(url)
    admin.flushdb()
    admin.config_set("appendfsync", "always" if sync == "FULL" else "no")
    admin.close()
    store = RedisStore(url, weak_durability=sync != "FULL")
    store.load(0.0)
    return store


def _unit(unit: str, took: float, commit: float, count: int) -> str:
    """`unit` with the microseconds per item spent in Store.commit and outside it (the core)."""
    return f"{unit:13s} commit {commit / count * 1e6:5.1f} us + core {(took - commit) / count * 1e6:5.1f} us"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=60_000, help="sends timed per phase (default 60000)")
    p.add_argument("--pairs", type=int, default=50, help="senders (each with its own recipients)")
    p.add_argument("--per-wakeup", type=int, default=200, help="requests per wake-up, i.e. per commit")
    p.add_argument("--ack-ids", type=int, default=20, help="ids per ack request")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds of a tenth of --messages first")
    p.add_argument("--sync", choices=("normal", "full"), default="normal")
    p.add_argument("--keep", type=float, default=0.05,
                   help="--sends-keep-seconds of the last phase, fake seconds (1 ms per wake-up; default 0.05)")
    p.add_argument("--prune-every", type=int, default=10, help="wake-ups between prunes (default 10; 0: none)")
    p.add_argument("--store", default="sqlite",
                   help="sqlite (default), redis (a redis-server of its own) or redis://HOST:PORT/DB (EMPTIED first)")
    p.add_argument("--profile", action="store_true", help="print the top functions instead of rates")
    args = p.parse_args(argv)
    profile = cProfile.Profile() if args.profile else None
    rows = measure(args, profile)
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return 0
    print(f"# {args.store} store, {args.messages} sends per phase, {args.pairs} senders, "
          f"{args.per_wakeup} requests per commit, sync {args.sync}, prune every {args.prune_every} commits, "
          f"python {sys.version.split()[0]}")
    for figure, rate, unit in rows:
        print(f"{figure:34s} {rate:10,.0f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
