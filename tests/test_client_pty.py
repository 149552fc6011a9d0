"""End-to-end tests of the terminal client: a real broker subprocess and real `python -m client`
programs in pseudo-terminals (pexpect). Every wait has a deadline; subprocesses are killed in finally.
"""

from __future__ import annotations

import socket
import time
import uuid

import pexpect
import pytest
import zmq

from zmq_chat.broker.launch import LaunchedBroker
from zmq_chat.client.trust import key_fingerprint
from zmq_chat.protocol import wire
from tests.harness import FakeRouter
from tests.pty_client import client_factory, transcript, wait_exit
from zmq_chat.protocol.errors import ErrorCode

pytestmark = pytest.mark.timeout(60)

TIME = r"\[\d\d:\d\d:\d\d\]"


class BrokerProcess(LaunchedBroker):
    """`python -m zmq_chat.broker` on 127.0.0.1 ephemeral ports (broker.launch: ports and key from
    its ready file), plus the client flags that pin its key."""

    def key_args(self) -> list[str]:
        """Client flags that pin this broker's key."""
        return [f"--server-key={self.server_key.decode()}"] if self.server_key else ["--insecure"]


@pytest.fixture
def broker(tmp_path):
    b = BrokerProcess(tmp_path / "data").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def clients(tmp_path):
    """A factory of client programs in pseudo-terminals: clients(port, term="dumb", host, *flags)
    -> spawn (tests/pty_client.py)."""
    with client_factory(tmp_path / "config") as make:
        yield lambda port, term="dumb", host="127.0.0.1", *flags: make(
            ["--host", host, "--port", str(port), *flags], term)


