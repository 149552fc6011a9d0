"""Unit tests of the per-(account, IP) lockout (broker.lockout.LoginGuard, docs/security.md "Guessing
passwords"), driven only by a fake clock: first the pure class, then through the broker core
(tests/core_harness.py) as a client sees it. No sockets, no sleeps."""

from __future__ import annotations

import json

import pytest

from zmq_chat.broker.lockout import LoginGuard
from zmq_chat.protocol import wire
from tests.core_harness import PASSWORD, CoreRig, FakeClock

pytestmark = pytest.mark.timeout(30)

BLOCK = 60.0  # block_seconds, as the broker's default (issue #2: 3 tries, then 60 s)


def test_blocks_the_pair_after_max_attempts_wrong_passwords():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=3, block_seconds=BLOCK)
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == 0.0
    lefts = []
    for _ in range(3):
        lefts.append(guard.fail("alice", "10.0.0.1", clock()))
        clock.advance(1.0)
    assert lefts == [2, 1, 0]  # 0: the third wrong password blocks
    blocked_at = clock() - 1.0
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == blocked_at + BLOCK - clock() == 59.0
    assert guard.failures("alice", "10.0.0.1") == 1  # a block counts as a failure on record


def test_the_block_ends_exactly_block_seconds_after_it_began():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=2, block_seconds=BLOCK)
    guard.fail("alice", "10.0.0.1", clock())
    assert guard.fail("alice", "10.0.0.1", clock()) == 0
    start = clock()
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == BLOCK
    clock.advance(BLOCK - 0.5)
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == 0.5
    clock.now = start + BLOCK  # exactly block_seconds later: free
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == 0.0
    # After the block the count starts again: one wrong password does not block at once.
    assert guard.fail("alice", "10.0.0.1", clock()) == 1
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == 0.0


def test_the_block_is_per_account_and_address():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=3, block_seconds=BLOCK)
    for _ in range(3):
        guard.fail("alice", "10.0.0.1", clock())
    assert guard.blocked_for("alice", "10.0.0.1", clock()) == BLOCK
    assert guard.blocked_for("alice", "10.0.0.2", clock()) == 0.0  # same account, other address
    assert guard.blocked_for("bob", "10.0.0.1", clock()) == 0.0  # same address, other account
    # Failures of different pairs do not add up.
    assert [guard.fail("alice", "10.0.0.2", clock()), guard.fail("bob", "10.0.0.1", clock())] == [2, 2]
    pairs = (("alice", "10.0.0.2"), ("bob", "10.0.0.1"), ("bob", "10.0.0.2"))
    assert [guard.failures(name, ip) for name, ip in pairs] == [1, 1, 0]


def test_a_correct_password_forgets_the_failures_of_its_pair_only():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=3, block_seconds=BLOCK)
    for ip in ("10.0.0.1", "10.0.0.2"):
        guard.fail("alice", ip, clock())
        guard.fail("alice", ip, clock())
    guard.succeed("alice", "10.0.0.1")
    assert (guard.failures("alice", "10.0.0.1"), guard.failures("alice", "10.0.0.2")) == (0, 2)
    assert guard.fail("alice", "10.0.0.1", clock()) == 2  # counted from zero again
    assert guard.fail("alice", "10.0.0.2", clock()) == 0  # the third on this address: blocked


def test_purge_forgets_pairs_silent_for_block_seconds_but_not_blocked_ones():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=2, block_seconds=BLOCK)
    guard.fail("quiet", "10.0.0.1", clock())  # one failure, then silence
    clock.advance(10.0)
    guard.fail("blocked", "10.0.0.1", clock())
    guard.fail("blocked", "10.0.0.1", clock())  # blocked until start + 70
    clock.advance(BLOCK - 10.0)  # quiet's last failure was exactly BLOCK seconds ago
    guard.purge(clock())
    assert (guard.failures("quiet", "10.0.0.1"), guard.failures("blocked", "10.0.0.1")) == (0, 1)
    assert guard.blocked_for("blocked", "10.0.0.1", clock()) == 10.0
    clock.advance(10.0)
    guard.purge(clock())
    assert guard.failures("blocked", "10.0.0.1") == 0


