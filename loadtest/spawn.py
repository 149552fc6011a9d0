"""`--spawn-broker`: run a private broker subprocess on free 127.0.0.1 ports with a temporary
data directory, for the length of a load run (broker.launch does the starting and stopping).

    with SpawnedBroker() as broker:        # BrokerStartError if it does not come up
        run_load(LoadOptions(host="127.0.0.1", port=broker.port, server_key=broker.server_key, ...))
    # stopped with SIGTERM (SIGKILL after a grace period); the temporary data directory is removed
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from zmq_chat.broker.launch import BrokerStartError, LaunchedBroker
from zmq_chat.broker.limits import raise_open_files_limit

__all__ = ["LOAD_LIMITS", "WANTED_FDS", "BrokerStartError", "SpawnedBroker", "raise_fd_limit"]

LOAD_LIMITS = ["--max-connections-per-ip", "1000000", "--connection-rate", "1000000", "--rate-limit", "0",
               "--max-registrations-per-ip", "1000000", "--max-failed-logins-per-ip", "1000000",
               "--max-queued-logins-per-ip", "100000"]
"""Per-IP and per-connection limits lifted for a spawned broker: every load client comes from
127.0.0.1 and sends as fast as it may (later flags in extra_args override these)."""

WANTED_FDS = 65536
"""Open files wanted for big runs: 10,000 clients need ~20,000 in the broker (a TCP connection for
the DEALER and one for the SUB of each client) and ~6 per client in a load process."""


def raise_fd_limit() -> None:
    """Raise the open-files limit toward WANTED_FDS (see broker.limits.raise_open_files_limit);
    a spawned broker and the load processes inherit it. Raises nothing."""
    raise_open_files_limit(WANTED_FDS)


class SpawnedBroker(LaunchedBroker):
    """A broker.launch.LaunchedBroker for load runs: 127.0.0.1, ephemeral ports, LOAD_LIMITS, the
    open-files limit raised first, the last 50 stderr lines kept.

    Args:
        extra_args: further chat-broker flags (e.g. ["--max-clients", "20000"]).
        start_timeout: seconds to wait for the broker to be ready.
        data_dir: where the store lives; None = a temporary directory that start() makes and
            stop() (also `with`'s exit, or a failed start) removes: restart() keeps it, so the
            broker comes back with its accounts and key; start() after stop() makes a new one.
    Attributes once started: host, port, pub_port, key_port, server_key (Z85 bytes; None with
    --insecure), proc, lines, data_dir (see LaunchedBroker).
    """

    def __init__(self, extra_args: list[str] | None = None, start_timeout: float = 20.0,
                 data_dir: str | None = None) -> None:
        self._own_dir = data_dir is None  # a temporary directory, made by start()
        self._dir_made = False
        self._keep_dir = False
        super().__init__(data_dir or tempfile.gettempdir(), [*LOAD_LIMITS, *(extra_args or [])],
                         start_timeout=start_timeout, keep_lines=50)

    def start(self) -> SpawnedBroker:
        """Raise the open-files limit, make the temporary data directory (if it is ours and not
        made yet), start the broker and wait until it is ready. Returns self.

        Raises:
            BrokerStartError: it exited first or was not ready within `start_timeout` seconds
                (the broker is then stopped; a temporary data directory is removed).
        """
        raise_fd_limit()
        if self._own_dir and not self._dir_made:
            self.data_dir = Path(tempfile.mkdtemp(prefix="chat-loadtest-"))
            self._dir_made = True
        try:
            super().start()
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def stop(self, kill: bool = False, timeout: float = 15.0) -> int | None:
        """Stop the broker (see LaunchedBroker.stop) and remove a temporary data directory (not
        when restart() stops it). Returns its exit status (None if it never started). Idempotent."""
        status = super().stop(kill=kill, timeout=timeout)
        if self._dir_made and not self._keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._dir_made = False
        return status

    def restart(self, kill: bool = False) -> SpawnedBroker:
        """Stop (SIGTERM, or SIGKILL with `kill`) and start again on the same ports and data
        directory: the accounts, messages and key survive. Raises BrokerStartError like start()."""
        self._keep_dir = True
        try:
            super().restart(kill=kill)
        finally:
            self._keep_dir = False
        return self
