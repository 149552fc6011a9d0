"""End-to-end tests of chat-client's broker list and failover, in pseudo-terminals (pexpect).

* Two real brokers sharing a real redis-server (`chat-broker --store redis://...`, one chat, each
  with its own CURVE key): kill -9 of the client's broker mid-session; the client fails over to the
  other, logs in again, catches up and sends again what got no reply.
* ONE SQLite broker reached under two addresses (the same chat, one store): a TCP forwarder in
  front of it is the first address, the broker's own port the second. Muting the forwarder (the
  broker's answers are dropped, the client's requests still arrive) makes the first "broker" stop
  answering while it stores what it is sent: a send whose reply was lost is stored once.
* Brokers that do not answer at start, and keys recorded per host:port.
Every wait has a deadline; subprocesses are killed in finally.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import pexpect
import pytest
import zmq

from tests.harness import Broker, Peer
from tests.pty_client import client_factory, transcript, wait_exit

pytestmark = pytest.mark.timeout(90)

PASSWORD = "Secret-" + uuid.uuid4().hex[:10]


class Forwarder:
    """TCP 127.0.0.1:port -> 127.0.0.1:target, two threads per connection. After `mute()` whatever
    the target sends is dropped (the connection stays up), so the client hears nothing."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.muted = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if not (from_broker and self.muted.is_set()):
                    dst.sendall(data)
            except OSError:
                return

    def mute(self) -> None:
        self.muted.set()

    def close(self) -> None:
        self.listener.close()
        for sock in self.socks:
            sock.close()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", "--heartbeat-timeout", "3")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def spawn(tmp_path):
    """spawn(*flags) -> a chat-client in a pseudo-terminal (tests/pty_client.py)."""
    with client_factory(tmp_path / "config") as make:
        yield lambda *flags: make(list(flags), timeout=20)



def register(broker: Broker, *names: str) -> None:
    ctx = zmq.Context()
    try:
        peer = Peer(ctx, broker)
        for name in names:
            assert peer.register(name, PASSWORD)["status"] == "ok"
        peer.close()
    finally:
        ctx.term()


def log_in(child: pexpect.spawn, user: str) -> None:
    child.expect_exact("new user? [y/N]")
    child.sendline(f"login {user} {PASSWORD}")
    child.expect_exact(f"logged in as {user}")
    child.expect_exact("> ")


def quit_client(child: pexpect.spawn) -> int:
    child.sendline("logout")
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus


def test_a_broker_that_stops_answering_is_replaced_and_the_session_goes_on(broker, spawn):
    alice, bob = f"alice{uuid.uuid4().hex[:6]}", f"bob{uuid.uuid4().hex[:6]}"
    register(broker, alice, bob)
    key = broker.server_key.decode()
    forwarder = Forwarder(broker.port)
    first, second = f"127.0.0.1:{forwarder.port}", f"127.0.0.1:{broker.port}"
    try:
        a = spawn("--host", f"{first},{second}", f"--server-key={key}")
        a.expect_exact(f"connected to {first}")
        log_in(a, alice)
        b = spawn("--host", second, f"--server-key={key}")
        log_in(b, bob)

        forwarder.mute()  # from now on alice hears nothing from "first"; what she sends still arrives
        b.sendline(f"send {alice} while-muted-{bob}")
        b.expect_exact(f"you to {alice}: while-muted-{bob}")
        a.sendline("broadcast sent-while-muted")  # stored at once; its reply is lost
        a.expect_exact(f"connection to {first} lost; now on {second}", timeout=30)
        a.expect_exact(f"while-muted-{bob}")  # the unacked push, pushed again after the new login
        a.expect_exact("you to all: sent-while-muted")  # the retry with the same id: the first reply
        a.sendline("broadcast after-the-switch")
        a.expect_exact("you to all: after-the-switch")
        b.expect_exact(f"{alice} to all: after-the-switch")  # events come in seq order: the first one came before
        assert transcript(b).count("sent-while-muted") == 1  # stored once, though sent twice
        a.sendline("who")
        a.expect_exact("online:")
        assert quit_client(a) == 0
        assert transcript(a).count(f"while-muted-{bob}") == 1  # shown once
        assert quit_client(b) == 0
    finally:
        forwarder.close()