def test_at_most_max_entries_pairs_are_remembered_least_recently_failed_first():
    clock = FakeClock()
    guard = LoginGuard(max_attempts=3, block_seconds=BLOCK, max_entries=2)
    guard.fail("a", "ip", clock())
    guard.fail("b", "ip", clock())
    guard.fail("a", "ip", clock())  # "a" failed last: "b" is now the oldest
    guard.fail("c", "ip", clock())
    assert [guard.failures(u, "ip") for u in ("a", "b", "c")] == [2, 0, 1]


def test_max_attempts_below_one_means_one():
    guard = LoginGuard(max_attempts=0, block_seconds=BLOCK)
    assert guard.max_attempts == 1
    assert guard.fail("alice", "10.0.0.1", 0.0) == 0
    assert guard.blocked_for("alice", "10.0.0.1", 0.0) == BLOCK


# -- through the broker core ---------------------------------------------------------------------------


def _reply_without_hashing(rig: CoreRig, client, **fields) -> dict:
    """Send a login and return its reply, asserting that it was answered before any argon2id job."""
    req = rig.send(client, "login", **fields)
    out = rig.take()
    assert out.jobs == []  # refused before the hashing threads: a block costs no argon2id work
    replies = [json.loads(body) for rid, kind, body, _ in out.router if rid == client[0] and kind == wire.REPLY]
    assert [r["req"] for r in replies] == [req]
    return replies[0]


def test_the_core_blocks_account_and_address_for_block_seconds_without_hashing(tmp_path):
    rig = CoreRig(tmp_path, max_login_attempts=3, block_seconds=BLOCK)
    try:
        home = rig.connect("10.0.0.1")
        assert rig.call(home, "register", user="alice", password=PASSWORD)["status"] == "ok"
        assert rig.call(home, "register", user="bob", password=PASSWORD)["status"] == "ok"
        guesser = rig.connect("10.0.0.9")
        first = rig.call(guesser, "login", user="alice", password="wrong one")
        second = rig.call(guesser, "login", user="alice", password="wrong two")
        third = rig.call(guesser, "login", user="alice", password="wrong three")
        assert [(r["code"], r.get("attempts_left")) for r in (first, second)] == [
            ("E_BAD_CREDENTIALS", 2), ("E_BAD_CREDENTIALS", 1)]
        assert (third["code"], third["retry_after"]) == ("E_BLOCKED", BLOCK)  # the third wrong one is refused so
        blocked_at = rig.clock()
        # A new connection from that address is blocked even with the right password, unhashed.
        again = _reply_without_hashing(rig, rig.connect("10.0.0.9"), user="alice", password=PASSWORD)
        assert (again["status"], again["code"], again["retry_after"]) == ("error", "E_BLOCKED", BLOCK)
        # Another account from the same address, and the same account from another, are not.
        assert rig.call(rig.connect("10.0.0.9"), "login", user="bob", password=PASSWORD)["status"] == "ok"
        rig.clock.advance(BLOCK - 0.5)
        late = _reply_without_hashing(rig, rig.connect("10.0.0.9"), user="alice", password=PASSWORD)
        assert (late["code"], late["retry_after"]) == ("E_BLOCKED", 0.5)
        rig.clock.now = blocked_at + BLOCK  # exactly block_seconds after the block: the right password works
        assert rig.call(rig.connect("10.0.0.9"), "login", user="alice", password=PASSWORD)["status"] == "ok"
    finally:
        rig.store.close()


def test_the_core_counts_wrong_passwords_per_address(tmp_path):
    rig = CoreRig(tmp_path, max_login_attempts=2, block_seconds=BLOCK)
    try:
        home = rig.connect("10.0.0.1")
        assert rig.call(home, "register", user="alice", password=PASSWORD)["status"] == "ok"
        codes = [rig.call(rig.connect(ip), "login", user="alice", password="wrong pw")["code"]
                 for ip in ("10.0.0.7", "10.0.0.8", "10.0.0.7")]
        assert codes == ["E_BAD_CREDENTIALS", "E_BAD_CREDENTIALS", "E_BLOCKED"]
        assert rig.core.guard.blocked_for("alice", "10.0.0.7", rig.clock()) == BLOCK
        assert rig.core.guard.blocked_for("alice", "10.0.0.8", rig.clock()) == 0.0
        # the account throttle (one verification a second) holds the next login for a second
        rig.clock.advance(1.0)
        assert rig.call(rig.connect("10.0.0.8"), "login", user="alice", password=PASSWORD)["status"] == "ok"
    finally:
        rig.store.close()