def fresh_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def register_interactively(child: pexpect.spawn, user: str, password: str) -> None:
    """The new-user dialogue: y, username, hidden password twice; ends logged in."""
    child.expect_exact("new user? [y/N]")
    child.sendline("y")
    child.expect_exact("username:")
    child.sendline(user)
    child.expect_exact("password (at least")
    child.sendline(password)
    child.expect_exact("confirm password:")
    child.sendline(password)
    child.expect_exact(f"account {user} created")
    child.expect_exact(f"logged in as {user}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("term", ["dumb", "xterm"])
def test_two_clients_register_chat_and_logout(broker, clients, term, tmp_path):
    alice, bob = fresh_name("alice"), fresh_name("bob")
    pw_a, pw_b = "Secret-" + uuid.uuid4().hex[:10], "Hidden-" + uuid.uuid4().hex[:10]

    # first use: the fingerprint is shown and, once accepted, recorded (0600) for the next client
    a = clients(broker.port, term, "127.0.0.1", "--key-port", str(broker.key_port))
    a.expect_exact("is not known yet")
    a.expect_exact(f"Its key fingerprint is {key_fingerprint(broker.server_key)}")
    a.expect_exact("Trust this broker and remember its key? [y/N]")
    a.sendline("y")
    a.expect_exact("(encrypted)")
    register_interactively(a, alice, pw_a)
    b = clients(broker.port, term, "127.0.0.1", "--key-port", str(broker.key_port))
    b.expect_exact("(encrypted)")  # no question: the key is recorded now
    register_interactively(b, bob, pw_b)
    assert "Trust this broker" not in transcript(b)
    known = tmp_path / "config" / "zmq-chat" / "known_brokers"
    assert known.read_text().split() == [f"127.0.0.1:{broker.port}", broker.server_key.decode()]
    assert known.stat().st_mode & 0o777 == 0o600 and known.parent.stat().st_mode & 0o777 == 0o700
    for child, pw in ((a, pw_a), (b, pw_b)):
        assert pw not in transcript(child), "the password was echoed"

    a.expect_exact(f"* {bob} logged in")  # presence on alice's SUB

    # a private message arrives with time and sender; UTF-8 survives the trip
    b.sendline(f"send {alice} héllo wörld ✓ 你好")
    b.expect(f"{TIME} you to {alice}: héllo wörld ✓ 你好")
    a.expect(f"{TIME} {bob}: héllo wörld ✓ 你好")

    # a broadcast reaches the other user; the sender sees it once (own echo skipped)
    a.sendline("broadcast hello everyone")
    a.expect(f"{TIME} you to all: hello everyone")
    b.expect(f"{TIME} {alice} to all: hello everyone")
    a.sendline("who")
    a.expect_exact(f"online: {alice}*, {bob}" if alice < bob else f"online: {bob}, {alice}*")
    assert f"{alice} to all: hello everyone" not in transcript(a)  # own echo from SUB not shown

    # a typo is caught before sending, with the usage
    a.sendline(f"send {bob}")
    a.expect_exact("usage: send <user> <message>")

    # logout ends the program with status 0; the other side sees the presence event
    a.sendline("logout")
    assert wait_exit(a) == 0
    b.expect_exact(f"* {alice} logged out")

    # Ctrl+D at the prompt logs out cleanly too
    b.sendcontrol("d")
    assert wait_exit(b) == 0


@pytest.mark.timeout(60)
def test_login_catch_up_wrong_password_and_ctrl_c(broker, clients):
    alice, bob = fresh_name("alice"), fresh_name("bob")
    a = clients(broker.port, "dumb", "127.0.0.1", *broker.key_args())
    a.expect_exact("new user? [y/N]")
    a.sendline(f"newuser {alice} secret123")
    a.expect_exact(f"logged in as {alice}")
    a.sendline("dereg")
    a.expect_exact("back to the login prompt")
    a.expect_exact("new user? [y/N]")

    b = clients(broker.port, "dumb", "127.0.0.1", *broker.key_args())
    b.expect_exact("new user? [y/N]")
    b.sendline(f"newuser {bob} secret456")
    b.expect_exact(f"logged in as {bob}")
    b.sendline("broadcast news while you were out")
    b.expect_exact("you to all: news while you were out")
    b.sendline(f"send {alice} a letter for later")
    b.expect_exact(f"you to {alice}: a letter for later")

    # wrong password: the broker's message, then the password is asked again
    a.sendline("")
    a.expect_exact("username:")
    a.sendline(alice)
    a.expect_exact("password:")
    a.sendline("not-the-password")
    a.expect_exact("error: ")
    a.expect_exact("password:")
    a.sendline("secret123")
    a.expect_exact(f"logged in as {alice}")
    # the catch-up in one summary, in time order; presence condensed to who is online now
    a.expect_exact("2 messages while you were away")
    a.expect(f"{TIME} {bob} to all: news while you were out")
    a.expect(f"{TIME} {bob}: a letter for later")
    a.expect_exact(f"online now: {alice}*, {bob}" if alice < bob else f"online now: {bob}, {alice}*")
    assert f"{bob} logged in" not in transcript(a)

    b.expect_exact(f"* {alice} logged in")
    a.sendcontrol("c")  # Ctrl+C logs out and exits 0
    assert wait_exit(a) == 0
    b.expect_exact(f"* {alice} logged out")
    b.sendline("logout")
    assert wait_exit(b) == 0


@pytest.mark.timeout(60)
def test_replaced_session_ends_with_its_message(broker, clients):
    user = fresh_name("carol")
    first = clients(broker.port, "dumb", "127.0.0.1", *broker.key_args())
    first.expect_exact("new user? [y/N]")
    first.sendline(f"newuser {user} secret123")
    first.expect_exact(f"logged in as {user}")
    second = clients(broker.port, "dumb", "127.0.0.1", *broker.key_args())
    second.expect_exact("new user? [y/N]")
    second.sendline(f"login {user} secret123")
    second.expect_exact(f"logged in as {user}")
    first.expect_exact("this session ends")
    assert wait_exit(first) == 0
    second.sendline("logout")
    assert wait_exit(second) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_wrong_port_fails_fast_with_exit_2(clients):
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    child = clients(port)
    child.expect_exact(f"no chat broker answered at 127.0.0.1:{port}", timeout=6)
    assert wait_exit(child, timeout=6) == 2
    assert time.monotonic() - start < 5.5
    assert "Traceback" not in transcript(child)


@pytest.mark.timeout(60)
def test_unresolvable_host_exits_2(clients):
    child = clients(4119, host="no-such-host.invalid")
    child.expect_exact("cannot resolve host 'no-such-host.invalid'", timeout=6)
    assert wait_exit(child, timeout=6) == 2


@pytest.mark.timeout(60)
def test_version_mismatch_and_non_chat_peer_exit_2(clients):
    def version_error(frames):
        req = wire.decode_request(frames)[1].req
        return wire.encode_error(req, ErrorCode.VERSION, "this broker speaks protocol version 2")

    for answer, expected in (
        (version_error, "protocol version mismatch: this broker speaks protocol version 2"),
        (lambda frames: [b"HTTP/1.0 200 OK"], "is not a chat broker"),
    ):
        fake = FakeRouter(answer)
        try:
            child = clients(fake.port, "dumb", "127.0.0.1", "--insecure")
            child.expect_exact(expected, timeout=6)
            assert wait_exit(child, timeout=6) == 2
            assert "Traceback" not in transcript(child)
        finally:
            fake.close()


@pytest.mark.timeout(60)
def test_sync_connections_on_one_poller(broker):
    """The core + sync adapter (no terminal, no asyncio) can chat: what a load tester builds on."""
    from zmq_chat.client.core import EventReceived, MessageReceived, ReplyReceived
    from zmq_chat.client.sync import SyncConnection
    from zmq_chat.protocol import messages as m
    from zmq_chat.protocol.replies import Reply, SendReply
    from zmq_chat.protocol.version import PROTOCOL_VERSION

    ctx, poller = zmq.Context(), zmq.Poller()
    conns = [SyncConnection(ctx, poller, "127.0.0.1", broker.port, server_key=broker.server_key)
             for _ in range(2)]
    outputs: list[list] = [[], []]

    def pump_until(pred, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, outputs
            ready = dict(poller.poll(50))
            for i, c in enumerate(conns):
                outputs[i] += c.handle(ready) + c.tick()

    def reply_to(i: int, req: int) -> Reply:
        def found():
            return any(isinstance(o, ReplyReceived) and o.req == req for o in outputs[i])
        pump_until(found)
        return next(o.body for o in outputs[i] if isinstance(o, ReplyReceived) and o.req == req)

    try:
        names = [fresh_name("sa"), fresh_name("sb")]
        for i, c in enumerate(conns):
            assert reply_to(i, c.send(m.Hello(req=0, version=PROTOCOL_VERSION))).ok
            assert reply_to(i, c.send(m.Register(req=0, version=1, user=names[i], password="secret123"))).ok
            assert reply_to(i, c.send(m.Login(req=0, version=1, user=names[i], password="secret123"))).ok
            assert c.sub is not None and c.core.session is not None
        sent = reply_to(0, conns[0].send(m.Send(req=0, id=uuid.uuid4().hex, to=[names[1]], text="über sync")))
        assert isinstance(sent, SendReply) and names[1] in sent.ids
        pump_until(lambda: any(isinstance(o, MessageReceived) for o in outputs[1]))
        got = next(o.message for o in outputs[1] if isinstance(o, MessageReceived))
        assert (got.sender, got.text) == (names[0], "über sync")
        pump_until(lambda: conns[1].core.queued_acks() == [] and conns[1].core.pending_count() == 0)
        assert reply_to(0, conns[0].send(m.Broadcast(req=0, id=uuid.uuid4().hex, text="to all"))).ok
        pump_until(lambda: any(isinstance(o, EventReceived) and o.event.text == "to all" for o in outputs[1]))
        assert reply_to(1, conns[1].send(m.Logout(req=0))).ok
        assert conns[1].sub is None and conns[1].core.session is None
    finally:
        for c in conns:
            c.close()
        ctx.term()
