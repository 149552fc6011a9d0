"""The benchmark (issue #3): the broker and its pyzmq baselines under the same load, in one run.

    python bench/run.py [--quick] [--held 1000,5000] [--json FILE]

Scenarios: 1 private messages at N = 10, 100, 1000 (vs the minimal relay); 2 latency against load:
N = 100 paced at 25%, 50% and 75% of the broker's maximum rate from scenario 1 (20,000/s when it
did not run), vs the relay paced at the same rate, and at 50% again with --sync normal; 3 broadcast
to 100 and 1000 subscribers (vs a bare PUB); 4 a login storm (vs argon2id capacity; others' p99
during it); 5 logged-in idle clients held (broker memory per client); 6 broker start time with
100,000 stored mailbox messages. Each figure is printed with its ratio to the baseline and its
target; a missed target says MISSED.

Accounts for scenarios 1, 2, 3 and 5 are written into the store beforehand with argon2id hashes at
the *minimum* limits (preparation is not what they measure); scenario 4 uses real INTERACTIVE
hashes made by the broker. Traffic goes to 127.0.0.1 only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import nacl.pwhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import argon2_capacity, held_baseline, pub_load, rss_kib  # noqa: E402
from relay_baseline import relay_load  # noqa: E402
from zmq_chat.broker.storage import UserRecord, WriteBatch  # noqa: E402
from zmq_chat.broker.store import SqliteStore  # noqa: E402
from zmq_chat.protocol.messages import PrivateMessage  # noqa: E402
from zmq_chat.loadtest import LoadOptions, SpawnedBroker, prepare_accounts, run_load  # noqa: E402
from zmq_chat.loadtest.spawn import raise_fd_limit  # noqa: E402
from zmq_chat.loadtest.options import DEFAULT_PASSWORD, user_name  # noqa: E402

ROWS: list[dict] = []


def row(scenario: str, figure: str, value: float, unit: str, baseline: float | None = None,
        target: str = "", met: bool | None = None) -> None:
    """Print and keep one figure, with its ratio to `baseline` and whether `target` was met."""
    ratio = f"{value / baseline:.2f}x" if baseline else ""
    verdict = "" if met is None else ("met" if met else "MISSED")
    ROWS.append({"scenario": scenario, "figure": figure, "value": value, "unit": unit,
                 "baseline": baseline, "ratio": ratio, "target": target, "verdict": verdict})
    base = f"{baseline:,.2f}" if baseline is not None else ""
    print(f"{scenario:<4} {figure:<44} {value:>12,.2f} {unit:<10} {base:>12} {ratio:>7} {target:<18} {verdict}",
          flush=True)


def cheap_accounts(data_dir: str, prefix: str, count: int) -> None:
    """Write `count` accounts user_name(prefix, i) with one minimum-cost argon2id hash."""
    pwhash = nacl.pwhash.argon2id.str(DEFAULT_PASSWORD.encode(), opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
                                      memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN).decode()
    store = SqliteStore(data_dir)
    store.commit(WriteBatch(users=[UserRecord(user_name(prefix, i), pwhash, time.time()) for i in range(count)]))
    store.close()


def broker_with_accounts(prefix: str, count: int, extra: list[str] | None = None) -> SpawnedBroker:
    data_dir = tempfile.mkdtemp(prefix="chat-bench-")
    cheap_accounts(data_dir, prefix, count)
    broker = SpawnedBroker(["--max-clients", "20000", *(extra or [])], data_dir=data_dir)
    return broker.start()


def load(broker: SpawnedBroker, prefix: str, clients: int, duration: float, **kw) -> object:
    options = LoadOptions(host="127.0.0.1", port=broker.port, clients=clients, duration=duration,
                          user_prefix=prefix, server_key=broker.server_key,
                          insecure=broker.server_key is None, **kw).validate()
    return run_load(options)


def load_in_background(broker: SpawnedBroker, prefix: str, clients: int, duration: float,
                       **kw) -> tuple[threading.Thread, dict]:
    """Start load(broker, prefix, clients, duration, **kw) in a thread, already started; the run's
    result is put in the returned dict under "r" when it finishes (absent if it raised)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(r=load(broker, prefix, clients, duration, **kw)))
    thread.start()
    return thread, box


