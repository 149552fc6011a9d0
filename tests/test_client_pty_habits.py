"""End-to-end tests of the terminal client's irssi/weechat habits (issue 11): a real broker and
`python -m zmq_chat.client` programs in pseudo-terminals (pexpect). Every wait has a deadline."""

from __future__ import annotations

import re

import pexpect
import pytest

from tests.pty_client import client_factory, logout_all, transcript
from tests.pty_client import wait_exit
from tests.test_client_pty import broker, clients, fresh_name  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

UP = "\x1b[A"
TIME = r"\[\d\d:\d\d:\d\d\]"


@pytest.fixture
def spawn(tmp_path):
    """make(argv, term, timeout, env_extra) -> a client program (tests/pty_client.py)."""
    with client_factory(tmp_path / "config") as make:
        yield make


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
    logout_all(a, b)


def _sgr_before(text: str, line_re: str) -> str:
    """The last SGR escape sequence ("0;32" of ESC[0;32m) right before the line matching `line_re`."""
    found = re.search(r"\x1b\[([0-9;]*)m(?:\x1b\[\?7h)?" + line_re, text)
    assert found, f"no colour before {line_re!r}"
    return found.group(1)


def test_colours_per_kind_and_plain_for_no_color_and_dumb(broker, spawn):  # noqa: F811
    alice, bob, carol = fresh_name("alice"), fresh_name("bob"), fresh_name("carol")
    args = ["--host", "127.0.0.1", "--port", str(broker.port), *broker.key_args()]
    kids = {}
    for name, term, env in ((alice, "xterm", {}), (bob, "xterm", {}), (carol, "xterm", {"NO_COLOR": "1"})):
        kids[name] = child = spawn(args, term, env_extra=env)
        child.expect_exact("new user? [y/N]")
        child.sendline(f"newuser {name} secret123")
        child.expect_exact(f"logged in as {name}")
    a, b, c = kids[alice], kids[bob], kids[carol]
    b.expect_exact(f"* {carol} logged in")
    a.sendline(f"send {bob} private words")
    b.expect_exact("private words")
    a.sendline("broadcast public words")
    b.expect_exact("public words")
    c.expect_exact("public words")
    b.sendline(f"send zed{bob} anyone?")
    b.expect_exact(f"not sent: no such user: zed{bob}")
    b.sendline(f"send {alice} my reply")
    b.expect_exact(f"you to {alice}: my reply")
    seen = transcript(b)
    kinds = {
        "presence": _sgr_before(seen, rf"{TIME} \* {carol} logged in"),
        "private": _sgr_before(seen, rf"{TIME} {alice}: private words"),
        "bcast": _sgr_before(seen, rf"{TIME} {alice} to all: public words"),
        "error": _sgr_before(seen, "not sent: no such user"),
        "own": _sgr_before(seen, rf"{TIME} you to {alice}: my reply"),
    }
    assert len(set(kinds.values())) == len(kinds), kinds
    assert all(re.search(r"(^|;)[39]\d(;|$)", code) for code in kinds.values()), kinds  # a foreground each
    assert not re.search(r"\x1b\[[0-9;]*;[39]\d[;m]", transcript(c)), "NO_COLOR got colours"

    d = spawn(args, "dumb")
    d.expect_exact("new user? [y/N]")
    d.sendline(f"newuser {fresh_name('dave')} secret123")
    d.expect_exact("logged in as")
    a.sendline("broadcast more words")
    d.expect_exact("more words")
    assert not re.search(r"\x1b\[[0-9;]*m", transcript(d)), "a dumb terminal got colours"
    for child in (a, b, c, d):
        child.sendline("logout")
        assert wait_exit(child) == 0


