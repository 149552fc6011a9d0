"""A real `redis-server` for tests (Debian's package; never a fake): started on a free 127.0.0.1
port in its own directory with the broker's durability settings (`--appendonly yes --appendfsync
always --save ''`), ready when it answers PING (a deadline poll), with kill9() and restart() on the
same directory and port, pause() and resume() (a stall), and a way to make its next start load
slowly (slow_load()). The `redis_server` fixture (tests/conftest.py) skips a test with a one-line
reason when redis-server is not installed and kills the server at the end of the test, failed or
not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT = 10.0
"""Seconds a start or restart may take until PING is answered."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process. directory: where its append-only file and log go (made if
    missing); port: its 127.0.0.1 port (0: a free one). Start with start() (done by the fixture).

    url: `redis://127.0.0.1:<port>/0`. client(): a redis.Redis on it (closed by stop()).
    Raises RuntimeError when the server does not answer PING within START_TIMEOUT seconds (its
    log is in the message).
    """

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def start(self, *extra: str, wait: bool = True) -> None:
        """Start the server (same directory and port as before, `extra` redis-server arguments)
        and, with `wait`, wait until it answers PING (while it loads its data it may already)."""
        assert self.proc is None, "already running"
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--logfile", str(self.log_path), "--databases", "4", *extra]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self._wait_ready()

    def slow_load(self, keys: int, delay_us: int = 1000) -> tuple[str, ...]:
        """Make the data's next load take about keys * delay_us microseconds: writes `keys` padding
        keys (pad:<i>, in database 3, out of the store's way), rewrites the append-only file (its
        base becomes an RDB file, the part Redis's key-load-delay slows) and waits for the rewrite
        (a deadline poll). Returns the `extra` arguments for the next start(). Raises
        AssertionError when the rewrite does not finish within START_TIMEOUT seconds."""
        import redis

        pad = redis.Redis(host="127.0.0.1", port=self.port, db=3)
        try:
            pipe = pad.pipeline(transaction=False)
            for i in range(keys):
                pipe.set(f"pad:{i}", b"x" * 64)
            pipe.execute()
            pad.bgrewriteaof()
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                info = pad.info("persistence")
                if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                    break
                assert time.monotonic() < deadline, "the append-only file was not rewritten in time"
                time.sleep(0.01)
        finally:
            pad.close()
        return ("--key-load-delay", str(delay_us), "--loading-process-events-interval-bytes", "1024")

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self._log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT} s: {self._log_tail()}")
                time.sleep(0.01)
        finally:
            probe.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def client(self, **kw):
        """A redis.Redis (bytes replies) on this server; closed by stop()."""
        import redis

        c = redis.Redis.from_url(self.url, **kw)
        self._clients.append(c)
        return c

    def kill9(self) -> None:
        """SIGKILL the server (no shutdown save; only what the append-only file holds survives)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP the server: it answers nothing (as in a long stall) until resume()."""
        assert self.proc is not None, "not running"
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server after pause()."""
        assert self.proc is not None, "not running"
        os.killpg(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """kill9() if running, then start() again on the same directory and port."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        """Close the clients made by client() and kill the server (a test's data is not kept)."""
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()
        self.kill9()


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A started RedisServer in `directory`, killed on exit (also when the body raised). Skips the
    test (pytest.skip) when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def bcast_body(user: str, cid: str, ts: float = 1_800_000_000.0) -> bytes:
    """The Event JSON of a broadcast "hello" as the core puts it in a shared store's batch (seq 0)."""
    from zmq_chat.protocol import messages as m
    from zmq_chat.protocol.wire import encode_json

    return encode_json(m.Event(0, ts, "bcast", user, text="hello", cid=cid))
