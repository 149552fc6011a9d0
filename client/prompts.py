"""Reading a line or a hidden password from the terminal with prompt_toolkit (asyncio).

On a full terminal the input line is redrawn below messages printed under `patch_stdout()`; a
password shows one "*" per character. Ctrl+Z at the command line suspends the client (SIGTSTP, as
in a shell's job control); `fg` resumes it and prompt_toolkit redraws the input line.

On a dumb terminal (TERM=dumb, e.g. an editor shell or a test harness) prompt_toolkit would echo
each typed character, so passwords are read with no output at all instead.
"""

from __future__ import annotations

import contextlib
import sys
import termios
from typing import Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.utils import is_dumb_terminal

from zmq_chat.client.history import SafeHistory


class Interrupted(Exception):
    """Ctrl+C at a prompt. (prompt_toolkit raises KeyboardInterrupt, which would stop the asyncio
    loop when it escapes a task, so the Prompter turns it into this ordinary exception.)"""


class Prompter:
    """Line and password input. Both methods raise Interrupted on Ctrl+C and EOFError on Ctrl+D at
    an empty line."""

    def __init__(self, completer: Completer | None = None) -> None:
        self.completer = completer  # Tab completion of command lines (client.completion), or None
        self.history = SafeHistory()
        self._lines: PromptSession[str] = PromptSession(history=self.history, completer=completer,
                                                         complete_while_typing=False, enable_suspend=True)

    async def line(self, message: str, remember: bool = True) -> str:
        """Show `message` and return the typed line (str, without the newline). It is kept in the
        Up-arrow history when `remember` and it carries no password (client.history)."""
        self.history.recording = remember
        try:
            return await self._lines.prompt_async(message, handle_sigint=False)
        except KeyboardInterrupt:
            raise Interrupted() from None
        finally:
            self.history.recording = True

    async def password(self, message: str) -> str:
        """Show `message` and return the typed password; it is never echoed nor kept in any history
        (a throw-away PromptSession each time)."""
        try:
            if is_dumb_terminal():
                with _no_echo():  # before the prompt shows: what is typed at once is not echoed either
                    print(message, end="", flush=True)
                    try:
                        hidden: PromptSession[str] = PromptSession(output=DummyOutput())
                        return await hidden.prompt_async("", is_password=True, handle_sigint=False)
                    finally:
                        print(flush=True)
            session: PromptSession[str] = PromptSession()
            return await session.prompt_async(message, is_password=True, handle_sigint=False)
        except KeyboardInterrupt:
            raise Interrupted() from None


@contextlib.contextmanager
def _no_echo() -> Iterator[None]:
    """Turn the terminal's echo off (when stdin is a terminal) until the block ends.

    prompt_toolkit switches the terminal to raw mode only once its prompt runs, so without this a
    password typed right after the prompt appeared could be echoed by the terminal driver."""
    try:
        fd = sys.stdin.fileno()  # io.UnsupportedOperation (an OSError) for a stream without a descriptor
        saved = termios.tcgetattr(fd)
    except (termios.error, ValueError, OSError, AttributeError):  # AttributeError: sys.stdin is None
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHONL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
