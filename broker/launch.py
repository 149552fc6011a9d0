"""Start a chat broker subprocess and know when it is ready: the one launcher of the tests, the load
tester (--spawn-broker) and the benchmarks. Needs nothing beyond the broker's own dependencies.

    with LaunchedBroker(data_dir, ["--max-clients", "20000"]) as broker:   # BrokerStartError
        connect(f"tcp://{broker.host}:{broker.port}", server_key=broker.server_key)
    # stopped with SIGTERM (SIGKILL after a grace period, or at once with stop(kill=True))

Readiness is machine-readable: the broker is started with `--ready-file` and the launcher polls that
file (broker.ready) under a deadline, so no log line is parsed. stderr is drained by a thread (the
broker never blocks on a full pipe) and kept in `lines` for diagnostics and log assertions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Generic, TypeVar, cast, overload

from zmq_chat.broker.ready import ReadyInfo, read_ready_file

T = TypeVar("T")

POLL_S = 0.02
"""Seconds between looks at the ready file while waiting for it (the wait is on the process, so an
early exit is seen at once)."""


class BrokerStartError(RuntimeError):
    """The broker exited before it was ready, or was not ready within the deadline. str(exc): one
    line saying which, then the last lines the broker wrote on stderr."""


class _FromReady(Generic[T]):
    """A read-only attribute of LaunchedBroker: the field of the same name of its ReadyInfo
    (RuntimeError before start())."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, broker: None, owner: type) -> _FromReady[T]: ...

    @overload
    def __get__(self, broker: LaunchedBroker, owner: type) -> T: ...

    def __get__(self, broker: LaunchedBroker | None, owner: type) -> _FromReady[T] | T:
        if broker is None:
            return self
        return cast(T, getattr(broker._ready(), self.name))

    def __set__(self, broker: LaunchedBroker, value: T) -> None:
        raise AttributeError(f"{self.name} is read from the ready file")


class LaunchedBroker:
    """`python -m zmq_chat.broker` on `host` (127.0.0.1 by default), ports 0 = ephemeral.

    Args:
        data_dir: the broker's --data-dir (created by the broker if missing; never removed here).
        args: further chat-broker flags, after the launcher's own (so they may override them).
        host, port, pub_port, key_port: --bind and the three ports (0 = any free port).
        start_timeout: seconds to wait for the ready file.
        keep_lines: how many stderr lines `lines` keeps (None = all).
    Attributes once started:
        info (ReadyInfo): what the broker wrote in its ready file; port, pub_port, key_port (int),
            server_key (Z85 bytes, None with --insecure), fingerprint (str), pid (int) from it.
        proc: the subprocess.Popen; lines: its stderr lines (with their newlines).
    """

    def __init__(self, data_dir: str | Path, args: list[str] | tuple[str, ...] = (), *, host: str = "127.0.0.1",
                 port: int = 0, pub_port: int = 0, key_port: int = 0, start_timeout: float = 20.0,
                 keep_lines: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.host = host
        self._ports = (port, pub_port, key_port)
        self.start_timeout = start_timeout
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.info: ReadyInfo | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._ready_dir: Path | None = None
        self._pump: threading.Thread | None = None

    # -- what the ready file says ------------------------------------------------------------------
    @property
    def ready_path(self) -> Path:
        """Where the broker writes its ready file: in a private temporary directory that start()
        makes and stop() removes. Raises RuntimeError before start()."""
        if self._ready_dir is None:
            raise RuntimeError("the broker has not been started")
        return self._ready_dir / "ready.json"

    def _ready(self) -> ReadyInfo:
        if self.info is None:
            raise RuntimeError("the broker has not been started")
        return self.info

    port: _FromReady[int] = _FromReady()  # the bound ROUTER port
    pub_port: _FromReady[int] = _FromReady()  # the bound PUB port
    key_port: _FromReady[int] = _FromReady()  # the bound key endpoint port
    fingerprint: _FromReady[str] = _FromReady()  # `SHA256:...` of the public key; "" with --insecure
    pid: _FromReady[int] = _FromReady()  # the broker's process id

    @property
    def server_key(self) -> bytes | None:
        """The broker's CURVE public key, Z85 bytes (40); None when it runs --insecure."""
        info = self._ready()
        return None if info.insecure else info.public_key.encode()

    # -- life cycle --------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The command line start() runs."""
        port, pub_port, key_port = self._ports
        return [sys.executable, "-m", "zmq_chat.broker", "--bind", self.host, "--port", str(port),
                "--pub-port", str(pub_port), "--key-port", str(key_port), "--data-dir", str(self.data_dir),
                "--ready-file", str(self.ready_path), *self.args]

    def start(self) -> LaunchedBroker:
        """Start the broker and wait until its ready file appears. Returns self.

        Raises:
            BrokerStartError: it exited first (e.g. a port in use, a readable data directory) or
                was not ready within `start_timeout` seconds (then it is killed).
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the broker is already running")
        if self._ready_dir is None:
            self._ready_dir = Path(tempfile.mkdtemp(prefix="chat-broker-ready-"))
        self.ready_path.unlink(missing_ok=True)
        self.info = None
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._pump = threading.Thread(target=self._drain_stderr, args=(self.proc,), name="broker-stderr", daemon=True)
        self._pump.start()
        self.info = self._wait_ready(self.proc)
        return self

    def _drain_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line)

    def _wait_ready(self, proc: subprocess.Popen[str]) -> ReadyInfo:
        deadline = time.monotonic() + self.start_timeout
        while True:
            info = read_ready_file(self.ready_path)
            if info is not None and info.pid == proc.pid:
                return info
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop(kill=True)
                raise self._start_error(f"the broker was not ready within {self.start_timeout:g} s")
            try:
                status = proc.wait(min(POLL_S, left))
            except subprocess.TimeoutExpired:
                continue
            self.stop()  # reaps it, reads the rest of its stderr, removes the ready directory
            raise self._start_error(f"the broker exited with status {status} before it was ready")

    def _start_error(self, what: str) -> BrokerStartError:
        """A BrokerStartError saying `what` happened, then the last 10 lines of the broker's stderr."""
        return BrokerStartError(f"{what}; its stderr ends:\n{self.tail(10)}")

    def stop(self, kill: bool = False, timeout: float = 15.0) -> int | None:
        """Stop the broker: SIGTERM (a clean shutdown), or SIGKILL with `kill`; SIGKILL anyway after
        `timeout` seconds. Returns its exit status (negative: the signal that ended it; None if it
        was never started). Idempotent; the ports and `info` stay known for restart()."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(5)
        if self._pump is not None:
            self._pump.join(5)
        if self._ready_dir is not None:
            shutil.rmtree(self._ready_dir, ignore_errors=True)
            self._ready_dir = None
        return status

    def restart(self, kill: bool = False) -> LaunchedBroker:
        """Stop (SIGTERM, or SIGKILL with `kill`) and start again on the same ports and data dir."""
        self.stop(kill=kill)
        if self.info is not None:
            self._ports = (self.info.port, self.info.pub_port, self.info.key_port)
        return self.start()

    def __enter__(self) -> LaunchedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- its log -----------------------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything kept from the broker's stderr, as one string."""
        return "".join(self.lines)

    def tail(self, count: int = 20) -> str:
        """The last `count` stderr lines ("(no output)" when there are none)."""
        kept = list(self.lines)[-count:]
        return "".join(kept).rstrip("\n") or "(no output)"
