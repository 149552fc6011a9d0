"""Tab completion at the session prompt: command words (seed commands and IRC aliases,
client.lines) at the start of the line, user names after `send`, `/msg`, `reg` and inside the
`send (a b ...)` list. Names are learnt from `who`, `last`, presence, messages and broadcasts."""

from __future__ import annotations

from typing import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from zmq_chat.client.lines import ALIASES, command_words

USER_WORDS = frozenset({"send", "reg", "/send", "/reg", *(w for w, seed in ALIASES.items() if seed == "send")})
"""Command words whose first argument is a user name."""


class ChatCompleter(Completer):
    """Completes command words and known user names; `users` grows with `note()`."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self._words = command_words()

    def note(self, names: Iterable[str]) -> None:
        """Remember `names` (str) for completion."""
        self.users.update(n for n in names if n)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions of the word before the cursor (prompt_toolkit's Completer interface)."""
        before = document.text_before_cursor
        words = before.split()
        current = "" if not before or before[-1].isspace() else words[-1]
        done = words[:-1] if current else words
        if not done:  # the command word
            low = current.lower()
            for word in self._words:
                if word.startswith(low):
                    yield Completion(word + " ", start_position=-len(current), display=word)
            return
        if done[0].lower() not in USER_WORDS:
            return
        open_list = "(" in before and ")" not in before
        if len(done) > 1 and not open_list:
            return  # past the user: message text
        prefix = current.lstrip("(")
        for name in sorted(self.users):
            if name.startswith(prefix) and name != prefix:
                yield Completion(name, start_position=-len(prefix))
