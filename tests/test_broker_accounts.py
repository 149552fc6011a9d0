"""Integration: hello, registration, login, lockout, replacement, max clients (real broker)."""

from __future__ import annotations

import pytest

from tests.harness import PASSWORD, Broker, err, ok

pytestmark = pytest.mark.timeout(60)


def test_hello_checks_the_protocol_version(broker, peers):
    p = peers(broker)
    reply = ok(p.call("hello", client="test"))
    assert reply["version"] == 1 and reply["max_message_chars"] == 1000
    err(p.call("hello", version=99), "E_VERSION")
    err(p.call("login", version=2, user="nobody", password="x" * 8), "E_VERSION")


def test_register_rules(broker, peers, names):
    p = peers(broker)
    name = names()
    first = ok(p.register(name))
    assert first["user"] == name and first["dup"] is False
    assert ok(p.register(name))["dup"] is True  # a retry by the same client key (docs 9.2)
    err(peers(broker).register(name), "E_USER_EXISTS")  # anyone else
    err(p.register("ab"), "E_BAD_USERNAME")
    err(p.register("x" * 33), "E_BAD_USERNAME")
    err(p.register("bad-name"), "E_BAD_USERNAME")
    err(p.register("ALL"), "E_BAD_USERNAME")
    err(p.register(names(), "short"), "E_BAD_PASSWORD")
    err(p.register(names(), "x" * 1025), "E_BAD_PASSWORD")
    ok(p.register(name.upper()))  # case-sensitive: a different account


def test_login_unknown_user_and_wrong_password(broker, peers, names):
    p = peers(broker)
    name = names()
    ok(p.register(name))
    err(p.login("nosuchuser"), "E_UNKNOWN_USER")
    reply = err(p.login(name, "wrong password"), "E_BAD_CREDENTIALS")
    assert reply["attempts_left"] == 2
    reply = ok(p.login(name))
    assert reply["user"] == name and reply["pub_port"] == broker.pub_port
    assert (reply["heartbeat_interval"], reply["heartbeat_timeout"], reply["dup"]) == (5.0, 15.0, False)
    again = ok(p.login(name))  # a retried login gets the first reply again (docs 9.2)
    assert again["dup"] is True and again["since_ts"] == reply["since_ts"] and again["seq"] == reply["seq"]
    other = names()
    ok(peers(broker).register(other))
    err(p.login(other), "E_ALREADY_LOGGED_IN")


def test_requests_need_a_session(broker, peers):
    p = peers(broker)
    for kind in ("who", "status", "idle"):
        err(p.call(kind), "E_NOT_LOGGED_IN")
    assert ok(p.call("logout"))["session"] is False  # logout is idempotent (docs 9.2)
    err(p.call("last", minutes=5), "E_NOT_LOGGED_IN")
    ok(p.call("ping"))


def test_lockout_blocks_the_ip_for_the_account(tmp_path, peers, names):
    # The expiry (exactly --block-seconds later) and "no argon2id work for a blocked login" are
    # pinned with a fake clock in tests/test_broker_lockout.py; here: the same over real sockets.
    b = Broker(tmp_path, "--block-seconds", "30")
    try:
        name = names()
        first = peers(b)
        ok(first.register(name))
        assert err(first.login(name, "wrong one"), "E_BAD_CREDENTIALS")["attempts_left"] == 2
        assert err(first.login(name, "wrong two"), "E_BAD_CREDENTIALS")["attempts_left"] == 1
        assert err(first.login(name, "wrong three"), "E_BLOCKED")["retry_after"] == 30.0
        # A new connection from the same IP is still blocked, even with the right password; the
        # broker refuses it before queueing a password check (its log line says so).
        second = peers(b)
        reply = err(second.login(name), "E_BLOCKED")
        assert 0 < reply["retry_after"] <= 30.0
        b.wait_log(f"login blocked user={name} ip=127.0.0.1 ")
        # Another account from the same IP is not blocked.
        other = names()
        ok(second.register(other))
        ok(second.login(other))
        log = b.log_text()
        failed = [line[line.index("failed login"):] for line in log.splitlines() if f"failed login user={name} " in line]
        assert failed == [
            f"failed login user={name} ip=127.0.0.1 attempts_left={n}" for n in (2, 1, 0)]
        assert PASSWORD not in log and "wrong one" not in log
    finally:
        b.stop()


def test_second_login_replaces_the_first_session(broker, peers, names):
    name = names()
    first, second = peers(broker), peers(broker)
    ok(first.register(name))
    ok(first.login(name))
    ok(second.login(name))
    end = first.wait_for(lambda: first.ends and first.ends[0], what="end push")
    assert end.reason == "replaced"
    err(first.call("who"), "E_NOT_LOGGED_IN")
    assert name in ok(second.call("who"))["users"]


def test_max_clients(tmp_path, peers, names):
    b = Broker(tmp_path, "--max-clients", "1")
    try:
        a, c = peers(b), peers(b)
        one, two = names(), names()
        ok(a.register(one))
        ok(a.register(two))
        ok(a.login(one))
        assert "full" in err(c.login(two), "E_SERVER_FULL")["message"]
        ok(a.call("logout"))
        ok(c.login(two))
    finally:
        b.stop()


def test_import_users(tmp_path, peers):
    users_file = tmp_path / "user_pass.txt"
    users_file.write_text("alice1 password1\nbob22 password2 extra\nab short\n\n# comment\ncarol3 password3\nalice1 dupdupdup\n")
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "zmq_chat.broker", "--data-dir", str(tmp_path / "d"),
                          "--import-users", str(users_file)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "imported 2 users, skipped 3 lines" in run.stdout
    assert ":2: skipped" in run.stderr and ":3: skipped" in run.stderr and ":7: skipped" in run.stderr
    b = Broker(tmp_path / "d")
    try:
        p = peers(b)
        ok(p.login("carol3", "password3"))
    finally:
        b.stop()
