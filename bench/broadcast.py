"""Scenario 3 of the benchmark: broadcast to S subscribers, against a bare PUB at the highest rate
at which the bare PUB loses nothing (issue #9).

For each S: sweep the bare PUB's publish rate (bench/pub_baseline.pub_sweep: the subscribers
count frames cheaply, so what limits it is zmq) up from 250,000 deliveries/s; then run the
broker (CURVE, as deployed) with S logged-in clients publishing that many broadcasts/s in all,
each subscriber counting the events on the load tester's hot path (loadtest.fleet: seq and send
time read without decoding). Printed: deliveries/s against the bare PUB's, lost after repair,
p99. With S = 1000, two reference runs at the same rate split the gap: the bare PUB with CURVE
(what encryption alone costs) and the broker with --insecure (the broker without it).
"""

from __future__ import annotations

from common import broker_with_accounts, failed, load, note, row
from pub_baseline import pub_load, pub_sweep
from zmq_chat.loadtest import LoadTestError
from zmq_chat.loadtest.accounting import Results

FIRST_DELIVERIES_PER_S = 250_000
"""The sweep's first rate in deliveries per second (publish rate x subscribers); it doubles."""
HISTORY = "20000"
"""The broker's --history: a SUB past its high-water mark (1000 events) is dropped to gap repair,
which needs the events still kept."""
DRAIN_S = 20.0
"""Seconds after the sending window for every subscriber to reach the last seq (repairing gaps)."""


def broker_run(args, subs: int, rate: float, extra: list[str]) -> Results:
    """The broker with `subs` logged-in subscribers that publish `rate` broadcasts/s in all for
    args.duration seconds. Raises LoadTestError, BrokerStartError."""
    broker = broker_with_accounts(f"b{subs}", subs, ["--history", HISTORY, *extra])
    try:
        return load(broker, f"b{subs}", subs, args.duration, rate=rate / subs, window=50,
                    broadcast_ratio=1.0, login_parallel=200, drain=DRAIN_S)
    finally:
        broker.stop()


def _sweep(args, subs: int) -> dict | None:
    """The bare PUB's sweep for `subs` subscribers, each step printed; the clean result or None."""
    def step(r: dict) -> None:
        note(f"bare PUB S={subs} @{r['rate']:,.0f}/s: {r['deliveries_per_s']:,.0f} deliveries/s, "
             f"{r['lost']:,} lost, p99 {r['p99_ms']:,.1f} ms")

    best, _ = pub_sweep(subs, args.duration, start=FIRST_DELIVERIES_PER_S / subs, on_step=step)
    return best


def scenario_broadcast(args) -> None:
    """3: for each S of args.broadcast_subs, the bare PUB's sweep, then the broker at the rate
    found (deliveries/s, lost after repair, p99 against the bare PUB); with S = 1000 and not
    --quick, the two reference runs."""
    for subs in args.broadcast_subs:
        target = ">=0.9x bare, 0 lost" if subs == 1000 else ""
        bare = _sweep(args, subs)
        if bare is None:
            failed("3", f"broadcast S={subs}", f"the bare PUB lost messages even at "
                   f"{FIRST_DELIVERIES_PER_S / subs:,.0f}/s", target)
            continue
        rate = bare["rate"]
        try:
            res = broker_run(args, subs, rate, [])
        except LoadTestError as exc:
            failed("3", f"broadcast S={subs} @{rate:,.0f}/s", str(exc), target)
            continue
        b = res.broadcast
        ratio_ok = b.throughput >= 0.9 * bare["deliveries_per_s"]
        row("3", f"broadcast S={subs} @{rate:,.0f}/s: deliveries/s", b.throughput, "deliv/s",
            bare["deliveries_per_s"], target, (ratio_ok and b.lost == 0) if subs == 1000 else None)
        if res.skipped or b.sent < 0.95 * rate * args.duration:
            note(f"the load processes sent {b.sent:,} broadcasts of {rate * args.duration:,.0f} due "
                 f"({res.skipped:,} skipped): they could not keep up")
        row("3", f"broadcast S={subs}: lost after repair (repaired)", b.lost, f"({b.repaired:,})", bare["lost"])
        row("3", f"broadcast S={subs}: p99 latency", b.latency.p99, "ms", bare["p99_ms"])
        if subs == 1000 and not args.quick:
            _references(args, subs, rate, bare)


def _references(args, subs: int, rate: float, bare: dict) -> None:
    """The bare PUB with CURVE and the broker with --insecure at `rate`, against the bare PUB."""
    curve = pub_load(subs, rate, args.duration, curve=True)
    row("3", f"  ref: bare PUB CURVE S={subs}: deliveries/s", curve["deliveries_per_s"], "deliv/s",
        bare["deliveries_per_s"])
    note(f"bare PUB CURVE: {curve['lost']:,} lost, p99 {curve['p99_ms']:,.1f} ms")
    try:
        res = broker_run(args, subs, rate, ["--insecure"])
    except LoadTestError as exc:
        failed("3", f"  ref: broker NULL S={subs}", str(exc))
        return
    b = res.broadcast
    row("3", f"  ref: broker NULL S={subs}: deliveries/s", b.throughput, "deliv/s", bare["deliveries_per_s"])
    note(f"broker NULL: {b.lost:,} lost after repair ({b.repaired:,} repaired), p99 {b.latency.p99:,.1f} ms")
