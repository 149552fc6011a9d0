"""Scenario 7 (issue 10): several brokers of one chat on one Redis, against one SQLite broker.

    flock /tmp/bench.lock python bench/cluster.py [--brokers 1,2,3] [--clients 100] [--duration 8]
        [--share 0.5 | --rate MSGS_PER_S] [--modes closed,paced] [--drain 5]
        [--store-cost-messages 20000] [--json FILE]
    python bench/run.py --only 7          (the same, inside the benchmark)

(A longer overload of several brokers, e.g. `--brokers 3 --modes closed --duration 45 --drain 90
--store-cost-messages 0`, shows whether cross-broker deliveries fall behind for good.)

A real redis-server (tests/redis_server.py: appendonly yes, appendfsync always, --save '') runs on
a free 127.0.0.1 port in a temporary directory. For 1 SQLite broker (the baseline) and for N = 1,
2, 3 brokers on that Redis (`--store redis://...`; each broker with its own --data-dir for its key
pair; CURVE on; ephemeral ports), the same --clients load clients are spread round robin over the
brokers (a recipient is a client of the sender's load process, whose clients span the brokers:
with N brokers about (N-1)/N of the private messages cross brokers) and measured twice, each time on fresh brokers
and a fresh store: closed loop (window 20, private only: scenario 1's figure) and paced at one
fixed total rate for every row (window 100: scenario 2's), by default --share of what 1 Redis
broker reached closed loop. During each closed-loop step the CPU used by the brokers (with their
hashing processes), redis-server, the load processes, this process and the rest of the machine is
read from /proc (bench/cpushare.py). Every broker runs --stage-times: the commit medians and
messages per commit are printed per step. Then the in-process cost per message (the
broker's decode, core and commit work without sockets) for SQLite and Redis, both
fsyncing every commit (bench/cluster_cost.py). Warnings, errors and tracebacks in any broker's
log, a broker's unclean exit, and acknowledged messages lost are printed (MISSED). Every broker
and the redis-server are stopped at the end, also on failure. The printing: bench/cluster_report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_report import Step, log_problems, redis_warnings, report_step, summary_table  # noqa: E402
from common import ROWS, cheap_accounts, failed, note, row, temp_dir  # noqa: E402
from cpushare import cpu_shares, snapshot  # noqa: E402
from zmq_chat.loadtest import LoadOptions, SpawnedBroker, run_load  # noqa: E402
from zmq_chat.loadtest.stages import read_stage_times  # noqa: E402

PREFIX = "c"
CLOSED_WINDOW, PACED_WINDOW = 20, 100


def redis_accounts(url: str, count: int) -> None:
    """Empty the Redis database at `url` (FLUSHDB) and write `count` accounts user_name(PREFIX, i)
    with one minimum-cost argon2id hash, through RedisStore. Raises StoreError, redis errors."""
    import nacl.pwhash
    import redis

    from zmq_chat.broker.redisstore import RedisStore
    from zmq_chat.broker.storage import UserRecord, WriteBatch
    from zmq_chat.loadtest.options import DEFAULT_PASSWORD, user_name

    admin = redis.Redis.from_url(url)
    try:
        admin.flushdb()
    finally:
        admin.close()
    pwhash = nacl.pwhash.argon2id.str(DEFAULT_PASSWORD.encode(), opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
                                      memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN).decode()
    store = RedisStore(url)
    try:
        store.load(0.0)
        store.commit(WriteBatch(users=[UserRecord(user_name(PREFIX, i), pwhash, time.time()) for i in range(count)]))
    finally:
        store.close()


def start_brokers(store: str, n: int, clients: int, url: str) -> list[SpawnedBroker]:
    """`n` started brokers (--max-clients 1000 or `clients`, --stage-times in their data directory): one on a
    fresh SQLite store holding the accounts, or `n` on the Redis at `url` (emptied, the accounts
    written first), each with its own data directory. Every stderr line is kept. Raises
    BrokerStartError (the brokers already started are stopped)."""
    if store == "redis":
        redis_accounts(url, clients)
    brokers: list[SpawnedBroker] = []
    try:
        for _ in range(n):
            data_dir = temp_dir()
            if store == "sqlite":
                cheap_accounts(data_dir, PREFIX, clients)
            extra = ["--max-clients", str(max(1000, clients)), "--stage-times", str(Path(data_dir) / "stages.json")]
            if store == "redis":
                extra += ["--store", url]
            broker = SpawnedBroker(extra, data_dir=data_dir)
            broker.lines = type(broker.lines)()  # every line, not the last 50: the log is checked
            brokers.append(broker.start())
    except BaseException:
        stop_brokers(brokers, Step(store, n, "start"))
        raise
    return brokers


def stop_brokers(brokers: list[SpawnedBroker], step: Step) -> None:
    """Stop every broker (SIGTERM: a clean exit writes its stage times) and put its exit status,
    stage times and log problems in `step`. Never raises for one broker's failure."""
    for i, broker in enumerate(brokers):
        try:
            step.statuses.append(broker.stop())
        except Exception as exc:  # keep stopping the others
            step.statuses.append(None)
            step.problems.append(f"broker {i}: stop failed: {exc!r}")
        try:
            step.stages.append(read_stage_times(Path(broker.data_dir) / "stages.json"))
        except (OSError, ValueError) as exc:
            step.stages.append(None)
            step.problems.append(f"broker {i}: stage times unreadable: {exc}")
        step.problems += [f"broker {i}: {line}" for line in log_problems(list(broker.lines))]


