"""Packaging: the broker alone needs only its base dependencies, and a script whose extra is missing
says which extra to install (zmq_chat/entry.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zmq_chat import entry


def test_the_broker_imports_nothing_of_the_client_and_loadtest_extras():
    code = ("import sys, zmq_chat.broker.cli, zmq_chat.broker.loop, zmq_chat.broker.launch, zmq_chat.entry;"
            "print(sorted(m for m in ('prompt_toolkit', 'rich', 'hdrh', 'matplotlib') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == "[]", run.stderr


def test_every_extra_is_installed_in_the_test_environment():
    assert {extra: entry.missing_modules(extra) for extra in entry.EXTRAS} == {"client": [], "loadtest": [], "web": []}


def test_a_script_whose_extra_is_missing_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(entry.EXTRAS, "client", ("prompt_toolkit", "no_such_module_here"))
    with pytest.raises(SystemExit) as stop:
        entry.client()
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "chat-client: needs no_such_module_here; install it with: pip install 'zmq-chat[client]'\n")
