"""Integration tests of the asyncio client Connection against a real broker: the acks of a session
are flushed and answered before its logout (issue #7: a fast dereg/logout showed offline messages
again at the next login)."""

from __future__ import annotations

import asyncio

import pytest

from zmq_chat.client.connection import Connection
from zmq_chat.client.core import MessageReceived
from zmq_chat.client.trust import KnownBrokers
from tests.harness import ok

pytestmark = pytest.mark.timeout(30)


async def _session(broker, tmp_path, user: str, want: int) -> list[str]:
    """Log in as `user`, collect `want` private messages (waiting at most 5 s), log out at once."""
    conn = Connection("127.0.0.1", broker.port, server_key=broker.server_key, known=KnownBrokers(tmp_path / "kb"))
    texts: list[str] = []
    try:
        await conn.connect()
        assert (await conn.login(user, "correct horse")).ok
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (5.0 if want else 1.0)
        while len(texts) < want or not want:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(conn.next_event(), left)
            except asyncio.TimeoutError:
                break
            if isinstance(item, MessageReceived):
                texts.append(item.message.text)
        await conn.logout()  # right away: the acks are still queued (ack delay 0.1 s)
    finally:
        await conn.close(linger=False)
    return texts


def test_messages_shown_before_a_fast_logout_are_not_shown_again(broker, peers, names, tmp_path):
    sender, user, other = peers(broker), names(), names()
    ok(sender.register(user))
    ok(sender.register(other))
    ok(sender.login(other))
    for i in range(3):
        ok(sender.send(user, f"offline {i}"))
    first = asyncio.run(_session(broker, tmp_path, user, 3))
    assert first == [f"offline {i}" for i in range(3)]
    again = asyncio.run(_session(broker, tmp_path, user, 0))
    assert again == []  # acknowledged before the logout: gone from the mailbox
