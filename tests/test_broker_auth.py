"""Unit tests of broker.auth: argon2id jobs and the hashing threads' priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from broker.auth import AuthJob, lower_thread_priority, run_job


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
