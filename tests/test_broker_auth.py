"""Unit tests of broker.auth: argon2id jobs and the hashing threads' priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from zmq_chat.broker.auth import AuthJob, lower_thread_priority, run_job


@pytest.mark.timeout(10)
def test_run_job_hashes_then_verifies_and_drops_the_password():
    job = run_job(AuthJob("hash", b"rid", 1, "alice", password="correct horse"))
    assert isinstance(job.result, str) and job.result.startswith("$argon2id$") and job.password == ""
    ok = run_job(AuthJob("verify", b"rid", 2, "alice", password="correct horse", pwhash=job.result))
    bad = run_job(AuthJob("verify", b"rid", 3, "alice", password="wrong horse", pwhash=job.result))
    broken = run_job(AuthJob("verify", b"rid", 4, "alice", password="x", pwhash="not a hash"))
    assert (ok.result, bad.result, broken.result) == (True, False, False)


@pytest.mark.timeout(5)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is a Linux feature")
def test_lower_thread_priority_affects_only_the_calling_thread():
    seen: dict[str, int] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        lower_thread_priority(5)
        seen["before"], seen["after"] = before, os.getpriority(os.PRIO_PROCESS, tid)

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert seen["after"] == min(19, seen["before"] + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    lower_thread_priority(0)  # no change, no error
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


@pytest.mark.timeout(10)
def test_cli_flags_for_sync_and_hash_nice_reach_the_config(tmp_path):
    from zmq_chat.broker.cli import build_parser, config_from_args
    from zmq_chat.broker.store import SqliteStore as Store

    cfg = config_from_args(build_parser().parse_args(["--sync", "normal", "--hash-nice", "19", "--data-dir", str(tmp_path)]))
    assert (cfg.sync, cfg.hash_nice) == ("normal", 19)
    default = config_from_args(build_parser().parse_args([]))
    assert (default.sync, default.hash_nice) == ("full", 10)
    for bad in (["--sync", "off"], ["--hash-nice", "20"], ["--hash-nice", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    store = Store(tmp_path, synchronous="NORMAL")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    with pytest.raises(ValueError):
        Store(tmp_path, synchronous="OFF")