def scenario_private(args) -> float:
    """1: private messages, unbounded, N = 10, 100, 1000; ratio to the relay. Returns the N=100 rate."""
    best100 = 0.0
    for n in args.private_ns:
        window = 20 if n <= 100 else 4
        relay = relay_load(n, duration=args.duration, window=window)
        broker = broker_with_accounts(f"p{n}", n)
        try:
            res = load(broker, f"p{n}", n, args.duration, window=window, broadcast_ratio=0.0)
        finally:
            broker.stop()
        rate = res.private.throughput
        if n == 100:
            best100 = rate
        target = ">=0.5x relay, 0 lost" if n == 100 else ""
        met = (rate >= 0.5 * relay["msgs_per_s"] and res.private.lost == 0) if n == 100 else None
        row("1", f"private N={n} window={window}: msgs/s", rate, "msg/s", relay["msgs_per_s"], target, met)
        row("1", f"private N={n}: p50 latency", res.private.latency.p50, "ms", relay["p50_ms"])
        row("1", f"private N={n}: p99 latency", res.private.latency.p99, "ms", relay["p99_ms"])
        row("1", f"private N={n}: acknowledged but lost", res.private.lost, "msgs", None, "0", res.private.lost == 0)
        if n == 100:  # the cost of CURVE: the same load on a broker without encryption
            plain = broker_with_accounts(f"p{n}", n, ["--insecure"])
            try:
                res0 = load(plain, f"p{n}", n, args.duration, window=window, broadcast_ratio=0.0)
            finally:
                plain.stop()
            row("1", f"private N={n} NULL (--insecure): msgs/s", res0.private.throughput, "msg/s", relay["msgs_per_s"])
            row("1", f"private N={n}: CURVE throughput / NULL", rate / max(1.0, res0.private.throughput), "x")
            row("1", f"private N={n} NULL: p99 latency", res0.private.latency.p99, "ms", relay["p99_ms"])
    return best100


def scenario_paced(args, max_rate: float) -> None:
    """2: latency against load. N = 100 clients paced (window 100, private only) at 25%, 50% and
    75% of `max_rate` (msg/s, the broker's closed-loop maximum); each figure (p50, p99 in ms;
    deliveries/s) against the relay paced at the same rate with the same clients, window and
    message size. At 50% the broker runs again with --sync normal (no fsync per batch) to show how
    much of the latency the fsync costs."""
    n, window = 100, 100
    for share in (0.25, 0.5, 0.75):
        per_client = max(0.1, max_rate * share / n)
        relay = relay_load(n, duration=args.duration, window=window, rate=per_client)
        runs = [("", [])] + ([(" --sync normal", ["--sync", "normal"])] if share == 0.5 else [])
        for label, extra in runs:
            broker = broker_with_accounts("h", n, extra)
            try:
                res = load(broker, "h", n, args.duration, rate=per_client, window=window, broadcast_ratio=0.0)
            finally:
                broker.stop()
            figure = f"{share:.0%} max ({per_client * n:,.0f}/s){label}"
            skipped = f" ({res.skipped:,} skipped)" if res.skipped else ""
            row("2", f"{figure}: msgs/s{skipped}", res.private.throughput, "msg/s", relay["msgs_per_s"])
            row("2", f"{figure}: p50", res.private.latency.p50, "ms", relay["p50_ms"])
            p99 = res.private.latency.p99
            if share == 0.5 and not extra:
                row("2", f"{figure}: p99", p99, "ms", relay["p99_ms"], "<5 ms", p99 < 5)
            else:
                row("2", f"{figure}: p99", p99, "ms", relay["p99_ms"])


