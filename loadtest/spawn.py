"""`--spawn-broker`: run a private broker subprocess on free 127.0.0.1 ports with a temporary
data directory, for the length of a load run.

    with SpawnedBroker() as broker:        # BrokerStartError if it does not come up
        run_load(LoadOptions(host="127.0.0.1", port=broker.port, ...))
    # stopped with SIGTERM (SIGKILL after a grace period); the data directory is removed
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque

from zmq_chat.broker.keys import read_public_key
from zmq_chat.broker.limits import raise_open_files_limit

STARTED_RE = re.compile(r"broker started router=tcp://(\S+):(\d+) pub=tcp://(\S+):(\d+)")
"""The broker's first INFO line on stderr names the bound endpoints."""


class BrokerStartError(RuntimeError):
    """The broker subprocess exited or did not print its start line in time (message: one line)."""


LOAD_LIMITS = ["--max-connections-per-ip", "1000000", "--connection-rate", "1000000", "--rate-limit", "0", "--max-registrations-per-ip", "1000000",
               "--max-failed-logins-per-ip", "1000000", "--max-queued-logins-per-ip", "100000"]
"""Per-IP and per-connection limits lifted for a spawned broker: every load client comes from
127.0.0.1 and sends as fast as it may (later flags in extra_args override these)."""

WANTED_FDS = 65536
"""Open files wanted for big runs: 10,000 clients need ~20,000 in the broker (a TCP connection for
the DEALER and one for the SUB of each client) and ~6 per client in a load process."""


def raise_fd_limit() -> None:
    """Raise the open-files limit toward WANTED_FDS (see broker.limits.raise_open_files_limit);
    a spawned broker and the load processes inherit it. Raises nothing."""
    raise_open_files_limit(WANTED_FDS)


class SpawnedBroker:
    """A `python -m broker` subprocess bound to 127.0.0.1 on ephemeral ports.

    Args:
        extra_args: further chat-broker flags (e.g. ["--max-clients", "20000"]).
        start_timeout: seconds to wait for the start line.
        data_dir: where the store lives; None = a new temporary directory, removed by stop().
    Attributes (after start()):
        port, pub_port (int): the bound ROUTER and PUB ports; host "127.0.0.1".
        server_key: the broker's public key (Z85 bytes) from its data directory; None when the
            extra arguments include --insecure.
        tail: the last 50 stderr lines (kept by a thread that drains stderr so the broker never
            blocks on a full pipe).
    """

    host = "127.0.0.1"

    def __init__(self, extra_args: list[str] | None = None, start_timeout: float = 20.0,
                 data_dir: str | None = None) -> None:
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self._own_dir = data_dir is None
        self.data_dir = data_dir
        self.port = 0
        self.pub_port = 0
        self.server_key: bytes | None = None
        self.tail: deque[str] = deque(maxlen=50)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> "SpawnedBroker":
        """Start the broker and wait for its start line. Returns self.

        Raises:
            BrokerStartError: it exited first or stayed silent for `start_timeout` seconds.
        """
        raise_fd_limit()
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="chat-loadtest-")
        cmd = [sys.executable, "-m", "zmq_chat.broker", "--bind", "127.0.0.1", "--port", "0", "--pub-port", "0",
               "--key-port", "0", "--data-dir", self.data_dir, *LOAD_LIMITS, *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        started = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.tail.append(line.rstrip("\n"))
                if not started.is_set():
                    match = STARTED_RE.search(line)
                    if match:
                        self.port, self.pub_port = int(match.group(2)), int(match.group(4))
                        started.set()
            started.set()  # EOF: the broker exited

        threading.Thread(target=pump, name="broker-stderr", daemon=True).start()
        started.wait(self.start_timeout)
        if not self.port:
            self.stop()
            last = self.tail[-1] if self.tail else "no output"
            raise BrokerStartError(f"the spawned broker did not start: {last}")
        if "--insecure" not in self.extra_args:
            self.server_key = read_public_key(self.data_dir)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the broker and wait (SIGKILL after `timeout` s); remove a temporary data dir.
        Returns the exit status (None if it never started). Idempotent."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait(5)
        if self._own_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        return status

    def __enter__(self) -> "SpawnedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