def run_step(args: argparse.Namespace, store: str, n: int, mode: str, rate: float, redis) -> Step:
    """One step on fresh brokers: `args.clients` clients spread over `n` brokers for
    args.duration s, closed loop (window 20) or paced at `rate` msg/s in all (window 100),
    private messages only. `redis`: the RedisServer (or None for SQLite). Failures are kept
    in the Step, not raised; the brokers are always stopped."""
    step = Step(store, n, mode)
    brokers: list[SpawnedBroker] = []
    try:
        brokers = start_brokers(store, n, args.clients, redis.url if redis else "")
        targets = [(b.host, b.port, b.server_key) for b in brokers]
        kw = dict(window=CLOSED_WINDOW) if mode == "closed" else dict(window=PACED_WINDOW, rate=rate / args.clients)
        options = LoadOptions(host=brokers[0].host, port=brokers[0].port, server_key=brokers[0].server_key,
                              brokers=targets if n > 1 else [], clients=args.clients, duration=args.duration,
                              user_prefix=PREFIX, broadcast_ratio=0.0, drain=args.drain, **kw)
        roles = {f"broker {i}": [b.pid] for i, b in enumerate(brokers)}
        roles["redis-server"] = [redis.proc.pid] if redis else []
        before, started = snapshot(roles), time.monotonic()
        step.res = run_load(options.validate())
        if mode == "closed":
            step.cpu = cpu_shares(before, snapshot(roles), time.monotonic() - started)
    except Exception as exc:  # reported as a MISSED row with its reason
        step.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop_brokers(brokers, step)
    return step


def store_cost_figures(messages: int) -> None:
    """The in-process cost per private send (bench/cluster_cost.py: no sockets, one thread) on
    SQLite and on Redis, both fsyncing every commit: rows of microseconds per send in the
    commit and in the core, Redis against SQLite as the baseline."""
    from cluster_cost import PHASES, measure_store

    figures: dict[str, dict[str, tuple[float, float, float]]] = {}
    for store in ("sqlite", "redis"):
        try:
            figures[store] = measure_store(store, messages)
        except Exception as exc:  # a failed step is reported, the rest still runs
            failed("7", f"in-process cost, {store}", f"{type(exc).__name__}: {exc}")
    base = figures.get("sqlite", {})
    for phase in PHASES:
        for store, name in (("sqlite", "SQLite"), ("redis", "Redis")):
            if phase in figures.get(store, {}):
                rate, commit, core = figures[store][phase]
                sq = base.get(phase) if store == "redis" else None
                row("7", f"in-process {phase}, {name}: commit", commit, "us/msg", sq[1] if sq else None)
                row("7", f"in-process {phase}, {name}: core", core, "us/msg", sq[2] if sq else None)
                note(f"{name} {phase}: {rate:,.0f} sends/s in one thread")


