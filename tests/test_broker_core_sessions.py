"""Sessions through the core in-process (tests/core_harness.py, fake clock, MemoryStore): the mailbox
window and its refill on ack, dropped pushes (EAGAIN), unreachable peers, replaced sessions, busy
and idle's `held`, acks of foreign ids, last-seen and `last`, shutdown with hashing in flight
(docs/protocol.md 7.2, 9.3, 9.5-9.7)."""

from __future__ import annotations

import json

import pytest

from tests.core_harness import PASSWORD, CoreRig

pytestmark = pytest.mark.timeout(30)


RIG_CONFIG = {"mail_window": 3, "hash_workers": 2}  # two hashing jobs in flight at once (default: cores - 1)


def _mail(rig: CoreRig, sender, to: str, n: int, tag: str = "m") -> None:
    for i in range(n):
        assert rig.call(sender, "send", id=f"{tag}{i}", to=[to], text=f"{tag} {i}")["status"] == "ok"


def _ids(rig: CoreRig, client) -> list[int]:
    return [p.id for p in rig.pushes(client)]


# -- the mailbox window (9.3) --------------------------------------------------------------------
def test_the_window_holds_mail_beyond_it_until_acks_refill_it(rig):
    a, b = rig.user("alice"), rig.user("bob")
    _mail(rig, a, "bob", 5)
    assert _ids(rig, b) == [1, 2, 3]  # the window is full: 4 and 5 wait in the mailbox
    assert rig.call(b, "ack", ids=[1])["removed"] == 1
    assert _ids(rig, b) == [1, 2, 3, 4]
    rig.call(b, "ack", ids=[2, 3])
    assert _ids(rig, b) == [1, 2, 3, 4, 5]
    rig.call(b, "ack", ids=[4, 5])
    assert _ids(rig, b) == [1, 2, 3, 4, 5] and rig.store.mail_after("bob", 0, 10) == []


def test_a_login_pushes_the_stored_mailbox_one_window_at_a_time(rig):
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    _mail(rig, a, "bob", 5)
    b = rig.connect()
    assert rig.call(b, "login", user="bob", password=PASSWORD)["status"] == "ok"
    assert _ids(rig, b) == [1, 2, 3]
    rig.call(b, "ack", ids=[1, 2, 3])
    assert _ids(rig, b) == [1, 2, 3, 4, 5]


def test_unacked_mail_is_pushed_again_at_the_next_login(rig):
    a, b = rig.user("alice"), rig.user("bob")
    _mail(rig, a, "bob", 2)
    rig.call(b, "ack", ids=[1])
    rig.call(b, "logout")
    again = rig.connect()
    rig.call(again, "login", user="bob", password=PASSWORD)
    assert _ids(rig, again) == [2]


# -- dropped pushes and unreachable peers (9.3, 9.5) ---------------------------------------------
def test_a_dropped_push_stays_in_the_mailbox_and_goes_first_after_an_ack(rig):
    a, b = rig.user("alice"), rig.user("bob")
    _mail(rig, a, "bob", 4)
    assert _ids(rig, b) == [1, 2, 3]
    rig.core.on_push_dropped(b[0], 2)  # the loop got EAGAIN for this push
    rig.core.on_push_dropped(b[0], 99)  # not in flight: ignored
    rig.core.on_push_dropped(b"nobody", 1)  # no session: ignored
    assert [x.id for x in rig.store.mail_after("bob", 0, 10)] == [1, 2, 3, 4]
    rig.call(b, "ack", ids=[1])
    assert _ids(rig, b) == [1, 2, 3, 2, 4]  # the dropped one first, then the mailbox beyond the cursor


