"""Scenario 5 of the benchmark: logged-in idle clients held (issue #3; the machine's limit and
failures that say why, issue #9).

Each client is a DEALER and a SUB, so the broker holds two TCP connections (two descriptors)
per client: the open-files limit sets how many it can hold (broker.limits.clients_held). The
benchmark raises the limit as far as the process may (loadtest.spawn.raise_fd_limit); a step
asking for more than the limit allows is measured at the most it allows, and says so. A step
that fails (a load process or the broker died, a client did not log in) prints why and no
figure, and counts as MISSED.
"""

from __future__ import annotations

import os
import resource
import time

from baselines import held_baseline, rss_kib
from common import broker_with_accounts, failed, load_in_background, note, row
from zmq_chat.broker.limits import FDS_PER_CLIENT, clients_held, files_needed
from zmq_chat.loadtest import LoadTestError, SpawnedBroker
from zmq_chat.loadtest.accounting import Results

HOLD_S = 20.0
"""Seconds the clients stay logged in after the last login (heartbeats only)."""
FDS_PER_LOAD_CLIENT = 4
"""Descriptors per client in a load process: a TCP connection and a zmq signaler per socket."""
LOAD_CLIENTS_PER_PROCESS = 4000
"""Most clients per load process (fewer when the open-files limit says so)."""
TARGET = "<=1.2x bare"
LOGIN_PARALLEL = 150
"""Logins in flight at once over all load processes: each login's presence event goes to every
client already in, so at 9,900 clients the broker answers ~15-30 logins/s and 500 in flight
waited past the load tester's 30 s reply timeout."""
BROKER_FLAGS = ["--hash-nice", "0"]
"""The hashing at the loop's priority: the presence events of the logins keep both cores busy,
and SCHED_IDLE hashing (the default) then starves, so logins time out. This scenario measures
memory, not a login storm's isolation (scenario 4 does)."""


def clients_allowed(wanted: int) -> tuple[int, str]:
    """(how many of `wanted` held clients this machine allows, why fewer: "" when all). The
    open-files limit in force is the one the broker inherits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = clients_held(soft)
    if most is None or most >= wanted:
        return wanted, ""
    n = most // 100 * 100
    return n, (f"held {wanted:,}: the open files limit {soft:,} (hard limit {hard:,}; raising it needs "
               f"CAP_SYS_RESOURCE) holds about {most:,} clients in the broker, {FDS_PER_CLIENT} descriptors "
               f"each; measuring {n:,} (ulimit -Hn {files_needed(wanted):,} for {wanted:,})")


def load_processes(clients: int) -> int:
    """Load processes for `clients` held clients: one per core at least, each under both
    LOAD_CLIENTS_PER_PROCESS and what the open-files limit allows."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per = LOAD_CLIENTS_PER_PROCESS if soft < 0 else min(LOAD_CLIENTS_PER_PROCESS, (soft - 200) // FDS_PER_LOAD_CLIENT)
    return max(os.cpu_count() or 1, -(-clients // max(1, per)))


def why_failed(n: int, box: dict, broker_status: int | None, broker: SpawnedBroker) -> str:
    """Why a held step failed ("" when it did not): the load run's error, the broker's exit, or
    the clients that did not log in (login failures by code, sessions ended, broker lost)."""
    if broker_status is not None:
        return f"the broker exited with status {broker_status} during the run: {broker.tail(3).strip()}"
    if "error" in box:
        exc = box["error"]
        detail = exc.detail.strip().splitlines()[-1] if isinstance(exc, LoadTestError) and exc.detail.strip() else ""
        return f"{exc}" + (f" ({detail})" if detail and detail not in str(exc) else "")
    res: Results | None = box.get("r")
    if res is None:
        return "the load run returned nothing"
    if res.logged_in < n:
        codes = ", ".join(f"{k} x{v}" for k, v in sorted(res.login.failed.items())) or "none"
        ended = ", ".join(f"{k} x{v}" for k, v in sorted(res.sessions_ended.items())) or "none"
        return (f"{res.logged_in:,} of {n:,} logged in; login failures: {codes}; sessions ended: {ended}; "
                f"broker lost: {res.broker_lost}")
    return ""


def held_step(n: int, procs: int) -> tuple[dict, float, int | None, SpawnedBroker]:
    """Run `n` held clients in `procs` load processes against a fresh broker. Returns (the
    background run's box: "r" Results or "error"; the broker's peak RSS growth, KiB; the
    broker's exit status if it died during the run, else None; the stopped broker)."""
    broker = broker_with_accounts(f"i{n}", n, BROKER_FLAGS)
    status = None
    try:
        pid = broker.proc.pid
        before = peak = rss_kib(pid)
        thread, box = load_in_background(broker, f"i{n}", n, HOLD_S, rate=0.01, window=1, broadcast_ratio=0.0,
                                         login_parallel=LOGIN_PARALLEL, login_timeout=600, processes=procs)
        while thread.is_alive():
            if broker.proc.poll() is None:
                peak = max(peak, rss_kib(pid))
            thread.join(1.0)
        status = broker.proc.poll()
    finally:
        broker.stop()
    return box, peak - before, status, broker


def scenario_held(args) -> None:
    """5: logged-in idle clients with heartbeats; the broker's resident memory per client (peak
    RSS over the run minus RSS before), against a bare pyzmq ROUTER + PUB holding as many DEALER
    + SUB pairs with the same traffic shape (baselines.held_baseline)."""
    for wanted in args.held:
        n, why = clients_allowed(wanted)
        if why:
            note(why)
        procs = load_processes(n)
        started = time.monotonic()
        bare = held_baseline(n, hold=HOLD_S, processes=procs)
        box, grown, status, broker = held_step(n, procs)
        reason = why_failed(n, box, status, broker)
        note(f"held {n:,}: {procs} load processes, {time.monotonic() - started:,.0f} s with the baseline")
        if reason:
            failed("5", f"held {n}: logged in, memory per client", reason, TARGET)
            continue
        per = grown / n
        row("5", f"held {n}: logged in", n, "clients", None, f"{n}", True)
        row("5", f"held {n}: broker memory per client", per, "KiB", bare["kib_per_client"], TARGET,
            per <= 1.2 * bare["kib_per_client"])
