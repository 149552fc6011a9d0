"""Unit tests of the broker's guards in-process (fake clock): token buckets, the fair argon2id
queue, the account throttle, per-IP limits, flood control and the mailbox quota (docs/security.md)."""

from __future__ import annotations

import pytest

from zmq_chat.broker.accounts import AuthJob
from zmq_chat.broker.authqueue import AuthQueue
from zmq_chat.broker.lockout import AccountThrottle
from zmq_chat.broker.ratelimit import KeyedBuckets, TokenBucket
from tests.core_harness import PASSWORD, CoreRig

pytestmark = pytest.mark.timeout(30)


def test_token_bucket_refills_at_its_rate_and_says_how_long_to_wait():
    b = TokenBucket(rate=2.0, burst=3)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.5) == 0.0 and b.take(0.5) == pytest.approx(0.5)
    assert b.full(10.0)
    keyed = KeyedBuckets(rate=1.0, burst=1, max_keys=2)
    assert keyed.take("a", 0.0) == 0.0 and keyed.take("a", 0.0) == pytest.approx(1.0)
    keyed.take("b", 0.0), keyed.take("c", 0.0)
    assert len(keyed) == 2  # the oldest key was forgotten
    keyed.purge(5.0)
    assert len(keyed) == 0


def _job(ip: str, user: str = "u", kind: str = "verify", fd: int = -1) -> AuthJob:
    return AuthJob(kind, f"{ip}/{user}".encode(), 1, user, "pw", "h", ip, "", fd)


def test_auth_queue_serves_addresses_round_robin_clean_first():
    q = AuthQueue(per_ip=2)
    for ip in ("a", "a", "b", "b"):
        assert q.add(_job(ip))
    assert not q.add(_job("a"))  # per-IP cap
    order = [q.pick(lambda j: True).ip for _ in range(4)]
    assert order == ["a", "b", "a", "b"]
    for i in range(100):
        q.add(_job(f"bad{i}"), rank=2)
    q.add(_job("fresh"), rank=1)
    first = q.pick(lambda j: True)
    assert first.ip == "fresh"  # a clean address does not wait for the 100 dirty ones
    assert len(q) == 100
    gone = q.drop(lambda j: j.ip != "bad7")
    assert [j.ip for j in gone] == ["bad7"] and len(q) == 99


def test_account_throttle_after_failures_from_anywhere():
    t = AccountThrottle(max_attempts=3, interval=1.0, forget_after=60.0)
    for _ in range(3):
        assert t.ready_at("x", 0.0) == 0.0
        t.failed("x", 0.0)
    t.started("x", 0.0)
    assert t.ready_at("x", 0.5) == 1.0 and t.ready_at("y", 0.5) == 0.5
    t.purge(61.0)
    assert not t.throttled("x", 61.0)


def test_a_fresh_address_logs_in_before_a_storm_of_wrong_passwords(tmp_path):
    rig = CoreRig(tmp_path, hash_workers=2, max_failed_logins_per_ip=1000, max_login_attempts=1000)
    owner = rig.connect("10.9.9.9")
    rig.call(owner, "register", user="victim", password=PASSWORD)
    rig.call(owner, "register", user="target", password=PASSWORD)
    attackers = [rig.connect(f"10.1.0.{i}") for i in range(100)]
    for c in attackers:  # one wrong guess each: every address now has a failure on record
        rig.call(c, "login", user="target", password="wrong guess")
    for c in attackers:  # the storm: all queued at once
        rig.send(c, "login", user="target", password="wrong again")
    fresh = rig.connect("10.2.0.1")
    rig.send(fresh, "login", user="victim", password=PASSWORD)
    out = rig.core.drain()
    assert [j.ip for j in out.jobs] == ["10.2.0.1", "10.1.0.0"]  # the clean address, then the storm in order


def test_an_account_under_attack_verifies_once_per_interval_and_the_owner_gets_in(tmp_path):
    rig = CoreRig(tmp_path, max_login_attempts=3, account_verify_interval=1.0, max_failed_logins_per_ip=1000)
    owner = rig.connect("10.9.9.9")
    rig.call(owner, "register", user="victim", password=PASSWORD)
    rig.call(owner, "login", user="victim", password=PASSWORD)  # the owner's usual address
    rig.call(owner, "logout")
    guessers = [rig.connect(f"10.1.0.{i}") for i in range(30)]
    for c in guessers[:3]:
        assert rig.call(c, "login", user="victim", password="guess")["code"] == "E_BAD_CREDENTIALS"
    for c in guessers[3:]:
        rig.send(c, "login", user="victim", password="guess")
    rig.send(owner, "login", user="victim", password=PASSWORD)
    started = []
    for _ in range(3):  # three seconds of the attack
        out = rig.core.drain()
        started.append([j.ip for j in out.jobs])
        rig.run_jobs(out.jobs)
        rig.clock.advance(1.0)
    # one verification a second, the owner's clean address first
    assert started == [["10.9.9.9"], ["10.1.0.3"], ["10.1.0.4"]]
    assert [(s.user, s.ip) for s in rig.core.sessions.values()] == [("victim", "10.9.9.9")]


def test_jobs_of_a_closed_connection_are_never_run(tmp_path):
    rig = CoreRig(tmp_path, hash_workers=1)
    a, b = rig.connect(), rig.connect()
    rig.send(a, "register", user="first", password=PASSWORD)
    rig.send(b, "register", user="second", password=PASSWORD)
    out = rig.core.drain()
    assert [j.user for j in out.jobs] == ["first"]  # one thread: the second waits
    rig.core.on_disconnected(b[1], "router")
    rig.run_jobs(out.jobs)
    assert rig.core.drain().jobs == [] and "second" not in rig.core.pending_names


