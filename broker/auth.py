"""Password hashing off the message loop: each hashing thread hands its argon2id jobs to its own
hashing process (broker.hasher) running at SCHED_IDLE.

`broker.accounts.AuthJob` is what the core asks for; `run_job` is what a hashing thread executes
(the loop's ThreadPoolExecutor of `--hash-workers` threads, with `start_hasher` as initializer).
The thread only waits on a pipe; the process does the hashing (PyNaCl, ~58 ms of one core and
64 MiB per job). Passwords travel over the private pipe, live only in the job, never in logs.

Why processes at SCHED_IDLE, and cores - 1 of them (issue 9: chat isolated from login storms).
Measured with bench/run.py scenario 4, and the same storm with other broker settings, on 2 cores
(one VM; the load generator on the same cores): others' private p99 during a 200-login storm (20
clients at 50 msg/s) against their quiet p99 in the same run (2.3-8 ms, noisy); logins/s in chat:
- threads x2 at nice 10 (the old default): 74-94 ms (22-41x), 16-17 logins/s;
- threads x2 at SCHED_IDLE: 86 ms (31x); threads x1 at nice 10: 37 ms; x1 SCHED_IDLE: 33, 33 ms
  (10-13x), 10 logins/s;
- processes x2 at SCHED_IDLE: 11-27 ms in 5 runs (2.2-5.8x), 12-14 logins/s; x2 nice 19: 14 ms;
- processes x1 at nice 19: 14 ms (4.0x); x1 at SCHED_IDLE: 7.6, 9.2, 9.5 ms (1.2-1.7x),
  8-9 logins/s.
So the cause was not the CPU share alone. A hashing *thread* needs the GIL after every hash (result,
callback, next job); the loop runs with a short switch interval and, when asked, hands the GIL over
and waits until that thread is scheduled, so a niced or SCHED_IDLE thread stalls the loop for as
long as the scheduler keeps it off the CPU (priority inversion; the lower its priority the longer),
and every hash also mmaps and unmaps 64 MiB in the broker's own address space. A process shares
neither. A second hashing process leaves no core idle for the loop, the writer, libzmq's I/O thread
and the clients: each of their wake-ups must preempt a hasher, and work on one core of this VM runs
up to 1.8x slower while the other core is busy with anything (a Python spin loop as much as
argon2id, so it is the shared host core, not argon2id's 64 MiB of memory traffic in particular).
SCHED_IDLE beats nice 19 because a woken normal task preempts an idle one at once.
With these defaults (one SCHED_IDLE process), `bench/run.py --only 4`: 5.8 ms against 3.0 ms quiet
(1.96x) and 6.8 against 2.9 (2.35x), where the threads at nice 10 gave 74 against 3.4 (21.8x). What
is left is not argon2id: a hashing process that sleeps instead of hashing (cheap hashes, the same
10 logins/s) left 5.4-5.6 ms against 2.0 quiet; the logins themselves (sessions, presence events
to every subscriber, 200 more clients' heartbeats, the storm's own load processes) cost that.

Commit stalls under hashing processes ("fdatasync up to 2 s" seen before) did not reproduce: with
2 SCHED_IDLE hashing processes in a storm the store's commits took at most 11 ms (--stage-times),
and a 4 KiB append + fdatasync loop stayed under 15 ms with hashers as threads, forked or spawned
processes, at SCHED_IDLE or nice 0. argon2id's memory is anonymous (libsodium mmaps it per hash),
never page cache, and this machine has no swap, so hashing causes no writeback. What does lengthen
fdatasync is another process writing to the same ext4 file system (one journal, `discard` mount):
p99 0.5 -> 19 ms, max 86 ms beside a loop writing, syncing and deleting a 256 MiB file; the earlier
stalls were most likely such writers (other test runs), not the processes.

What it trades: login capacity is that of cores - 1 hashing processes (on 2 cores about half: a
storm on an idle broker got 12.4 and 14.6 logins/s against 24.1 before, one thread's argon2id
capacity being ~15.5/s; during chat 9.4-9.8 against 16.1), and at SCHED_IDLE hashing gets almost
no CPU while the machine is saturated (logins then wait in the queue, then E_OVERLOADED); `--hash-nice
19` keeps a small share for logins, `--hash-workers` = cores gives the capacity back. (42% of a
hash, 28 of 68 ms, is kernel time faulting in its fresh 64 MiB: a hasher reusing one buffer would
log in more per core.) Each hashing process
costs about 20 MiB besides the 64 MiB of a running hash. If a process cannot be started or dies,
its thread hashes the job itself (logged) and starts a new process for the next one.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection

from zmq_chat.broker.authjob import AuthJob
from zmq_chat.broker.hasher import IDLE, hash_password, verify_password

__all__ = ["AuthJob", "HasherProcess", "close_hashers", "current_hasher", "hash_password",
           "run_job", "start_hasher", "verify_password"]

log = logging.getLogger(__name__)

_local = threading.local()
_live: weakref.WeakSet[HasherProcess] = weakref.WeakSet()  # open ones, for close_hashers at exit
_live_lock = threading.Lock()


class HasherProcess:
    """One `python -m zmq_chat.broker.hasher` child and its two pipes; used by one thread at a time.

    Args:
        priority: "idle" (SCHED_IDLE) or a nice increment 0..19, applied by the child to itself.
    Raises:
        OSError: the process could not be started (e.g. too many open files or processes).
    Attributes: pid (the child's process id).
    """

    def __init__(self, priority: str | int = IDLE) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zmq_chat.broker.hasher", str(priority), str(req_r), str(rep_w)],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.pid = self.proc.pid
        self._requests = Connection(req_w, readable=False)
        self._replies = Connection(rep_r, writable=False)
        with _live_lock:
            _live.add(self)

    def run(self, job: AuthJob) -> str | bool:
        """The result of `job` computed by the child: the argon2id string of a hash job, or whether
        a verify job's password matches. Blocks for the hash (~58 ms when the CPU is free).

        Raises:
            EOFError, OSError: the child is gone (killed, crashed, or its pipes closed).
        """
        secret = job.password.encode("utf-8", "surrogatepass")
        if job.kind == "verify":
            self._requests.send_bytes(b"v" + job.pwhash.encode("ascii", "replace") + b"\0" + secret)
            return self._replies.recv_bytes() == b"1"
        self._requests.send_bytes(b"h\0" + secret)
        return self._replies.recv_bytes().decode("ascii")

    def __del__(self) -> None:  # the thread holding it ended (the pool shut down)
        self.close(timeout=0.2)

    def close(self, timeout: float = 1.0) -> None:
        """Close the pipes (the child exits at end of file) and reap it, waiting up to `timeout`
        seconds before killing it. Idempotent; raises nothing."""
        with _live_lock:
            _live.discard(self)
        for conn in (getattr(self, "_requests", None), getattr(self, "_replies", None)):
            if conn is not None:
                conn.close()
        if not hasattr(self, "proc") or self.proc.returncode is not None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_hasher(priority: str | int = IDLE) -> None:
    """Thread initializer of the loop's hashing pool: this thread's jobs go to a hashing process
    at `priority` ("idle" = SCHED_IDLE, or nice 0..19), started at its first job. Raises nothing."""
    _local.priority = priority


def current_hasher() -> HasherProcess | None:
    """The calling thread's hashing process, if it started one (for tests and diagnostics)."""
    return getattr(_local, "hasher", None)


def run_job(job: AuthJob) -> AuthJob:
    """Execute `job` on the calling (hashing) thread: its hashing process computes it; if the
    process cannot be started or is gone, the thread computes it itself and the next job starts a
    new process. Sets `job.result` (argon2id string or bool) and drops the password; then runs
    job.after, a shared store's step (claim a name, fetch send ids: see AuthJob). Returns job."""
    hasher = current_hasher()
    try:
        if hasher is None:
            hasher = _local.hasher = HasherProcess(getattr(_local, "priority", IDLE))
        job.result = hasher.run(job)
    except (EOFError, OSError) as exc:
        log.warning("argon2id hashing process unavailable (%s); hashing on the broker's thread", exc)
        if hasher is not None:
            hasher.close(timeout=0.1)
        _local.hasher = None
        job.result = verify_password(job.pwhash, job.password) if job.kind == "verify" else hash_password(job.password)
    job.password = ""
    if job.after is not None:  # a shared store's step, off the loop (see AuthJob)
        try:
            job.after(job)
        except Exception as exc:  # the store is unreachable: claimed/sends stay None (the core says so)
            log.error("shared store step of a %s job for %s failed: %s", job.kind, job.user, exc)
    return job


@atexit.register
def close_hashers() -> None:
    """Close every hashing process of this process (at exit, and for tests). Raises nothing."""
    with _live_lock:
        live = list(_live)
    for hasher in live:
        hasher.close()
