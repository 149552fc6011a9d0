"""Every error code of protocol/errors.py that the broker core produces, each provoked once in-process
(tests/core_harness.py) with its code, the `req` echoed and the extra fields of docs/protocol.md 6.2;
and a refused request changes nothing. The table must name every ErrorCode, so a new code needs a
test here."""

from __future__ import annotations

from typing import Callable

import pytest

from zmq_chat.protocol.errors import ErrorCode
from tests.core_harness import PASSWORD, CoreRig

pytestmark = pytest.mark.timeout(30)

Provoke = Callable[[CoreRig], dict]
"""Sets up a rig and returns the error reply (a dict) of the request that provokes the code."""


def _frames(rig: CoreRig) -> dict:
    [reply] = rig.raw(rig.connect(), [b"", b"ping", b'{"req": 5}'])  # a REQ socket's empty delimiter
    assert reply["req"] == 5
    [one] = rig.raw(rig.connect(), [b"ping"])
    assert one["code"] == "E_FRAMES"
    return reply


def _unknown_type(rig: CoreRig) -> dict:
    [reply] = rig.raw(rig.connect(), [b"dance", b'{"req": 6}'])
    assert reply["req"] == 6
    return reply


def _bad_json(rig: CoreRig) -> dict:
    [reply] = rig.raw(rig.connect(), [b"ping", b'{"req": 7'])
    assert reply["req"] is None
    return reply


def _bad_field(rig: CoreRig) -> dict:
    a = rig.user("alice")
    [reply] = rig.raw(a, [b"last", b'{"req": 8, "minutes": 0}'])
    assert reply["req"] == 8
    return reply


def _version(rig: CoreRig) -> dict:
    c = rig.connect()
    assert rig.call(c, "register", user="alice", password=PASSWORD, version=2)["code"] == "E_VERSION"
    assert "alice" not in rig.core.users
    return rig.call(c, "hello", version=2)


def _not_logged_in(rig: CoreRig) -> dict:
    return rig.call(rig.connect(), "who")


