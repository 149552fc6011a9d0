"""chat-client programs in pseudo-terminals for the pexpect tests (tests/test_client_pty.py,
tests/test_client_failover.py): each keeps a transcript of everything it printed, and its
known-brokers file lives in the test's own config dir (XDG_CONFIG_HOME)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

import pexpect


class _Transcript:
    """pexpect logfile that keeps everything the client printed (for 'never echoed' checks)."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def write(self, text: str) -> None:
        self.parts.append(text)

    def flush(self) -> None:
        pass


def transcript(child: pexpect.spawn) -> str:
    """Everything `child` printed so far."""
    return "".join(child.transcript)  # type: ignore[attr-defined]


@contextlib.contextmanager
def client_factory(config_dir: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """A context of make(argv, term="dumb", timeout=15 seconds, env_extra=None) -> a chat-client
    started with `argv` (CHAT_SERVER_KEY and NO_COLOR unset, then `env_extra` added); every client
    made is killed when the context ends."""
    made: list[pexpect.spawn] = []

    def make(argv: list[str], term: str = "dumb", timeout: float = 15, env_extra: dict[str, str] | None = None,
             ) -> pexpect.spawn:
        env = {**os.environ, "TERM": term, "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONUNBUFFERED": "1",
               "XDG_CONFIG_HOME": str(config_dir)}
        env.pop("CHAT_SERVER_KEY", None)
        env.pop("NO_COLOR", None)
        env.update(env_extra or {})
        child = pexpect.spawn(sys.executable, ["-m", "zmq_chat.client", *argv], encoding="utf-8", env=env,
                              timeout=timeout, dimensions=(50, 200))
        child.transcript = []  # type: ignore[attr-defined]
        child.logfile_read = _Transcript(child.transcript)  # type: ignore[attr-defined]
        made.append(child)
        return child

    try:
        yield make
    finally:
        for child in made:
            if child.isalive():
                child.kill(signal.SIGKILL)
            child.close(force=True)


def wait_exit(child: pexpect.spawn, timeout: float = 10) -> int:
    """Wait for the program to end; returns its exit status."""
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus


def logout_all(*children: pexpect.spawn) -> None:
    """Type `logout` in each client and check each exits with status 0."""
    for child in children:
        child.sendline("logout")
        assert wait_exit(child) == 0