def test_tab_completes_commands_and_names_from_who_and_presence(broker, clients):  # noqa: F811
    alice, bob = fresh_name("alice"), fresh_name("bob")
    a = new_account(clients, broker, alice, term="xterm")
    b = new_account(clients, broker, bob)
    a.expect_exact(f"* {bob} logged in")  # presence teaches alice the name
    a.send(f"send {bob[:5]}\t")  # completion runs in the background: wait until it shows
    a.expect_exact(bob[5:])
    a.send(" hello by tab\r")
    a.expect_exact(f"you to {bob}: hello by tab")
    b.expect_exact("hello by tab")
    a.send("sta\t")  # the command word
    a.expect_exact("tus")
    a.send("\r")
    a.expect_exact("logged in since")
    logout_all(a, b)


def test_idle_header_comes_before_the_held_messages(broker, clients):  # noqa: F811
    alice, bob = fresh_name("alice"), fresh_name("bob")
    a = new_account(clients, broker, alice)
    b = new_account(clients, broker, bob)
    a.sendline("busy in a meeting")
    a.expect_exact("you are busy")
    for n in (1, 2):
        b.sendline(f"send {alice} held number {n}")
        b.expect_exact(f"you to {alice}: held number {n}")
        if n == 1:
            b.expect_exact(f"{alice} is busy: in a meeting")  # the auto-reply, once
    a.sendline("idle")
    a.expect_exact("you are available; 2 held private message(s) follow")
    a.expect(rf"{TIME} {bob}: held number 1")
    a.expect(rf"{TIME} {bob}: held number 2")
    logout_all(a, b)


def test_irc_aliases(broker, clients):  # noqa: F811
    alice, bob = fresh_name("alice"), fresh_name("bob")
    a = new_account(clients, broker, alice)
    b = new_account(clients, broker, bob)
    a.sendline(f"/msg {bob} irc style")
    a.expect_exact(f"you to {bob}: irc style")
    b.expect(rf"{TIME} {alice}: irc style")
    a.sendline("/who")
    a.expect_exact("online: ")
    a.sendline("/me waves")
    a.expect(rf"{TIME} \* you waves")
    b.expect(rf"{TIME} \* {alice} waves")
    a.sendline("/help")
    a.expect_exact("send <user> <message>")
    a.sendline("/quit")
    assert wait_exit(a) == 0
    b.sendline("logout")
    assert wait_exit(b) == 0


def test_ctrl_z_suspends_and_fg_resumes(broker, tmp_path):  # noqa: F811
    """In an interactive bash (job control), as a user would: Ctrl+Z stops the client, `fg` brings
    it back with its input line, and it goes on working."""
    import os
    import shlex
    import sys

    user = fresh_name("zed")
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "PS1": "$ ",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("NO_COLOR", None)
    argv = [sys.executable, "-m", "zmq_chat.client", "--host", "127.0.0.1", "--port", str(broker.port),
            *broker.key_args()]
    shell = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], env=env, encoding="utf-8", timeout=15,
                          dimensions=(50, 200))
    try:
        shell.sendline(shlex.join(argv))
        shell.expect_exact("new user? [y/N]")
        shell.sendline(f"newuser {user} secret123")
        shell.expect_exact(f"logged in as {user}")
        shell.expect_exact(">")
        shell.sendcontrol("z")
        shell.expect("Stopped")
        shell.sendline("fg")
        shell.expect_exact(">")  # the input line is drawn again
        shell.sendline("status")
        shell.expect_exact("logged in since")
        shell.sendline("logout")
        shell.expect_exact("logged out")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)


def test_group_message_names_the_other_recipients(broker, clients):  # noqa: F811
    alice, bob, carol = fresh_name("alice"), fresh_name("bob"), fresh_name("carol")
    a = new_account(clients, broker, alice)
    b = new_account(clients, broker, bob)
    c = new_account(clients, broker, carol)
    a.sendline(f"send ({bob} {carol}) team meeting")
    a.expect_exact(f"you to {bob}, {carol}: team meeting")
    for child in (b, c):
        child.expect(rf"{TIME} {alice} to {bob}, {carol}: team meeting")
    a.sendline(f"send {bob} just you")
    b.expect(rf"{TIME} {alice}: just you")
    for child in (a, b, c):
        child.sendline("logout")
        assert wait_exit(child) == 0