def scenario_broadcast(args) -> None:
    """3: broadcast to S subscribers at a fixed publish rate; vs a bare PUB at the same rate. The
    broker keeps --history 20000 events and the run drains for up to 20 s: a SUB past its
    high-water mark (1000 events) is dropped to gap repair, and at 1000 broadcasts/s the Python
    subscribers of the load processes fall seconds behind, further than the default 1000 events."""
    for subs in args.broadcast_subs:
        publish_rate = args.publish_rate
        bare = pub_load(subs, rate=publish_rate, duration=args.duration)
        broker = broker_with_accounts(f"b{subs}", subs, ["--history", "20000"])
        try:
            res = load(broker, f"b{subs}", subs, args.duration, rate=publish_rate / subs, window=50,
                       broadcast_ratio=1.0, login_parallel=200, drain=20.0)
        finally:
            broker.stop()
        b = res.broadcast
        target = ">=1M/s, 0 lost" if subs == 1000 else ""
        met = (b.throughput >= 1_000_000 and b.lost == 0) if subs == 1000 else None
        row("3", f"broadcast S={subs} @{publish_rate:.0f}/s: deliveries/s", b.throughput, "deliv/s",
            bare["deliveries_per_s"], target, met)
        row("3", f"broadcast S={subs}: lost after repair (repaired)", b.lost, f"({b.repaired})", bare["lost"])
        row("3", f"broadcast S={subs}: p99 latency", b.latency.p99, "ms", bare["p99_ms"])


def scenario_logins(args) -> None:
    """4: N clients log in at once (real argon2id, INTERACTIVE limits).

    Logins/s comes from a storm on an otherwise idle broker, against argon2id capacity measured
    with one thread per core. Other clients' private p99 "during" is measured in a second storm
    while 20 clients chat at 50 msg/s each, over the whole seconds between the storm's first login
    request and its last reply (so the load tester's own process start is not counted); "without"
    is the same 20 clients alone. On 2 cores the chatting clients and their load processes take
    CPU that argon2id would otherwise get, so the logins/s under chat load is printed for reference.
    """
    capacity = argon2_capacity(3.0)
    broker = SpawnedBroker(["--max-clients", "20000"]).start()
    try:
        n = args.storm
        prepare_accounts("127.0.0.1", broker.port, n, prefix="s", server_key=broker.server_key)
        prepare_accounts("127.0.0.1", broker.port, n, prefix="t", server_key=broker.server_key)
        prepare_accounts("127.0.0.1", broker.port, 20, prefix="q", server_key=broker.server_key)
        alone = load(broker, "s", n, 1.0, rate=0.1, window=1, broadcast_ratio=0.0, login_parallel=n)
        quiet = load(broker, "q", 20, args.duration, rate=50, window=20, broadcast_ratio=0.0)
        steady, box = load_in_background(broker, "q", 20, args.duration + 12, rate=50, window=20, broadcast_ratio=0.0)
        time.sleep(4.0)  # the steady clients are logged in and sending
        storm = load(broker, "t", n, 1.0, rate=0.1, window=1, broadcast_ratio=0.0, login_parallel=n)
        steady.join(args.duration + 120)
    finally:
        broker.stop()
    row("4", f"login storm N={n}: logins/s", alone.login.rate, "logins/s", capacity, ">=0.8x argon2id",
        alone.login.rate >= 0.8 * capacity)
    row("4", f"login storm N={n} during chat: logins/s", storm.login.rate, "logins/s", capacity)
    during = box["r"].latency_between("private", storm.login.first_ns, storm.login.last_ns) if "r" in box else None
    p99 = during.p99 if during and during.count else float("nan")
    row("4", "others' private p99 during storm", p99, "ms", quiet.private.latency.p99, "<=2x without",
        p99 <= 2 * quiet.private.latency.p99)


