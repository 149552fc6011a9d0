"""The Up-arrow history of the command line: lines that carry a password (`login U P`,
`newuser U P`, client.lines.is_secret) never enter it, nor does anything typed while recording is
off (the pre-login questions, where a password may be typed by mistake)."""

from __future__ import annotations

from prompt_toolkit.history import InMemoryHistory

from zmq_chat.client.lines import is_secret


class SafeHistory(InMemoryHistory):
    """In-memory history (this process only, never on disk) that skips secret lines.

    `recording` (bool): False drops every line appended (set it around a prompt whose answer must
    not be kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = True

    def append_string(self, string: str) -> None:
        """Keep `string` unless recording is off or it carries a password."""
        if self.recording and not is_secret(string):
            super().append_string(string)