def scenario_cluster(args: argparse.Namespace) -> None:
    """7: the steps above, in one sitting. args: brokers (list of int), clients, duration, share,
    rate (msg/s or None), store_cost_messages (0: skip). Prints rows and notes."""
    import shutil

    if shutil.which("redis-server") is None:
        failed("7", "several brokers on Redis", "redis-server is not installed (apt-get install redis-server)")
        return
    from tests.redis_server import RedisServer

    redis = RedisServer(Path(temp_dir()) / "redis")
    steps: list[Step] = []
    rate = 0.0
    try:
        redis.start()
        if "closed" in args.modes:
            steps = [run_step(args, "sqlite", 1, "closed", 0.0, None)]
            steps += [run_step(args, "redis", n, "closed", 0.0, redis) for n in args.brokers]
            for step in steps:
                report_step(step, steps[0] if step is not steps[0] else None)
        one = next((s.res for s in steps if (s.store, s.brokers) == ("redis", 1) and s.res), None)
        rate = args.rate or (one.private.throughput * args.share if one else 0.0)
        if "paced" in args.modes and rate <= 0:
            failed("7", "paced steps", "no rate: no 1-broker Redis closed loop measured and no --rate given")
        elif "paced" in args.modes:
            note(f"paced steps: {rate:,.0f} msg/s in all ({rate / args.clients:,.2f} per client, window "
                 f"{PACED_WINDOW}), the same for every row")
            paced = [run_step(args, "sqlite", 1, "paced", rate, None)]
            report_step(paced[0], None)
            for n in args.brokers:
                paced.append(run_step(args, "redis", n, "paced", rate, redis))
                report_step(paced[-1], paced[0])
            steps += paced
    finally:
        redis.stop()
        for line in redis_warnings(redis.log_path):
            note(f"redis-server LOG {line}")
    paced_at = f"paced at {rate:,.0f} msg/s in all (window {PACED_WINDOW})" if "paced" in args.modes and rate > 0 \
        else "no paced steps"
    note(f"summary: {args.clients} clients; closed loop window {CLOSED_WINDOW}; {paced_at}; latencies in ms; "
         "CPU during the closed-loop step (login, sending and drain)")
    for line in summary_table(steps, args.clients):
        note(line)
    if args.store_cost_messages:
        store_cost_figures(args.store_cost_messages)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of this scenario (bench/run.py takes their defaults: see defaults())."""
    p.add_argument("--brokers", default="1,2,3", help="broker counts on Redis (default 1,2,3)")
    p.add_argument("--clients", type=int, default=100, help="load clients in all, spread over the brokers (100)")
    p.add_argument("--share", type=float, default=0.5,
                   help="paced rate as a share of 1 Redis broker's closed-loop rate (default 0.5)")
    p.add_argument("--rate", type=float, default=None, help="paced rate in msg/s in all (overrides --share)")
    p.add_argument("--modes", default="closed,paced", help="closed, paced or both (default closed,paced)")
    p.add_argument("--drain", type=float, default=5.0,
                   help="most seconds to wait for replies and deliveries after each step's sending (default 5)")
    p.add_argument("--store-cost-messages", type=int, default=20_000,
                   help="sends per phase of the in-process store cost (default 20000; 0: skip)")


def defaults(duration: float, quick: bool = False) -> argparse.Namespace:
    """This scenario's settings at their defaults, with `duration` s per step (bench/run.py's
    --duration); `quick`: brokers 1,2, 40 clients and a short in-process part."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--brokers", "1,2", "--clients", "40", "--store-cost-messages", "4000"] if quick else [])
    args.brokers = [int(x) for x in args.brokers.split(",")]
    args.duration = duration
    return args


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase (default 8)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    args.brokers = [int(x) for x in args.brokers.split(",")]
    os.umask(0o077)  # the stores written here must be private, or the broker refuses them
    print(f"command: python bench/cluster.py {' '.join(sys.argv[1:])}; {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'sc':<4} {'figure':<44} {'value':>12} {'unit':<10} {'baseline':>12} {'ratio':>7} {'target':<18} verdict")
    scenario_cluster(args)
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