def scenario_held(args) -> None:
    """5: logged-in idle clients with heartbeats; broker resident memory per client (peak RSS over
    the run minus RSS before), against a bare pyzmq ROUTER + PUB holding as many DEALER + SUB
    pairs with the same traffic shape (held_baseline)."""
    import resource

    fd_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for wanted in args.held:
        n = min(wanted, (fd_soft - 100) // 2 // 100 * 100)  # the broker needs 2 descriptors per client
        if n < wanted:
            print(f"     held {wanted}: the open files limit {fd_soft} holds about {n} clients in the broker; "
                  f"measuring {n} (raise ulimit -n to {2 * wanted + 100} for {wanted})", flush=True)
        procs = max(os.cpu_count() or 1, -(-n // 4000))  # ~4 descriptors per client in a load process
        bare = held_baseline(n, hold=20.0, processes=procs)
        broker = broker_with_accounts(f"i{n}", n)
        try:
            before = rss_kib(broker.proc.pid)
            t, box = load_in_background(broker, f"i{n}", n, 20.0, rate=0.01, window=1, broadcast_ratio=0.0,
                                        login_parallel=500, login_timeout=600, processes=procs)
            peak = before
            while t.is_alive():
                peak = max(peak, rss_kib(broker.proc.pid))
                t.join(1.0)
        finally:
            broker.stop()
        res = box.get("r")
        held = res.logged_in if res else 0
        per = (peak - before) / max(1, held)
        row("5", f"held {n}: logged in", held, "clients", None, f"{n}", held == n)
        row("5", f"held {n}: broker memory per client", per, "KiB", bare["kib_per_client"], "<=50 KiB", per <= 50)


def scenario_restart(args) -> None:
    """6: broker start time (to the first hello reply) with 100,000 stored mailbox messages."""
    from zmq_chat.loadtest.connect import check_broker

    data_dir = tempfile.mkdtemp(prefix="chat-bench-")
    cheap_accounts(data_dir, "r", 100)
    store = SqliteStore(data_dir)
    now = time.time()
    store.commit(WriteBatch(mail=[PrivateMessage(i + 1, user_name("r", (i + 1) % 100), user_name("r", i % 100), now,
                                                 "stored message " * 4, f"c{i}") for i in range(args.mailbox)]))
    store.close()
    started = time.monotonic()
    broker = SpawnedBroker([], data_dir=data_dir).start()
    try:
        check_broker("127.0.0.1", broker.port, server_key=broker.server_key)
        elapsed = time.monotonic() - started
    finally:
        broker.stop()
    row("6", f"start to first reply, {args.mailbox:,} mailbox msgs", elapsed * 1000, "ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, short phases (a smoke run)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase")
    p.add_argument("--held", default="1000,5000,10000",
                   help="client counts for scenario 5 (10,000 needs ~20,100 open files in the broker: "
                        "run as root or raise ulimit -n)")
    p.add_argument("--only", default="123456", help="scenarios to run, e.g. 16")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    raise_fd_limit()  # 10,000 clients need ~20,000 descriptors in the broker
    os.umask(0o077)  # the stores written here must be private, or the broker refuses them
    args.private_ns = [10, 100] if args.quick else [10, 100, 1000]
    args.broadcast_subs = [100] if args.quick else [100, 1000]
    args.publish_rate = 1000.0
    args.storm = 100 if args.quick else 200
    args.held = [200] if args.quick else [int(x) for x in args.held.split(",")]
    args.mailbox = 10_000 if args.quick else 100_000
    if args.quick:
        args.duration = min(args.duration, 3.0)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; command: python bench/run.py {' '.join(sys.argv[1:])}")
    print(f"{'sc':<4} {'figure':<44} {'value':>12} {'unit':<10} {'baseline':>12} {'ratio':>7} {'target':<18} verdict")
    max_rate = 0.0
    if "1" in args.only:
        max_rate = scenario_private(args)
    if "2" in args.only:
        scenario_paced(args, max_rate or 20_000.0)
    if "3" in args.only:
        scenario_broadcast(args)
    if "4" in args.only:
        scenario_logins(args)
    if "5" in args.only:
        scenario_held(args)
    if "6" in args.only:
        scenario_restart(args)
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
