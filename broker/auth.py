"""Password hashing with libsodium's argon2id (PyNaCl), run on worker threads off the message loop.

`broker.accounts.AuthJob` is what the core asks for; `run_job` is what a worker thread executes.
PyNaCl releases the GIL while hashing, so N workers use N cores. Passwords live only in the job,
never in logs.
"""

from __future__ import annotations

import os
import threading

import nacl.exceptions
import nacl.pwhash

from zmq_chat.broker.accounts import AuthJob


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by `increment` (0..19); a ThreadPoolExecutor initializer.

    On Linux each thread has its own nice value (setpriority(2) with the thread id), so niced
    argon2id workers yield the CPU to the message loop when it has work. Measured (bench/run.py,
    scenario 4, 2 cores): other clients' p99 during a 200-login storm 42-47 ms at nice 10 against
    50 ms at nice 0. Moving the hashing to SCHED_IDLE processes instead gave 10 ms in good runs but
    multi-second fdatasync stalls of the store in most runs, so threads stay. Elsewhere, or without
    permission, the thread keeps its priority. Raises nothing.
    """
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:  # pragma: no cover - platform dependent
        pass


def hash_password(password: str) -> str:
    """argon2id hash string of `password` (nacl.pwhash.argon2id.str, INTERACTIVE limits: ~58 ms)."""
    return nacl.pwhash.argon2id.str(password.encode("utf-8", "surrogatepass")).decode("ascii")


def verify_password(pwhash: str, password: str) -> bool:
    """True when `password` matches the argon2id string `pwhash`; False on mismatch or a bad hash."""
    try:
        return nacl.pwhash.verify(pwhash.encode("ascii"), password.encode("utf-8", "surrogatepass"))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


def run_job(job: AuthJob) -> AuthJob:
    """Execute `job` (on a worker thread); sets `job.result` and drops the password. Returns job."""
    if job.kind == "verify":
        job.result = verify_password(job.pwhash, job.password)
    else:
        job.result = hash_password(job.password)
    job.password = ""
    return job
