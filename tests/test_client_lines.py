"""Unit tests of the typed-line helpers of the terminal client: aliases, secret lines, history."""

from __future__ import annotations

import pytest

from zmq_chat.client.history import SafeHistory
from zmq_chat.client.lines import command_words, expand_alias, is_secret


@pytest.mark.parametrize("line, expanded", [
    ("/msg bob hi there", "send bob hi there"),
    ("/MSG bob hi", "send bob hi"),
    ("/who", "who"),
    ("/quit", "logout"),
    ("/help", "help"),
    ("/me waves", "broadcast /me waves"),
    ("/status", "status"),
    ("/last 5", "last 5"),
    ("send bob /msg", "send bob /msg"),
    ("who", "who"),
])
def test_aliases_expand_to_seed_commands(line, expanded):
    assert expand_alias(line) == expanded


@pytest.mark.parametrize("line", ["login carol Carolpw123", "  LOGIN carol x", "newuser dave pw12345678",
                                  "/login carol pw", "login\tcarol pw"])
def test_lines_with_a_password_are_secret(line):
    assert is_secret(line)


@pytest.mark.parametrize("line", ["send carol login x", "who", "reg carol", "broadcast login now"])
def test_other_lines_are_not_secret(line):
    assert not is_secret(line)


def test_history_skips_secret_lines_and_unrecorded_prompts():
    history = SafeHistory()
    history.append_string("who")
    history.append_string("login carol Carolpw123")
    history.recording = False
    history.append_string("carol2024")
    history.recording = True
    history.append_string("send bob hi")
    assert history.get_strings() == ["who", "send bob hi"]


def test_command_words_hold_seed_commands_and_aliases():
    words = command_words()
    assert {"send", "who", "/msg", "/me", "/quit", "/help", "/who"} <= set(words)
    assert len(words) == len(set(words))


def _complete(completer, text):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]


def test_tab_completes_commands_and_known_users():
    from zmq_chat.client.completion import ChatCompleter
    completer = ChatCompleter()
    completer.note(["bob", "bobby", "carol"])
    assert _complete(completer, "sta") == ["status "]
    assert "/msg " in _complete(completer, "/m")
    assert _complete(completer, "send bo") == ["bob", "bobby"]
    assert _complete(completer, "/msg ca") == ["carol"]
    assert _complete(completer, "send (bob ca") == ["carol"]
    assert _complete(completer, "send bob ca") == []  # message text
    assert _complete(completer, "broadcast bo") == []