def test_an_unreachable_peer_loses_its_session_with_presence_lost(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.clock.advance(10)
    rig.core.on_unreachable(b[0])
    rig.take()
    assert rig.events("presence")[-1].user == "bob" and rig.events("presence")[-1].event == "lost"
    assert rig.ends(b) == []  # nothing is pushed to a peer that is gone
    assert rig.call(b, "who")["code"] == "E_NOT_LOGGED_IN"
    assert rig.call(a, "who")["users"] == ["alice"]
    assert rig.store.users["bob"].last_seen == rig.clock.now
    rig.core.on_unreachable(b[0])  # a second failure is a no-op
    assert [e.event for e in rig.events("presence")].count("lost") == 1


def test_mail_to_a_lost_session_waits_for_its_next_login(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.core.on_unreachable(b[0])
    _mail(rig, a, "bob", 1)
    assert _ids(rig, b) == []
    again = rig.connect()
    rig.call(again, "login", user="bob", password=PASSWORD)
    assert _ids(rig, again) == [1]


# -- replaced sessions (7.2) ---------------------------------------------------------------------
def test_a_second_login_of_the_same_user_replaces_the_first(rig):
    a = rig.user("alice")
    b = rig.user("bob")
    _mail(rig, b, "alice", 1)
    presence = len(rig.events("presence"))
    second = rig.connect("10.0.0.2")
    reply = rig.call(second, "login", user="alice", password=PASSWORD)
    assert reply["status"] == "ok" and reply["dup"] is False
    [end] = rig.ends(a)
    assert end.reason == "replaced" and end.message
    assert len(rig.events("presence")) == presence  # a replacement publishes no presence
    assert rig.call(a, "who")["code"] == "E_NOT_LOGGED_IN"
    assert rig.call(second, "status")["user"] == "alice"
    assert _ids(rig, second) == [1]  # the unacked message goes to the new session
    assert rig.call(b, "who")["users"] == ["alice", "bob"]


def test_a_client_key_logging_in_as_another_user_ends_its_older_session(rig):
    a = rig.user("alice")
    rig.call(a, "register", user="bob", password=PASSWORD)
    other = (b"another-rid", rig.connect()[1], a[2])  # the same key on another connection
    assert rig.call(other, "login", user="bob", password=PASSWORD)["status"] == "ok"
    assert [e.reason for e in rig.ends(a)] == ["replaced"]
    assert [(e.user, e.event) for e in rig.events("presence")][-2:] == [("alice", "logout"), ("bob", "login")]
    assert rig.call(other, "who")["users"] == ["bob"]


# -- busy, idle and acks (9.6, 9.2) ----------------------------------------------------------------
def test_idle_counts_the_held_messages_beyond_those_in_flight(rig):
    a, b = rig.user("alice"), rig.user("bob")
    _mail(rig, a, "bob", 1, "before")
    assert _ids(rig, b) == [1]  # in flight, unacked
    rig.call(b, "busy", text="away")
    _mail(rig, a, "bob", 4, "held")
    assert _ids(rig, b) == [1]  # busy: held in the mailbox
    assert rig.call(b, "idle")["held"] == 4
    assert _ids(rig, b) == [1, 2, 3]  # the window of 3 refills after the reply
    assert rig.call(b, "idle")["held"] == 2
    rig.call(b, "ack", ids=[1, 2, 3])
    assert _ids(rig, b) == [1, 2, 3, 4, 5]
    assert rig.call(b, "idle")["held"] == 0


def test_an_ack_removes_only_the_callers_own_mail(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(a, "send", id="s1", to=["bob"], text="for bob")  # mail id 1
    rig.call(b, "send", id="s2", to=["alice"], text="for alice")  # mail id 2
    assert rig.call(b, "ack", ids=[2, 999])["removed"] == 0  # alice's and an unknown id
    assert [x.id for x in rig.store.mail_after("alice", 0, 10)] == [2]
    assert rig.call(b, "ack", ids=[1, 2, 999])["removed"] == 1
    assert rig.store.mail_after("bob", 0, 10) == [] and rig.core.mail_counts.get("alice") == 1
    assert rig.call(b, "ack", ids=[1])["removed"] == 0  # already removed
    assert rig.call(a, "ack", ids=[2])["removed"] == 1


def test_an_ack_of_mail_pushed_in_an_earlier_session_removes_it(rig):
    a, b = rig.user("alice"), rig.user("bob")
    _mail(rig, a, "bob", 2)
    rig.call(b, "logout")
    again = rig.connect()
    rig.call(again, "login", user="bob", password=PASSWORD)
    assert rig.call(again, "ack", ids=[1, 2])["removed"] == 2
    assert rig.core.mail_counts.get("bob", 0) == 0


# -- last-seen and `last` (6.1, 9.6) ---------------------------------------------------------------
def test_the_end_of_a_session_is_recorded_and_used_by_last(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.clock.advance(30)
    seq = rig.core.seq
    rig.call(a, "logout")
    assert rig.store.users["alice"].last_seen == rig.clock.now
    assert (rig.store.users["alice"].last_seen_hidden, rig.store.users["alice"].last_seq) == (False, seq)
    assert rig.call(b, "last", minutes=1)["users"] == ["alice", "bob"]
    rig.clock.advance(61)
    assert rig.call(b, "last", minutes=1)["users"] == ["bob"]
    assert rig.call(b, "last", minutes=2)["users"] == ["alice", "bob"]


def test_a_session_that_ended_hidden_is_not_in_last(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(a, "hide")
    rig.call(a, "logout")
    assert rig.store.users["alice"].last_seen_hidden is True
    assert rig.call(b, "last", minutes=60)["users"] == ["bob"]


def test_a_session_that_ended_busy_catches_up_from_where_busy_began(rig):
    a, b = rig.user("alice"), rig.user("bob")
    rig.call(a, "busy")
    busy_seq = rig.core.seq
    rig.call(b, "broadcast", id="b1", text="while alice is busy")
    rig.call(a, "logout")
    assert rig.store.users["alice"].last_seq == busy_seq
    again = rig.connect()
    reply = rig.call(again, "login", user="alice", password=PASSWORD)
    assert reply["since"] == busy_seq < reply["seq"]


# -- shutdown (9.5) --------------------------------------------------------------------------------
def test_shutdown_ends_every_session_without_presence(rig):
    a, b = rig.user("alice"), rig.user("bob")
    presence = len(rig.events("presence"))
    rig.clock.advance(5)
    rig.core.shutdown()
    rig.take()
    assert [e.reason for e in rig.ends(a)] == [e.reason for e in rig.ends(b)] == ["shutdown"]
    assert len(rig.events("presence")) == presence
    assert rig.store.users["alice"].last_seen == rig.store.users["bob"].last_seen == rig.clock.now


def test_hashing_in_flight_at_shutdown_is_answered_shutting_down_and_stores_nothing(rig):
    rig.call(rig.connect(), "register", user="alice", password=PASSWORD)
    login, register = rig.connect(), rig.connect()
    rig.send(login, "login", user="alice", password=PASSWORD)
    rig.send(register, "register", user="bob", password=PASSWORD)
    jobs = rig.core.drain().jobs
    assert sorted(j.kind for j in jobs) == ["hash", "verify"]
    rig.core.shutdown()
    commits = rig.store.commits
    rig.run_jobs(jobs)
    assert rig.replies(login) == [] and rig.replies(register) == []  # (run_jobs took them)
    codes = {json.loads(body)["req"]: json.loads(body)["code"] for rid, kind, body, _ in rig.out.router
             if rid in (login[0], register[0]) and kind == b"reply"}
    assert sorted(codes.values()) == ["E_SHUTTING_DOWN", "E_SHUTTING_DOWN"]
    assert rig.store.commits == commits and "bob" not in rig.store.users and "bob" not in rig.core.users
    assert rig.core.sessions == {} and rig.store.users["alice"].last_seen is None
