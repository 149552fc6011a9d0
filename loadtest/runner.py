"""Orchestration of a load run in the calling process: start the load processes (zmq_chat.loadtest.worker),
step them through login -> start -> stop -> drain -> report over Pipes, feed progress snapshots to
a callback, and merge their reports (loadtest.accounting.merge_reports).

    results = run_load(LoadOptions(host="127.0.0.1", port=4119, clients=100, duration=10))
    print(results.private.throughput, results.private.latency.p99, results.lost)

The accounts must exist first (loadtest.accounts.prepare_accounts).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Callable

import zmq_chat
from zmq_chat.loadtest.accounting import Results, merge_reports
from zmq_chat.loadtest.ledgers import WorkerReport
from zmq_chat.loadtest.connect import resolve
from zmq_chat.loadtest.options import LoadOptions, user_names
from zmq_chat.loadtest.worker import WorkerConfig

START_DELAY_S = 0.3
"""Seconds between the start signal and the first send (all processes start together)."""
PROGRESS_EVERY_S = 0.5
LOGOUT_JOIN_S = 3.0
"""Seconds to let the load processes log out and exit after their reports."""
EXIT_WAIT_S = 2.0
"""Seconds to wait for a load process whose pipe closed to exit, to report its status."""
SPAWN_MARGIN_S = 60.0
"""Extra seconds allowed for starting processes and for each phase change before giving up."""


class LoadTestError(RuntimeError):
    """The run could not be carried out (a load process failed or hung, nobody could log in).
    `str(exc)` is one line; `detail` may hold a worker's traceback."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class Progress:
    """A live snapshot for progress displays (what the `progress` callback of run_load receives).

    phase: "login" | "run" | "drain" | "done"; elapsed_s: seconds since the phase began (run:
    since the first send); duration_s: the sending window; logins_done/logins_ok/logins_total;
    cumulative counts (sent, acked, delivered per kind; errors; inflight sends) and rates per
    second over the last 2 s (phase "done": averages over the sending window); p99s (ms) of the last full second, worst process.
    """

    phase: str = "login"
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    logins_done: int = 0
    logins_ok: int = 0
    logins_total: int = 0
    private_sent: int = 0
    private_acked: int = 0
    private_delivered: int = 0
    broadcast_sent: int = 0
    broadcast_acked: int = 0
    broadcast_delivered: int = 0
    errors: int = 0
    inflight: int = 0
    send_rate: float = 0.0
    private_rate: float = 0.0
    broadcast_rate: float = 0.0
    private_p99_ms: float = 0.0
    broadcast_p99_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Pool:
    """The parent's side of the load processes: `python -m zmq_chat.loadtest.worker FD` subprocesses, each
    talking over one end of a socketpair wrapped as a multiprocessing Connection (no
    multiprocessing start method, so callers need no `if __name__ == "__main__"` guard)."""

    def __init__(self, configs: list[WorkerConfig], progress: Callable[[Progress], None] | None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conns: list[Connection] = []
        self.logs: list[Any] = []
        root = str(Path(zmq_chat.__file__).resolve().parent.parent)  # the directory holding zmq_chat
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            for cfg in configs:
                mine, theirs = socket.socketpair()
                log = tempfile.TemporaryFile()
                try:
                    proc = subprocess.Popen([sys.executable, "-m", "zmq_chat.loadtest.worker", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log, env=env)
                finally:
                    theirs.close()
                conn = Connection(mine.detach())
                self.procs.append(proc)
                self.conns.append(conn)
                self.logs.append(log)
                conn.send(cfg)
        except BaseException:
            self.shutdown()
            raise
        self.callback = progress
        self.snap = Progress(logins_total=sum(len(c.users) for c in configs))
        self.login_state: dict[int, tuple[int, int]] = {}
        self.run_state: dict[int, dict[str, Any]] = {}
        self.phase_began = time.monotonic()
        self._last_emit = 0.0
        self.start_ns = 0

    def stderr_tail(self, i: int) -> str:
        """The last line a load process wrote to stderr ("" if none)."""
        try:
            self.logs[i].seek(0)
            lines = self.logs[i].read().decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def stderr_text(self, i: int) -> str:
        """Everything load process `i` wrote to stderr ("" if nothing or unreadable)."""
        try:
            self.logs[i].seek(0)
            return self.logs[i].read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def exit_reason(self, i: int, wait_s: float = EXIT_WAIT_S) -> str:
        """Why load process `i` is gone, for an error message: its exit status or the signal that
        killed it (e.g. SIGKILL: the kernel's out-of-memory killer, or a limit), waited for up to
        `wait_s` seconds, then the last line it wrote on stderr."""
        proc = self.procs[i]
        try:
            status = proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            why = "its control pipe closed while it still runs"
        elif status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            why = f"killed by {name}" + (" (out of memory? see dmesg)" if -status == signal.SIGKILL else "")
        else:
            why = f"exit status {status}"
        tail = self.stderr_tail(i)
        return f"{why}; stderr: {tail}" if tail else f"{why}; nothing on stderr"

    def send_all(self, msg: tuple) -> None:
        """Send a control message to every process (one that is gone is skipped)."""
        for conn in self.conns:
            try:
                conn.send(msg)
            except (BrokenPipeError, OSError):
                pass

    def collect(self, kind: str, deadline: float, what: str) -> dict[int, tuple]:
        """Wait until every process has sent a `kind` message; handle progress meanwhile.

        Raises LoadTestError when a process fails, exits, or `deadline` (monotonic s) passes.
        """
        got: dict[int, tuple] = {}
        index = {id(c): i for i, c in enumerate(self.conns)}
        while len(got) < len(self.conns):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [i for i in range(len(self.conns)) if i not in got]
                raise LoadTestError(f"load process(es) {missing} did not finish {what} in time")
            pending = [c for i, c in enumerate(self.conns) if i not in got]
            for i in [index[id(ready)] for ready in mp_wait(pending, min(left, PROGRESS_EVERY_S))]:
                conn = self.conns[i]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    raise LoadTestError(f"load process {i} exited during {what}: {self.exit_reason(i)}",
                                        self.stderr_text(i)) from None
                if msg[0] == "error":
                    last = msg[1].strip().splitlines()[-1] if msg[1].strip() else "unknown error"
                    raise LoadTestError(f"load process {i} failed during {what}: {last}", msg[1])
                if msg[0] == kind:
                    got[i] = msg
                elif msg[0] == "login":
                    self.login_state[i] = (msg[1], msg[2])
                elif msg[0] == "progress":
                    self.run_state[i] = msg[1]
            self.emit()
        return got

    def set_phase(self, phase: str) -> None:
        """Enter `phase` ("login", "run", "drain", "done") and emit a snapshot at once."""
        self.snap.phase = phase
        self.phase_began = time.monotonic()
        self.emit(force=True)

    def emit(self, force: bool = False) -> None:
        """Call the progress callback with a fresh snapshot (at most every PROGRESS_EVERY_S unless forced)."""
        now = time.monotonic()
        if self.callback is None or (not force and now - self._last_emit < PROGRESS_EVERY_S):
            return
        s = self.snap
        s.logins_done = sum(v[0] for v in self.login_state.values())
        s.logins_ok = sum(v[1] for v in self.login_state.values())
        states = list(self.run_state.values())

        def total(key: str) -> int:
            return sum(int(st.get(key, 0)) for st in states)

        s.private_sent, s.private_acked, s.private_delivered = (
            total("private_sent"), total("private_acked"), total("private_delivered"))
        s.broadcast_sent, s.broadcast_acked, s.broadcast_delivered = (
            total("broadcast_sent"), total("broadcast_acked"), total("broadcast_delivered"))
        s.errors, s.inflight = total("errors"), total("inflight")
        s.private_p99_ms = max([st.get("private_p99_ms", 0.0) for st in states] or [0.0])
        s.broadcast_p99_ms = max([st.get("broadcast_p99_ms", 0.0) for st in states] or [0.0])
        sent = s.private_sent + s.broadcast_sent
        if s.phase == "done":  # averages over the sending window
            dur = max(s.duration_s, 1e-9)
            s.send_rate, s.private_rate, s.broadcast_rate = sent / dur, s.private_delivered / dur, s.broadcast_delivered / dur
        else:  # each process's rates over its last RATE_WINDOW_S, added up
            s.send_rate = sum(st.get("send_rate", 0.0) for st in states)
            s.private_rate = sum(st.get("private_rate", 0.0) for st in states)
            s.broadcast_rate = sum(st.get("broadcast_rate", 0.0) for st in states)
        if s.phase in ("run", "drain", "done") and self.start_ns:
            s.elapsed_s = max(0.0, (time.monotonic_ns() - self.start_ns) / 1e9)
        else:
            s.elapsed_s = now - self.phase_began
        self._last_emit = now
        self.callback(replace(s, extra=dict(s.extra)))  # a copy: callers may keep snapshots

    def shutdown(self) -> None:
        """Tell every process to stop, wait a little, then kill the stragglers; close the pipes."""
        self.send_all(("abort",))
        self.join(5.0)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(2.0)
        for conn in self.conns:
            conn.close()
        for log in self.logs:
            log.close()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds in total for the processes to exit."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def split_users(names: list[str], parts: int) -> list[list[str]]:
    """Split `names` into `parts` contiguous chunks whose sizes differ by at most one."""
    parts = max(1, min(parts, len(names)))
    q, r = divmod(len(names), parts)
    out, i = [], 0
    for p in range(parts):
        k = q + (1 if p < r else 0)
        out.append(names[i:i + k])
        i += k
    return out


def spread_over_brokers(clients: int, brokers: int) -> list[int]:
    """The broker index of each client: round robin, client i on broker i % brokers."""
    return [i % max(1, brokers) for i in range(clients)]


def worker_configs(options: LoadOptions) -> list[WorkerConfig]:
    """One WorkerConfig per load process: the clients split evenly, one random run tag, the login
    parallelism shared out; with several brokers, client i on broker i % brokers (so a process's
    clients, and the private messages between them, span the brokers). Raises BrokerUnreachable
    when a host does not resolve."""
    targets = options.targets()
    resolved = [(host, port, *resolve(host, port), key) for host, port, key in targets]
    brokers = [(LoadOptions.label(host, port), address, port, ipv6, key)
               for host, port, address, ipv6, key in resolved] if options.brokers else []
    _, port0, address, ipv6, key0 = resolved[0]
    chunks = split_users(user_names(options.user_prefix, options.clients), options.effective_processes)
    spread = spread_over_brokers(options.clients, len(targets))
    run_tag = "r" + secrets.token_hex(3)
    per_proc_parallel = max(1, options.login_parallel // len(chunks))
    configs, first = [], 0
    for i, users in enumerate(chunks):
        configs.append(WorkerConfig(
            worker=i, address=address, port=port0, ipv6=ipv6, users=users, password=options.password,
            rate=options.rate, window=options.window, broadcast_ratio=options.broadcast_ratio, size=options.size,
            run_tag=run_tag, login_parallel=per_proc_parallel, login_timeout=options.effective_login_timeout,
            drain=options.drain, seed=options.seed, server_key=key0, brokers=brokers,
            broker_of=spread[first:first + len(users)] if brokers else [],
        ))
        first += len(users)
    return configs


def run_load(options: LoadOptions, progress: Callable[[Progress], None] | None = None) -> Results:
    """Run one load test against the broker at options.host:options.port, or spread over
    options.brokers (several brokers of one chat).

    Phases: log every client in (login rate and latency are measured here), send for
    options.duration seconds, stop, wait up to options.drain seconds for replies and deliveries,
    then merge the figures. The accounts must exist (prepare_accounts). The load processes are
    `python -m zmq_chat.loadtest.worker` subprocesses (options.effective_processes of them), so a calling
    script needs no `if __name__ == "__main__"` guard; the call blocks until they are done (about
    login time + duration + drain + 1 s).

    Args:
        options: LoadOptions (validated here).
        progress: optional callback receiving a Progress snapshot about twice a second.
    Returns:
        Results (Results.ok is False when an acknowledged message was lost).
    Raises:
        OptionsError: invalid options.
        BrokerUnreachable: the host does not resolve.
        LoadTestError: a load process failed or hung, or no client could log in.
    """
    options.validate()
    pool = _Pool(worker_configs(options), progress)
    pool.snap.duration_s = options.duration
    try:
        pool.set_phase("login")
        ready = pool.collect("ready", time.monotonic() + options.effective_login_timeout + SPAWN_MARGIN_S, "the login phase")
        if sum(msg[1] for msg in ready.values()) == 0:
            failed: dict[str, int] = {}
            for msg in ready.values():
                for code, n in msg[2].items():
                    failed[code] = failed.get(code, 0) + n
            codes = ", ".join(f"{code} x{n}" for code, n in sorted(failed.items())) or "no answer"
            raise LoadTestError(f"no client could log in ({codes}); do the accounts exist with this password?")
        start_ns = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        end_ns = start_ns + int(options.duration * 1e9)
        pool.start_ns = start_ns
        pool.send_all(("start", start_ns, end_ns))
        pool.set_phase("run")
        stopped = pool.collect("stopped", time.monotonic() + START_DELAY_S + options.duration + options.drain + SPAWN_MARGIN_S,
                               "sending")
        target = max(msg[1] for msg in stopped.values())
        now_ns = time.monotonic_ns()
        deadline_ns = max(end_ns + int(options.drain * 1e9), now_ns + (int(0.5e9) if options.drain > 0 else 0))
        pool.send_all(("drain", target, deadline_ns))
        pool.set_phase("drain")
        reports_msgs = pool.collect("report", time.monotonic() + (deadline_ns - now_ns) / 1e9 + SPAWN_MARGIN_S, "the drain")
        drain_s = (time.monotonic_ns() - end_ns) / 1e9
        pool.set_phase("done")
        pool.join(LOGOUT_JOIN_S)
    finally:
        pool.shutdown()
    reports: list[WorkerReport] = [reports_msgs[i][1] for i in sorted(reports_msgs)]
    results = merge_reports(reports, options.duration, drain_s)
    results.options = options.to_dict()
    return results