def expect_all(child: pexpect.spawn, texts: list[str], timeout: float = 20) -> None:
    """Wait until the client printed every one of `texts`, in any order."""
    left = list(texts)
    while left:
        left.pop(child.expect_exact(left, timeout=timeout))


def test_kill_9_of_the_broker_in_use_fails_over_to_another_of_the_same_chat(tmp_path, redis_server, spawn):
    store = ["--store", redis_server.url, "--backplane-ttl", "1.5", "--heartbeat-timeout", "3"]
    brokers = [Broker(tmp_path / f"b{i}", *store) for i in range(2)]
    try:
        one, two = brokers
        assert one.server_key != two.server_key  # each broker its own key, trusted per host:port
        alice, bob = f"alice{uuid.uuid4().hex[:6]}", f"bob{uuid.uuid4().hex[:6]}"
        register(one, alice, bob)
        first, second = f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"
        a = spawn("--host", f"{first},{second}", f"--server-key={one.server_key.decode()},{two.server_key.decode()}")
        a.expect_exact(f"connected to {first}")
        log_in(a, alice)
        b = spawn("--host", second, f"--server-key={two.server_key.decode()}")
        log_in(b, bob)

        one.stop(kill=True)
        a.sendline("broadcast sent-as-the-broker-died")  # no reply: sent again, same id, on the other broker
        b.sendline(f"send {alice} mail-while-{alice}-moves")
        b.expect_exact(f"you to {alice}: mail-while-{alice}-moves")
        b.sendline("broadcast news-while-alice-moves")
        b.expect_exact("you to all: news-while-alice-moves")
        a.expect_exact(f"connection to {first} lost; now on {second}", timeout=40)
        expect_all(a, [f"mail-while-{alice}-moves",  # from the shared mailbox
                       "news-while-alice-moves",  # caught up from the last seq alice saw
                       "you to all: sent-as-the-broker-died"])
        b.expect_exact(f"{alice} to all: sent-as-the-broker-died")
        a.sendline("broadcast after-the-switch")
        b.expect_exact(f"{alice} to all: after-the-switch")
        assert transcript(b).count("sent-as-the-broker-died") == 1
        assert transcript(a).count("news-while-alice-moves") == 1
        assert quit_client(a) == 0
        assert quit_client(b) == 0
    finally:
        for broker in brokers:
            broker.stop(kill=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_broker_that_does_not_answer_at_start_is_skipped(broker, spawn):
    dead, live = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{broker.port}"
    a = spawn("--host", dead, "--host", live, f"--server-key={broker.server_key.decode()}")
    a.expect_exact(f"no chat broker answered at {dead}")
    a.expect_exact(f"trying {live}")
    a.expect_exact(f"connected to {live} (encrypted)")
    a.expect_exact("new user? [y/N]")
    a.sendline("logout")
    assert wait_exit(a) == 0


def test_no_broker_answering_at_start_exits_2(spawn):
    one, two = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    a = spawn("--host", f"{one},{two}", "--insecure")
    a.expect(pexpect.EOF, timeout=30)
    a.close()
    assert a.exitstatus == 2
    out = transcript(a)
    assert f"trying {two}" in out and f"no chat broker answered at {two}" in out


def test_each_broker_key_is_recorded_under_its_own_host_and_port(broker, spawn, tmp_path):
    first, second = f"127.0.0.1:{broker.port}", f"localhost:{broker.port}"
    a = spawn("--host", f"{first},{second}", "--key-port", str(broker.key_port), "--accept-key")
    a.expect_exact(f"connected to {first}")
    a.expect_exact(f"recorded the key of {second}")
    a.expect_exact("new user? [y/N]")
    a.sendline("logout")
    assert wait_exit(a) == 0
    lines = (Path(tmp_path) / "config" / "zmq-chat" / "known_brokers").read_text().split("\n")
    key = broker.server_key.decode()
    assert f"{first} {key}" in lines and f"{second} {key}" in lines
