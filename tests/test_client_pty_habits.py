"""End-to-end tests of the terminal client's irssi/weechat habits (issue 11): a real broker and
`python -m zmq_chat.client` programs in pseudo-terminals (pexpect). Every wait has a deadline."""

from __future__ import annotations

import pexpect
import pytest

from tests.pty_client import transcript
from tests.test_client_pty import broker, clients, fresh_name, wait_exit  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

UP = "\x1b[A"


def start(clients, broker, term="dumb", *flags) -> pexpect.spawn:  # noqa: F811
    """A client of `broker` at its first question."""
    return clients(broker.port, term, "127.0.0.1", *broker.key_args(), *flags)


def new_account(clients, broker, user, password="secret123", term="dumb") -> pexpect.spawn:  # noqa: F811
    """A client logged in as the new account `user`."""
    child = start(clients, broker, term)
    child.expect_exact("new user? [y/N]")
    child.sendline(f"newuser {user} {password}")
    child.expect_exact(f"logged in as {user}")
    return child


def test_password_lines_never_enter_the_history(broker, clients):  # noqa: F811
    user = fresh_name("carol")
    a = new_account(clients, broker, user, term="xterm")
    a.sendline(f"login {user} Carolpw123")
    a.expect_exact("use dereg first")
    a.sendline("status")
    a.expect_exact("logged in since")
    a.send(UP + UP + UP + "\r")  # the oldest line kept is `status`: it runs again
    a.expect_exact("logged in since")
    a.sendline("logout")
    assert wait_exit(a) == 0
    assert transcript(a).count("use dereg first") == 1


def test_user_flag_goes_straight_to_the_password(broker, clients):  # noqa: F811
    user, pw = fresh_name("dave"), "Davepw2024"
    a = start(clients, broker, "dumb", "--user", user)
    a.expect_exact("password:")
    a.sendline(pw)
    a.expect_exact(f"no account named {user}; create it? [y/N]")
    a.sendline("y")
    a.expect_exact("confirm password:")
    a.sendline(pw)
    a.expect_exact(f"account {user} created")
    a.expect_exact(f"logged in as {user}")
    a.sendline("logout")
    assert wait_exit(a) == 0
    b = start(clients, broker, "dumb", "--user", user)
    b.expect_exact("password:")
    b.sendline(pw)
    b.expect_exact(f"logged in as {user}")
    b.sendline("logout")
    assert wait_exit(b) == 0
    for child in (a, b):
        assert "new user?" not in transcript(child)
        assert pw not in transcript(child), "the password was echoed"


def test_errors_speak_human_and_codes_show_at_debug(broker, clients):  # noqa: F811
    alice, bob = fresh_name("alice"), fresh_name("bob")
    a = new_account(clients, broker, alice)
    b = new_account(clients, broker, bob)
    a.sendline(f"send ({bob} zed{bob}) team meeting")
    a.expect(rf"\[\d\d:\d\d:\d\d\] you to {bob}: team meeting \(no such user: zed{bob}\)\r\n")
    b.expect_exact("team meeting")
    a.sendline(f"send zed{bob} hello?")
    a.expect_exact(f"not sent: no such user: zed{bob}")
    a.sendline("status")
    a.expect_exact("logged in since")
    assert "[E_" not in transcript(a) and "unknown:" not in transcript(a)

    d = start(clients, broker, "dumb", "--user", bob, "--log-level", "debug")
    d.expect_exact("password:")
    d.sendline("not-the-password")
    d.expect(r"error: .+ \[E_BAD_CREDENTIALS\]")
    for child in (a, b):
        child.sendline("logout")
        assert wait_exit(child) == 0