def _already_logged_in(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    reply = rig.call(a, "login", user="bob", password=PASSWORD)
    assert rig.call(a, "status")["user"] == "alice"
    return reply


def _bad_username(rig: CoreRig) -> dict:
    c = rig.connect()
    assert rig.call(c, "register", user="all", password=PASSWORD)["code"] == "E_BAD_USERNAME"  # reserved
    return rig.call(c, "register", user="no spaces", password=PASSWORD)


def _bad_password(rig: CoreRig) -> dict:
    reply = rig.call(rig.connect(), "register", user="alice", password="short")
    assert rig.core.drain().jobs == []  # refused before any hashing
    return reply


def _user_exists(rig: CoreRig) -> dict:
    rig.call(rig.connect(), "register", user="alice", password=PASSWORD)
    return rig.call(rig.connect(), "register", user="alice", password="another one")  # another client key


def _unknown_user(rig: CoreRig) -> dict:
    reply = rig.call(rig.connect(), "login", user="nobody", password=PASSWORD)
    assert rig.core.drain().jobs == []  # no hashing for a name without an account
    return reply


def _bad_credentials(rig: CoreRig) -> dict:
    rig.call(rig.connect(), "register", user="alice", password=PASSWORD)
    c = rig.connect()
    reply = rig.call(c, "login", user="alice", password="wrong password")
    assert reply["attempts_left"] == 2 and rig.core.sessions == {}
    return reply


def _blocked(rig: CoreRig) -> dict:
    rig.call(rig.connect(), "register", user="alice", password=PASSWORD)
    c = rig.connect("10.0.0.2")
    for left in (2, 1):
        assert rig.call(c, "login", user="alice", password="wrong password")["attempts_left"] == left
    reply = rig.call(c, "login", user="alice", password="wrong password")  # the one reaching the limit
    assert reply["retry_after"] == 60.0
    again = rig.call(c, "login", user="alice", password=PASSWORD)  # even the right one, no hashing
    assert again["code"] == "E_BLOCKED" and 0 < again["retry_after"] <= 60
    return reply


def _server_full(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    reply = rig.call(rig.connect(), "login", user="bob", password=PASSWORD)
    assert rig.call(rig.connect(), "login", user="alice", password=PASSWORD)["status"] == "ok"  # a replacement
    return reply


def _overloaded(rig: CoreRig) -> dict:
    rig.call(rig.connect(), "register", user="alice", password=PASSWORD)
    c = rig.connect()
    rig.send(c, "login", user="alice", password=PASSWORD)
    jobs = rig.core.drain().jobs  # still hashing
    rig.send(c, "login", user="alice", password=PASSWORD)
    [reply] = rig.replies(c)
    assert reply["retry_after"] > 0
    rig.run_jobs(jobs)
    return reply


def _message_empty(rig: CoreRig) -> dict:
    a = rig.user("alice")
    assert rig.call(a, "send", id="s1", to=["alice"], text="")["code"] == "E_MESSAGE_EMPTY"
    return rig.call(a, "broadcast", id="b1", text=" \t\n")


def _message_too_long(rig: CoreRig) -> dict:
    a = rig.user("alice")
    assert rig.call(a, "busy", text="x" * 1001)["code"] == "E_MESSAGE_TOO_LONG"
    assert rig.call(a, "send", id="s1", to=["alice"], text="x" * 1001)["code"] == "E_MESSAGE_TOO_LONG"
    return rig.call(a, "broadcast", id="b1", text="x" * 1001)


def _duplicate_id(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.call(a, "broadcast", id="b1", text="first")
    reply = rig.call(a, "broadcast", id="b1", text="second")
    assert [e.text for e in rig.events("bcast")] == ["first"]
    return reply


def _rate_limited(rig: CoreRig) -> dict:
    c = rig.connect()
    rig.call(c, "ping"), rig.call(c, "ping")
    reply = rig.call(c, "ping")
    assert reply["retry_after"] == pytest.approx(1.0)
    return reply


def _mailbox_full(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    rig.call(a, "send", id="s1", to=["bob"], text="one")
    reply = rig.call(a, "send", id="s2", to=["bob"], text="two")
    assert reply["full"] == ["bob"] and reply["unknown"] == [] and reply["ids"] == {}
    assert len(rig.store.mail_after("bob", 0, 10)) == 1
    return reply


def _shutting_down(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.core.shutdown()
    assert rig.call(rig.connect(), "ping")["code"] == "E_SHUTTING_DOWN"
    return rig.call(a, "register", user="bob", password=PASSWORD)


def _internal(rig: CoreRig) -> dict:
    a = rig.user("alice")
    rig.core.seq = 2**53
    reply = rig.call(a, "broadcast", id="b1", text="late")
    assert rig.core.sends.get("alice", "b1") is None  # undone: the id may be retried
    return reply


CASES: dict[ErrorCode, tuple[Provoke, dict]] = {
    ErrorCode.FRAMES: (_frames, {}),
    ErrorCode.UNKNOWN_TYPE: (_unknown_type, {}),
    ErrorCode.BAD_JSON: (_bad_json, {}),
    ErrorCode.BAD_FIELD: (_bad_field, {}),
    ErrorCode.VERSION: (_version, {}),
    ErrorCode.NOT_LOGGED_IN: (_not_logged_in, {}),
    ErrorCode.ALREADY_LOGGED_IN: (_already_logged_in, {}),
    ErrorCode.BAD_USERNAME: (_bad_username, {}),
    ErrorCode.BAD_PASSWORD: (_bad_password, {}),
    ErrorCode.USER_EXISTS: (_user_exists, {}),
    ErrorCode.UNKNOWN_USER: (_unknown_user, {}),
    ErrorCode.BAD_CREDENTIALS: (_bad_credentials, {}),
    ErrorCode.BLOCKED: (_blocked, {}),
    ErrorCode.SERVER_FULL: (_server_full, {"max_clients": 1}),
    ErrorCode.OVERLOADED: (_overloaded, {}),
    ErrorCode.MESSAGE_EMPTY: (_message_empty, {}),
    ErrorCode.MESSAGE_TOO_LONG: (_message_too_long, {}),
    ErrorCode.DUPLICATE_ID: (_duplicate_id, {}),
    ErrorCode.RATE_LIMITED: (_rate_limited, {"rate_limit": 1.0, "rate_burst": 2}),
    ErrorCode.MAILBOX_FULL: (_mailbox_full, {"mailbox_quota": 1}),
    ErrorCode.SHUTTING_DOWN: (_shutting_down, {}),
    ErrorCode.INTERNAL: (_internal, {}),
}

EXTRA_FIELDS = {
    ErrorCode.BAD_CREDENTIALS: {"attempts_left"},
    ErrorCode.BLOCKED: {"retry_after"},
    ErrorCode.OVERLOADED: {"retry_after"},
    ErrorCode.RATE_LIMITED: {"retry_after"},
    ErrorCode.MAILBOX_FULL: {"unknown", "full", "ids", "busy", "dup"},  # nobody got it: no ts
}
"""Fields of an error reply besides req, status, code and message (docs 6.2); none for the rest."""


def test_the_table_names_every_error_code():
    assert set(CASES) == set(ErrorCode)


@pytest.mark.parametrize("code", list(CASES), ids=[c.value for c in CASES])
def test_the_core_answers_each_error_code(tmp_path, code):
    provoke, config = CASES[code]
    rig = CoreRig(tmp_path, **config)
    reply = provoke(rig)
    assert reply["status"] == "error" and reply["code"] == code.value, reply
    assert isinstance(reply["message"], str) and reply["message"]
    assert set(reply) == {"req", "status", "code", "message", *EXTRA_FIELDS.get(code, ())}
    rig.store.close()


def test_a_send_to_unknown_names_only_stores_nothing_and_its_retry_is_not_a_dup(tmp_path):
    rig = CoreRig(tmp_path)
    a = rig.user("alice")
    first = rig.call(a, "send", id="s1", to=["ghost", "nobody"], text="hi")
    assert first["code"] == "E_UNKNOWN_USER" and first["unknown"] == ["ghost", "nobody"]
    assert (first["full"], first["ids"], first["busy"], first["dup"]) == ([], {}, [], False)
    assert rig.core.sends.get("alice", "s1") is None and rig.store.mail == {}
    assert rig.call(a, "send", id="s1", to=["ghost", "nobody"], text="hi")["dup"] is False


def test_a_partial_send_names_the_unknown_and_is_stored_for_the_others(tmp_path):
    rig = CoreRig(tmp_path)
    a, b = rig.user("alice"), rig.user("bob")
    first = rig.call(a, "send", id="s1", to=["bob", "ghost"], text="hi")
    assert first["code"] == "E_UNKNOWN_USER" and first["unknown"] == ["ghost"] and first["ids"] == {"bob": 1}
    assert set(first) == {"req", "status", "code", "message", "unknown", "full", "ids", "ts", "busy", "dup"}
    assert [p.id for p in rig.pushes(b)] == [1]
    retry = rig.call(a, "send", id="s1", to=["bob", "ghost"], text="hi")
    assert retry["code"] == "E_UNKNOWN_USER" and retry["dup"] is True and retry["ids"] == {"bob": 1}
    assert [p.id for p in rig.pushes(b)] == [1] and len(rig.store.mail) == 1
