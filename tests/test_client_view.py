"""Unit tests of client.view and client.paint: group lines, /me actions, colours on and off."""

from __future__ import annotations

from types import SimpleNamespace

from zmq_chat.client import paint, view
from zmq_chat.protocol import messages as m


def test_group_message_names_every_recipient():
    msg = SimpleNamespace(id=1, sender="alice", to="bob", ts=0.0, text="team meeting", cid="", group=["bob", "carol"])
    assert view.private_line(msg).endswith("alice to bob, carol: team meeting")
    assert view.message_kind(msg) == "group"


def test_private_message_without_group_field():
    msg = m.PrivateMessage(id=1, sender="alice", to="bob", ts=0.0, text="hi")
    assert view.private_line(msg).endswith("] alice: hi")
    assert view.message_kind(msg) == "private"


def test_me_action_and_control_characters():
    event = m.Event(seq=1, ts=0.0, kind="bcast", user="alice", text="/me waves \x1b[31m")
    assert view.event_line(event).endswith("] * alice waves \ufffd[31m")
    assert view.sent_line(0.0, None, "/me waves").endswith("] * you waves")
    assert view.sent_line(0.0, ["bob"], "/me waves").endswith("] you to bob: /me waves")


def test_paint_colours_each_kind_or_nothing():
    try:
        paint.configure(True)
        codes = {kind: paint.paint(kind, "x") for kind in paint.KINDS if kind != "info"}
        assert len(set(codes.values())) == len(codes) and all("\x1b[" in c for c in codes.values())
        paint.configure(False)
        assert paint.paint("error", "x") == "x"
    finally:
        paint.configure(False)


def test_no_color_wins(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint.wanted() is False


def test_the_who_line_marks_yourself_and_the_busy():
    assert view.users_line(["alice", "bob", "carol"], "alice", ["bob"]) == "alice*, bob (busy), carol"
    assert view.users_line([], "alice") == "(nobody)"
