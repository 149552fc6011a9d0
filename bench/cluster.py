"""Scenario 7 (issue 10): several brokers of one chat on one Redis, against one SQLite broker.

    flock /tmp/bench.lock python bench/cluster.py [--brokers 1,2,3] [--clients 100] [--duration 8]
        [--share 0.5 | --rate MSGS_PER_S] [--store-cost-messages 20000] [--json FILE]
    python bench/run.py --only 7          (the same, inside the benchmark)

A real redis-server (tests/redis_server.py: appendonly yes, appendfsync always, --save '') runs on
a free 127.0.0.1 port in a temporary directory. For 1 SQLite broker (the baseline) and for N = 1,
2, 3 brokers on that Redis (`--store redis://...`; each broker with its own --data-dir for its key
pair; CURVE on; ephemeral ports), the same --clients load clients are spread round robin over the
brokers (so most private messages cross brokers) and measured twice, each time on fresh brokers
and a fresh store: closed loop (window 20, private only: scenario 1's figure) and paced at one
fixed total rate for every row (window 100: scenario 2's), by default --share of what 1 Redis
broker reached closed loop. During each closed-loop step the CPU used by the brokers (with their
hashing processes), redis-server, the load processes, this process and the rest of the machine is
read from /proc (bench/cpushare.py). Every broker runs --stage-times: the commit medians and
messages per commit are printed per step. Then bench/store_cost.py's in-process figures (the
broker's decode, core and commit work per message without sockets) for SQLite and Redis, both
fsyncing every commit. Warnings, errors and tracebacks in any broker's log, a broker's unclean
exit, and acknowledged messages lost are printed (MISSED). Every broker and the redis-server are
stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROWS, cheap_accounts, failed, note, row, temp_dir  # noqa: E402
from cpushare import cpu_shares, snapshot  # noqa: E402
from zmq_chat.loadtest import LoadOptions, SpawnedBroker, run_load  # noqa: E402
from zmq_chat.loadtest.accounting import Results  # noqa: E402
from zmq_chat.loadtest.stages import StageReport, read_stage_times  # noqa: E402

PREFIX = "c"
CLOSED_WINDOW, PACED_WINDOW = 20, 100
LEVELS = ("WARNING", "ERROR", "CRITICAL")


@dataclass
class Step:
    """One measured step: `brokers` brokers on `store` ("sqlite" or "redis"), `mode` "closed" or
    "paced"; res (None when it failed: error says why); per broker: stages (its --stage-times
    report or None), statuses (exit status after SIGTERM), problems (its log lines worth a look);
    cpu ({role: % of one core} over the load run, closed-loop steps only)."""

    store: str
    brokers: int
    mode: str
    res: Results | None = None
    error: str = ""
    stages: list[StageReport | None] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """e.g. "Redis x2", "SQLite x1"."""
        return f"{'SQLite' if self.store == 'sqlite' else 'Redis'} x{self.brokers}"


def log_problems(lines: list[str]) -> list[str]:
    """The lines of a broker's stderr (`asctime levelname message`, see broker/cli.py) worth
    reporting: WARNING, ERROR and CRITICAL records and every line that is no log record (a
    traceback's lines, anything printed raw), without their newlines."""
    out = []
    for line in lines:
        parts = line.split(" ", 3)
        is_record = len(parts) >= 3 and parts[0][:2].isdigit() and parts[0].count("-") == 2
        if (not is_record and line.strip()) or (is_record and parts[2] in LEVELS):
            out.append(line.rstrip("\n"))
    return out


def commit_figures(stages: list[StageReport | None], messages: int) -> tuple[float, float, float]:
    """From the brokers' --stage-times reports and the `messages` acked in the run: (median of
    the brokers' commit p50 in ms, messages per commit over all brokers, writer time per message
    in microseconds estimated as sum(commits x commit p50) / messages). NaN where unknown."""
    nan = float("nan")
    known = [s.commits for s in stages if s is not None and s.commits.get("count") and "ms" in s.commits]
    if not known or messages <= 0:
        return nan, nan, nan
    p50s = sorted(c["ms"]["p50"] for c in known)
    median = p50s[len(p50s) // 2] if len(p50s) % 2 else (p50s[len(p50s) // 2 - 1] + p50s[len(p50s) // 2]) / 2
    commits = sum(c["count"] for c in known)
    busy_ms = sum(c["count"] * c["ms"]["p50"] for c in known)
    return median, messages / commits, busy_ms * 1000.0 / messages


def redis_warnings(path: Path) -> list[str]:
    """The warning-level lines (`pid:role date time # text`) of a redis-server log at `path`
    after its "Ready to accept connections" (the start banner is at that level too); [] when
    there is no log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    ready = next((i for i, line in enumerate(lines) if "Ready to accept connections" in line), -1)
    return [line for line in lines[ready + 1:] if " # " in line]


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
                              user_prefix=PREFIX, broadcast_ratio=0.0, **kw)
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


def report_step(step: Step, base: Step | None) -> None:
    """Print the rows of one step (baseline: the SQLite step of the same mode), then its
    commit figures, CPU shares, per-broker spread and problems."""
    name = f"{step.label} {'closed' if step.mode == 'closed' else 'paced'}"
    if step.res is None:
        failed("7", name, step.error or "no result")
    else:
        r, b = step.res, (base.res if base else None)
        skipped = f" ({r.skipped:,} skipped)" if r.skipped else ""
        row("7", f"{name}: msgs/s{skipped}", r.private.throughput, "msg/s", b.private.throughput if b else None)
        row("7", f"{name}: p50", r.private.latency.p50, "ms", b.private.latency.p50 if b else None)
        row("7", f"{name}: p99", r.private.latency.p99, "ms", b.private.latency.p99 if b else None)
        bad = r.private.lost + r.private.failed + r.private.unanswered + r.broker_lost + r.bad_frames
        row("7", f"{name}: lost/failed/unanswered", bad, "msgs", None, "0", bad == 0)
        if bad or r.sessions_ended or r.private.errors:
            note(f"lost {r.private.lost}, failed {r.private.failed} {r.private.errors}, unanswered "
                 f"{r.private.unanswered}, duplicated {r.private.duplicated}, broker lost {r.broker_lost}, "
                 f"sessions ended {r.sessions_ended}, bad frames {r.bad_frames}")
        if r.per_broker:
            note("clients per broker: " + ", ".join(f"{k} {v}" for k, v in sorted(r.per_broker.items())))
        median, per_commit, writer_us = commit_figures(step.stages, r.private.acked)
        note(f"commits: p50 {median:.2f} ms (median over brokers), {per_commit:.1f} msgs/commit, "
             f"writer ~{writer_us:.1f} us/msg (commits x p50 / msgs)")
    if step.cpu:
        note("CPU, % of one core (200 = both): " + ", ".join(f"{k} {v:.0f}" for k, v in step.cpu.items()))
    if any(s not in (0, None) for s in step.statuses):
        note(f"broker exit statuses after SIGTERM: {step.statuses}")
    for line in step.problems[:40]:
        note(f"LOG {line}")
    if len(step.problems) > 40:
        note(f"... {len(step.problems) - 40} more log lines")


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


def cpu_columns(cpu: dict[str, float]) -> tuple[float, float, float, float]:
    """(all brokers, redis-server, load processes, the rest: this process and "other") from
    cpu_shares' dict with one "broker <i>" role per broker; NaN for each when `cpu` is empty."""
    if not cpu:
        return (float("nan"),) * 4
    brokers = sum(v for k, v in cpu.items() if k.startswith("broker "))
    return brokers, cpu.get("redis-server", 0.0), cpu.get("load", 0.0), cpu.get("bench", 0.0) + cpu.get("other", 0.0)


def summary_table(steps: list[Step], clients: int) -> list[str]:
    """The steps as one table (lines): per store and broker count, the closed-loop msgs/s and
    p99, the paced p50 and p99 (ms), acknowledged messages lost, the commit p50 (ms) and the CPU
    shares of the closed-loop step (% of one core)."""
    def cell(step: Step | None, value) -> str:
        return "-" if step is None or step.res is None else value(step)

    head = (f"{'store':<7}{'brokers':>8}{'clients':>9}{'msgs/s':>9}{'p50':>7}{'p99':>7}{'paced p50':>10}{'p99':>7}"
            f"{'lost':>6}{'commit p50':>11}   CPU % of a core: brokers / redis / load / rest")
    lines = [head]
    for closed in (s for s in steps if s.mode == "closed"):
        paced = next((s for s in steps if s.mode == "paced" and (s.store, s.brokers) == (closed.store, closed.brokers)), None)
        lost = sum(s.res.private.lost for s in (closed, paced) if s is not None and s.res is not None)
        commit = commit_figures(closed.stages, closed.res.private.acked if closed.res else 0)[0]
        cpu = " / ".join(f"{v:.0f}" for v in cpu_columns(closed.cpu))
        lines.append(f"{closed.store:<7}{closed.brokers:>8}{clients:>9}"
                     f"{cell(closed, lambda s: f'{s.res.private.throughput:,.0f}'):>9}"
                     f"{cell(closed, lambda s: f'{s.res.private.latency.p50:.1f}'):>7}"
                     f"{cell(closed, lambda s: f'{s.res.private.latency.p99:.1f}'):>7}"
                     f"{cell(paced, lambda s: f'{s.res.private.latency.p50:.2f}'):>10}"
                     f"{cell(paced, lambda s: f'{s.res.private.latency.p99:.2f}'):>7}"
                     f"{lost:>6}{commit:>11.2f}   {cpu}")
    return lines


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
        steps.append(run_step(args, "redis", 1, "closed", 0.0, redis))
        rate = args.rate or (steps[0].res.private.throughput * args.share if steps[0].res else 0.0)
        steps.insert(0, run_step(args, "sqlite", 1, "closed", 0.0, None))
        steps += [run_step(args, "redis", n, "closed", 0.0, redis) for n in args.brokers if n != 1]
        for step in steps:
            report_step(step, steps[0] if step is not steps[0] else None)
        if rate <= 0:
            failed("7", "paced steps", "no rate: the 1-broker Redis closed loop failed and --rate was not given")
        else:
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
    note(f"summary: {args.clients} clients; closed loop window {CLOSED_WINDOW}; paced at {rate:,.0f} msg/s in all "
         f"(window {PACED_WINDOW}); latencies in ms; CPU during the closed-loop step")
    for line in summary_table(steps, args.clients):
        note(line)
    if args.store_cost_messages:
        store_cost_figures(args.store_cost_messages)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of this scenario (also bench/run.py's, prefixed --cluster-... there)."""
    p.add_argument("--brokers", default="1,2,3", help="broker counts on Redis (default 1,2,3)")
    p.add_argument("--clients", type=int, default=100, help="load clients in all, spread over the brokers (100)")
    p.add_argument("--share", type=float, default=0.5,
                   help="paced rate as a share of 1 Redis broker's closed-loop rate (default 0.5)")
    p.add_argument("--rate", type=float, default=None, help="paced rate in msg/s in all (overrides --share)")
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
