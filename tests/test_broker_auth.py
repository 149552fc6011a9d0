"""Unit tests of broker.auth and broker.hasher: argon2id jobs run in hashing processes at a lower
priority (SCHED_IDLE by default), replaced when they die, gone when the broker is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from zmq_chat.broker import hasher
from zmq_chat.broker.auth import AuthJob, current_hasher, run_job, start_hasher

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and /proc are Linux")
PASSWORD = "correct horse \udcff é"  # a lone surrogate survives the pipe (surrogatepass)


def _gone(pid: int, deadline: float) -> bool:
    """Poll until process `pid` has exited (absent or a zombie) or `deadline` (monotonic) passes."""
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def _in_pool(priority: str | int, fn):
    """Run fn() on a one-thread pool initialised like the loop's (start_hasher(priority))."""
    with ThreadPoolExecutor(1, initializer=start_hasher, initargs=(priority,)) as pool:
        return pool.submit(fn).result(timeout=30)


@pytest.mark.timeout(30)
def test_run_job_hashes_then_verifies_in_a_process_and_drops_the_password():
    job = run_job(AuthJob("hash", b"rid", 1, "alice", password=PASSWORD))
    assert isinstance(job.result, str) and job.result.startswith("$argon2id$") and job.password == ""
    ok = run_job(AuthJob("verify", b"rid", 2, "alice", password=PASSWORD, pwhash=job.result))
    bad = run_job(AuthJob("verify", b"rid", 3, "alice", password="wrong horse", pwhash=job.result))
    broken = run_job(AuthJob("verify", b"rid", 4, "alice", password="x", pwhash="not a hash"))
    assert (ok.result, bad.result, broken.result) == (True, False, False)
    child = current_hasher()
    assert child is not None and child.pid != os.getpid() and child.proc.poll() is None
    assert hasher.verify_password(job.result, PASSWORD)  # the parent reads the child's hash the same way


@pytest.mark.timeout(30)
@linux_only
def test_the_hashing_process_runs_at_sched_idle_and_the_thread_keeps_its_priority():
    def job_then_priorities() -> tuple[int, int, int, int]:
        run_job(AuthJob("hash", b"rid", 1, "alice", password="pw"))
        tid, child = threading.get_native_id(), current_hasher()
        assert child is not None
        return (os.sched_getscheduler(child.pid), os.sched_getscheduler(tid),
                os.getpriority(os.PRIO_PROCESS, child.pid), os.getpriority(os.PRIO_PROCESS, tid))

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    child_policy, thread_policy, _, thread_nice = _in_pool("idle", job_then_priorities)
    assert (child_policy, thread_policy, thread_nice) == (os.SCHED_IDLE, os.SCHED_OTHER, mine)
    child_policy, _, child_nice, thread_nice = _in_pool(7, job_then_priorities)
    assert (child_policy, child_nice, thread_nice) == (os.SCHED_OTHER, min(19, mine + 7), mine)


@pytest.mark.timeout(30)
@linux_only
def test_a_dead_hashing_process_costs_no_job_and_is_replaced():
    def kill_then_jobs() -> tuple[object, object, int, int]:
        run_job(AuthJob("hash", b"rid", 1, "alice", password="pw"))
        first = current_hasher()
        assert first is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        pwhash = hasher.hash_password("pw")
        during = run_job(AuthJob("verify", b"rid", 2, "alice", password="pw", pwhash=pwhash))  # hashed on the thread
        after = run_job(AuthJob("verify", b"rid", 3, "alice", password="pw", pwhash=pwhash))  # a new process
        second = current_hasher()
        assert second is not None
        return during.result, after.result, first.pid, second.pid

    during, after, first, second = _in_pool("idle", kill_then_jobs)
    assert (during, after) == (True, True) and first != second


@pytest.mark.timeout(30)
@linux_only
def test_hashing_processes_exit_with_their_thread_and_with_a_killed_broker():
    def job_then_pid() -> int:
        run_job(AuthJob("hash", b"rid", 1, "a", password="pw"))
        child = current_hasher()
        assert child is not None
        return child.pid

    pid = _in_pool("idle", job_then_pid)
    assert _gone(pid, time.monotonic() + 10)  # the pool's thread ended: its process saw end of file

    code = ("import sys; from zmq_chat.broker.auth import HasherProcess; h = HasherProcess(); "
            "print(h.pid, flush=True); sys.stdin.read()")
    broker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert broker.stdin is not None and broker.stdout is not None
    try:
        child = int(broker.stdout.readline())
        broker.kill()  # kill -9: nothing closes the pipes but the kernel
        broker.wait(10)
        assert _gone(child, time.monotonic() + 10)
    finally:
        broker.kill()
        broker.wait(10)
        broker.stdin.close()
        broker.stdout.close()


def test_the_hasher_answers_its_protocol_and_refuses_malformed_requests():
    pwhash = hasher.hash_password("pw")
    assert hasher.answer(b"v" + pwhash.encode() + b"\0pw") == b"1"
    assert hasher.answer(b"v" + pwhash.encode() + b"\0px") == b"0"
    assert hasher.answer(b"h\0pw").startswith(b"$argon2id$")
    for bad in (b"", b"vno separator", b"x\0pw"):
        with pytest.raises(ValueError):
            hasher.answer(bad)
    assert hasher.main([]) == 2  # usage


@pytest.mark.timeout(10)
def test_cli_flags_for_sync_and_hashing_reach_the_config(tmp_path):
    from zmq_chat.broker.cli import build_parser, config_from_args
    from zmq_chat.broker.store import SqliteStore as Store

    args = ["--sync", "normal", "--hash-nice", "19", "--hash-workers", "3", "--data-dir", str(tmp_path)]
    cfg = config_from_args(build_parser().parse_args(args))
    assert (cfg.sync, cfg.hash_nice, cfg.hash_workers) == ("normal", 19, 3)
    assert config_from_args(build_parser().parse_args(["--hash-nice", "idle"])).hash_nice == "idle"
    default = config_from_args(build_parser().parse_args([]))
    assert (default.sync, default.hash_nice, default.hash_workers) == ("full", "idle", max(1, (os.cpu_count() or 1) - 1))
    for bad in (["--sync", "off"], ["--hash-nice", "20"], ["--hash-nice", "-1"], ["--hash-nice", "high"],
                ["--hash-workers", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    store = Store(tmp_path, synchronous="NORMAL")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    with pytest.raises(ValueError):
        Store(tmp_path, synchronous="OFF")
