"""The pure helpers of the several-brokers benchmark (bench/cluster_report.py, bench/cpushare.py):
/proc parsing and CPU shares, the broker log lines worth reporting, the commit figures from stage
times, redis-server's warnings and the summary's CPU columns. No broker, no Redis, no timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from zmq_chat.loadtest.stages import StageReport

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:  # the bench scripts import their neighbours (common) by name
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cpushare = _load("cpushare")
cluster = _load("cluster_report")

# pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
STAT = "4242 (py (worker) x) S 17 4242 4242 0 -1 4194304 10 0 0 0 120 30 7 3 20 0 3 0 100 0 0"


def test_proc_stat_fields_counted_after_the_last_parenthesis():
    t = cpushare.parse_proc_stat(STAT)
    assert (t.ppid, t.own, t.reaped) == (17, 150, 10)


@pytest.mark.parametrize("text", ["", "4242 no parenthesis", "1 (x) S 1 2 3"])
def test_proc_stat_of_another_shape_is_refused(text):
    with pytest.raises(ValueError):
        cpushare.parse_proc_stat(text)


def test_machine_busy_leaves_out_idle_and_iowait():
    busy, total = cpushare.parse_machine_stat("cpu  100 5 50 1000 20 1 4 0 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (160, 1180)


def test_machine_stat_without_the_cpu_total_is_refused():
    with pytest.raises(ValueError):
        cpushare.parse_machine_stat("intr 1 2 3\n")


def test_a_role_counts_its_pids_and_their_children():
    procs = {10: cpushare.ProcTimes(1, 100, 0), 11: cpushare.ProcTimes(10, 40, 0),
             12: cpushare.ProcTimes(11, 1000, 0), 20: cpushare.ProcTimes(1, 7, 0)}
    assert cpushare.role_ticks(procs, [10]) == 140  # a grandchild is not the broker's
    assert cpushare.role_ticks(procs, [10, 20, 99]) == 147  # a pid that ended counts 0


def test_cpu_shares_in_percent_of_one_core():
    tick = cpushare.CLK_TCK
    before = cpushare.Snapshot({"broker 0": 0, "redis-server": 5 * tick}, bench=0, reaped=0, machine_busy=0)
    after = cpushare.Snapshot({"broker 0": 2 * tick, "redis-server": 6 * tick}, bench=tick, reaped=3 * tick,
                              machine_busy=8 * tick)
    shares = cpushare.cpu_shares(before, after, 4.0)
    assert shares == pytest.approx({"broker 0": 50.0, "redis-server": 25.0, "load": 75.0,
                                    "bench": 25.0, "other": 25.0,
                                    "machine": 200.0}, rel=0.02)


def test_other_is_never_negative():
    before = cpushare.Snapshot({"broker 0": 0}, machine_busy=0)
    after = cpushare.Snapshot({"broker 0": 100}, machine_busy=50)
    assert cpushare.cpu_shares(before, after, 1.0)["other"] == 0.0


def test_log_problems_keep_warnings_errors_and_tracebacks():
    lines = ["2026-11-22 07:28:11,268 INFO listening\n",
             "2026-11-22 07:28:11,270 WARNING slow commit\n",
             "2026-11-22 07:28:12,000 ERROR commit failed\n",
             "Traceback (most recent call last):\n",
             '  File "x.py", line 1, in <module>\n',
             "\n",
             "2026-11-22 07:28:13,000 DEBUG message mentioning ERROR\n"]
    assert cluster.log_problems(lines) == [
        "2026-11-22 07:28:11,270 WARNING slow commit", "2026-11-22 07:28:12,000 ERROR commit failed",
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>']


def _stages(count: int, p50: float) -> StageReport:
    figures = {"p50": p50, "p90": p50, "p99": p50, "max": p50}
    return StageReport(count, {}, {"count": count, "ms": figures, "wake_ups": figures})


def test_commit_figures_over_several_brokers():
    median, per_commit, writer_us = cluster.commit_figures([_stages(100, 2.0), None, _stages(300, 4.0)], 8000)
    assert median == 3.0  # the median of the brokers' p50s, a broker without a report left out
    assert per_commit == 20.0  # 8000 messages in 400 commits
    assert writer_us == pytest.approx((100 * 2.0 + 300 * 4.0) * 1000 / 8000)


def test_stage_lines_one_per_broker_with_a_report():
    figures = {"p50": 1.0, "p90": 2.0, "p99": 3.5, "max": 9.0}
    report = StageReport(5, {"queued": figures, "total": figures})
    assert cluster.stage_lines([None, report]) == ["broker 1 stages p50/p99 ms: queued 1.00/3.50, total 1.00/3.50"]


def test_commit_figures_unknown_without_reports_or_messages():
    assert all(x != x for x in cluster.commit_figures([None], 100))  # NaN
    assert all(x != x for x in cluster.commit_figures([_stages(10, 1.0)], 0))


def test_redis_warnings_after_the_start_banner(tmp_path):
    log = tmp_path / "redis.log"
    log.write_text("1:C 22 Nov 2026 07:28:07.771 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo\n"
                   "1:M 22 Nov 2026 07:28:07.774 * Ready to accept connections tcp\n"
                   "1:M 22 Nov 2026 07:28:09.000 * Background append only file rewriting started\n"
                   "1:M 22 Nov 2026 07:28:10.000 # Asynchronous AOF fsync is taking too long (disk is busy?).\n")
    assert cluster.redis_warnings(log) == ["1:M 22 Nov 2026 07:28:10.000 # Asynchronous AOF fsync is taking "
                                           "too long (disk is busy?)."]
    assert cluster.redis_warnings(tmp_path / "missing.log") == []


def test_cpu_columns_add_the_brokers_up():
    cpu = {"broker 0": 40.0, "broker 1": 30.0, "redis-server": 20.0, "load": 70.0, "bench": 5.0, "other": 10.0,
           "machine": 175.0}
    assert cluster.cpu_columns(cpu) == (70.0, 20.0, 70.0, 15.0)
    assert all(x != x for x in cluster.cpu_columns({}))


def _step(store: str, brokers: int, mode: str, rate: float, p99: float):
    from zmq_chat.loadtest.accounting import Results

    res = Results()
    res.private.throughput, res.private.latency.p50, res.private.latency.p99 = rate, p99 / 2, p99
    return cluster.Step(store, brokers, mode, res=res, stages=[_stages(10, 2.0)], cpu={"broker 0": 80.0})


def test_summary_one_line_per_store_and_broker_count():
    steps = [_step("sqlite", 1, "closed", 20000.0, 200.0), _step("redis", 2, "paced", 8000.0, 60.0),
             cluster.Step("redis", 3, "closed", error="BrokerStartError: no")]
    head, sqlite, redis2, redis3 = cluster.summary_table(steps, 100)
    assert head.split()[:4] == ["store", "brokers", "clients", "msgs/s"]
    assert sqlite.split()[:6] == ["sqlite", "1", "100", "20,000", "100.0", "200.0"]
    assert sqlite.split()[6:9] == ["-", "-", "0"]  # no paced step of it
    assert redis2.split()[3:8] == ["-", "-", "-", "30.00", "60.00"]  # paced only
    assert redis3.split()[3:5] == ["-", "-"]  # failed