def test_failed_logins_per_ip_block_the_address_unknown_names_included(tmp_path):
    rig = CoreRig(tmp_path, max_failed_logins_per_ip=3, max_login_attempts=100)
    home, away = rig.connect("10.0.0.1"), rig.connect("10.0.0.2")
    rig.call(home, "register", user="alice", password=PASSWORD)
    assert rig.call(away, "login", user="nobody1", password="x" * 8)["code"] == "E_UNKNOWN_USER"
    assert rig.call(away, "login", user="nobody2", password="x" * 8)["code"] == "E_UNKNOWN_USER"
    assert rig.call(away, "login", user="alice", password="wrong pw")["code"] == "E_BAD_CREDENTIALS"
    blocked = rig.call(away, "login", user="alice", password=PASSWORD)
    assert (blocked["code"], blocked["retry_after"]) == ("E_BLOCKED", 200.0)  # a token per 600 s / 3
    assert rig.call(home, "login", user="alice", password=PASSWORD)["status"] == "ok"
    rig.clock.advance(blocked["retry_after"])
    other = rig.connect("10.0.0.2")
    assert rig.call(other, "login", user="nobody3", password="x" * 8)["code"] == "E_UNKNOWN_USER"


def test_registrations_per_ip_per_hour(tmp_path):
    rig = CoreRig(tmp_path, max_registrations_per_ip=2)
    c = rig.connect("10.0.0.1")
    assert rig.call(c, "register", user="one", password=PASSWORD)["status"] == "ok"
    assert rig.call(c, "register", user="two", password=PASSWORD)["status"] == "ok"
    third = rig.call(c, "register", user="three", password=PASSWORD)
    assert (third["code"], third["retry_after"]) == ("E_RATE_LIMITED", 1800.0)  # a token per 3600 s / 2
    assert rig.call(rig.connect("10.0.0.2"), "register", user="three", password=PASSWORD)["status"] == "ok"


def test_flood_control_answers_rate_limited_and_acks_are_free(tmp_path):
    rig = CoreRig(tmp_path, rate_limit=10.0, rate_burst=5)
    a, b = rig.user("alice"), rig.user("bob")
    rig.clock.advance(1.0)  # the login used some tokens
    codes = [rig.call(a, "who").get("code", "ok") for _ in range(12)]
    assert codes == ["ok"] * 5 + ["E_RATE_LIMITED"] * 7  # the burst, then nothing: the clock stands still
    limited = rig.call(a, "status")
    assert (limited["code"], limited["retry_after"]) == ("E_RATE_LIMITED", 0.1)  # one token at 10 per second
    assert rig.call(a, "ack", ids=[1])["status"] == "ok"  # acks are not counted
    assert rig.call(b, "who")["status"] == "ok"  # per connection: bob is not affected
    rig.clock.advance(limited["retry_after"] + 0.001)
    assert rig.call(a, "who")["status"] == "ok"


def test_mailbox_quota_refuses_with_mailbox_full_and_frees_on_ack(tmp_path):
    rig = CoreRig(tmp_path, mailbox_quota=2)
    a = rig.user("alice")
    rig.call(a, "register", user="away", password=PASSWORD)
    rig.call(a, "register", user="here", password=PASSWORD)
    assert rig.call(a, "send", id="1", to=["away"], text="one")["status"] == "ok"
    assert rig.call(a, "send", id="2", to=["away"], text="two")["status"] == "ok"
    full = rig.call(a, "send", id="3", to=["away"], text="three")
    assert full["code"] == "E_MAILBOX_FULL" and full["full"] == ["away"] and full["ids"] == {}
    partial = rig.call(a, "send", id="4", to=["away", "here"], text="four")
    assert partial["code"] == "E_MAILBOX_FULL" and list(partial["ids"]) == ["here"] and partial["full"] == ["away"]
    assert rig.call(a, "send", id="4", to=["away", "here"], text="four")["dup"] is True
    assert len(rig.store.mail_after("away", 0, 10)) == 2
    away = rig.connect()
    assert rig.call(away, "login", user="away", password=PASSWORD)["status"] == "ok"
    rig.call(away, "ack", ids=[p.id for p in rig.pushes(away)])
    assert rig.call(a, "send", id="5", to=["away"], text="five")["status"] == "ok"


def test_a_flood_cut_keeps_the_address_out_for_a_while(tmp_path):
    from zmq_chat.broker.zap import DOMAIN_ROUTER

    rig = CoreRig(tmp_path, rate_limit=1.0, rate_burst=5, conn_rate=10.0)
    a = rig.user("alice", ip="10.0.0.5")
    for _ in range(20):
        rig.send(a, "who")
    rig.clock.advance(0.1)
    assert a[1] in [c.fd for c in rig.take().cuts]  # 5 refused in a row: cut
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.5", "CURVE", "k" * 40)[0] == 400
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.6", "CURVE", "k" * 40)[0] == 200  # others are not
    rig.clock.advance(8.1)  # the debt of a full burst (40) at 10 per second is paid
    assert rig.core.authorize(DOMAIN_ROUTER, "10.0.0.5", "CURVE", "k" * 40)[0] == 200
