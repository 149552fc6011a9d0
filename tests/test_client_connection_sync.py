"""The poller adapter (client.sync.SyncConnection) against a fake broker ROUTER on 127.0.0.1: what it
does with messages that are not [kind, JSON body]; the hello check both adapters share
(client.adapter.check_hello); and the asyncio adapter (client.connection.Connection) when its SUB
cannot be opened."""

from __future__ import annotations

import asyncio
import errno
import time

import pytest
import zmq

from zmq_chat.client import sockets
from zmq_chat.client.adapter import check_hello, hello_request
from zmq_chat.client.connection import Connection
from zmq_chat.client.core import ReplyReceived
from zmq_chat.client.errors import ConnectError, ConnectionClosed
from zmq_chat.client.sync import SyncConnection
from zmq_chat.client.trust import KnownBrokers
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.replies import ErrorReply, HelloReply, UsersReply, encode_reply
from zmq_chat.protocol.version import PROTOCOL_VERSION
from tests.harness import PASSWORD, ok

pytestmark = pytest.mark.timeout(30)


def _hello(req: int | None, broker: str = "chat-broker") -> HelloReply:
    return HelloReply(req=req, version=PROTOCOL_VERSION, broker=broker, max_message_chars=1000, min_password_chars=8, curve=False)


def test_malformed_broker_messages_are_counted_and_skipped(ctx):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    poller = zmq.Poller()
    registry: dict = {}
    conn = SyncConnection(ctx, poller, "127.0.0.1", port, registry=registry, owner="me")
    try:
        assert registry == {conn.dealer: "me"}
        req = conn.send(hello_request("test"))
        assert router.poll(10_000), "the hello did not arrive"
        rid, kind, body = router.recv_multipart()
        assert kind == b"hello" and wire.decode_request([kind, body])[1].req == req
        stray = encode_reply(UsersReply(req=req + 100, users=[], busy=[], truncated=False))
        for frames in (
            [b"bogus", b"{}"],  # unknown kind
            [wire.REPLY, b"not json"],  # a body that is not a JSON object
            [*stray, b"extra"],  # a third frame (the stray reply itself is ignored by the core)
            [wire.MSG, b'{"x": 1}'],  # JSON, but not a private message
            list(encode_reply(_hello(req))),
        ):
            router.send_multipart([rid, *frames])
        outputs: list = []
        deadline = time.monotonic() + 10
        while not any(isinstance(o, ReplyReceived) for o in outputs):
            assert time.monotonic() < deadline, outputs
            outputs += conn.handle(dict(poller.poll(100)))
        assert [(o.req, o.type) for o in outputs] == [(req, b"hello")]
        assert check_hello(outputs[0].body, "fake:1").broker == "chat-broker"
        assert conn.errors == 4
        assert conn.sub is None and not conn.backlogged
    finally:
        conn.close()
        router.close()
    assert registry == {}


def _replies_after(ctx, messages) -> tuple[list, int]:
    """Send a hello through a SyncConnection to a fake broker ROUTER, which answers with `messages`
    (each a function of the hello's req returning the frames after the routing id). Returns the
    outputs up to the first ReplyReceived and the connection's error count."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    poller = zmq.Poller()
    conn = SyncConnection(ctx, poller, "127.0.0.1", port)
    try:
        req = conn.send(hello_request("test"))
        assert router.poll(10_000), "the hello did not arrive"
        rid = router.recv_multipart()[0]
        for message in messages:
            router.send_multipart([rid, *message(req)])
        outputs: list = []
        deadline = time.monotonic() + 10
        while not any(isinstance(o, ReplyReceived) for o in outputs):
            assert time.monotonic() < deadline, outputs
            outputs += conn.handle(dict(poller.poll(100)))
        return outputs, conn.errors
    finally:
        conn.close()
        router.close()


def test_a_lone_frame_does_not_swallow_the_next_message(ctx):
    # [b"reply"] alone, then a good reply: reading a body after the lone frame would take the
    # good reply's first frame as the body and lose it
    outputs, errors = _replies_after(ctx, [lambda req: [wire.REPLY], lambda req: encode_reply(_hello(req))])
    assert [(o.req, o.type) for o in outputs] == [(outputs[0].req, b"hello")]
    assert errors == 1


def test_a_reply_with_a_third_frame_is_skipped(ctx):
    # the 3-frame reply answers the pending hello, but is not fed to the core: the hello is still
    # pending when the good reply (told apart by its broker name) arrives
    outputs, errors = _replies_after(ctx, [
        lambda req: [*encode_reply(_hello(req, broker="three-frames")), b"extra"],
        lambda req: encode_reply(_hello(req)),
    ])
    assert len(outputs) == 1 and outputs[0].body.broker == "chat-broker"
    assert errors == 1


def test_check_hello_names_what_is_wrong():
    mismatch = rf"protocol version mismatch: other \(this client speaks version {PROTOCOL_VERSION}\)"
    with pytest.raises(ConnectError, match=mismatch):
        check_hello(ErrorReply(req=1, code="E_VERSION", message="other"), "h:1")
    with pytest.raises(ConnectError, match=r"the broker refused hello: no \[E_OVERLOADED\]"):
        check_hello(ErrorReply(req=1, code="E_OVERLOADED", message="no"), "h:1")
    with pytest.raises(ConnectError, match="h:1 is not a chat broker"):
        check_hello(_hello(1, broker="other"), "h:1")
    assert check_hello(_hello(1), "h:1").max_message_chars == 1000
    assert hello_request("x") == m.Hello(req=0, version=PROTOCOL_VERSION, client="x")


def test_a_sub_that_cannot_be_opened_fails_the_login_with_the_reason(broker, peers, names, tmp_path, monkeypatch, caplog):
    # e.g. out of file descriptors: the login says why, and so does every later request, instead
    # of a receive task that died silently and a "lost connection" much later
    user = names()
    ok(peers(broker).register(user))

    def out_of_files(*args, **kwargs):
        raise zmq.ZMQError(errno.EMFILE)

    monkeypatch.setattr(sockets, "open_sub", out_of_files)
    reason = r"cannot open the event socket to 127\.0\.0\.1:\d+: Too many open files"

    async def session() -> None:
        conn = Connection("127.0.0.1", broker.port, server_key=broker.server_key, known=KnownBrokers(tmp_path / "kb"))
        try:
            await conn.connect()
            with pytest.raises(ConnectionClosed, match=reason):
                await conn.login(user, PASSWORD)
            with pytest.raises(ConnectionClosed, match=reason):
                await conn.request(m.Who)
            assert await conn.logout() is None
        finally:
            await conn.close(linger=False)

    asyncio.run(session())
    assert any(r.levelname == "ERROR" and "cannot open the event socket" in r.getMessage() for r in caplog.records)
