"""Shared fixtures: a zmq context, a broker subprocess per test module, fresh user names, and an
in-process broker core (`rig`; a module sets RIG_CONFIG to change its settings)."""

from __future__ import annotations

import itertools
import signal
import uuid

import pytest
import zmq

from tests.core_harness import CoreRig
from tests.harness import Broker, Peer


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def cluster(tmp_path, redis_server):
    """start(n, *flags) -> n more `chat-broker --store` processes (tests.harness.Broker: insecure,
    127.0.0.1, ephemeral ports, --backplane-ttl 1.5 so a killed broker is reaped quickly) sharing
    the redis_server fixture's server: several brokers, one chat. All stopped at the end."""
    brokers: list[Broker] = []

    def start(n: int = 2, *flags: str) -> list[Broker]:
        for _ in range(n):
            brokers.append(Broker(tmp_path / f"b{len(brokers)}", "--insecure", "--store", redis_server.url,
                                  "--backplane-ttl", "1.5", *flags))
        return brokers[-n:]

    yield start
    for b in brokers:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.send_signal(signal.SIGCONT)  # (a test that failed with a broker stopped by SIGSTOP)
        b.stop()


@pytest.fixture
def rig(tmp_path, request):
    """A CoreRig (fake clock, in-memory store) with the module's RIG_CONFIG settings, if any."""
    r = CoreRig(tmp_path, **getattr(request.module, "RIG_CONFIG", {}))
    yield r
    r.store.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("data"))
    yield b
    b.stop()


_names = itertools.count()


@pytest.fixture
def names():
    """A function returning fresh valid usernames (letters and digits)."""
    tag = uuid.uuid4().hex[:6]
    return lambda: f"u{tag}{next(_names)}"


@pytest.fixture
def peers(ctx):
    """A factory of Peers that are closed after the test: peers(broker) -> Peer."""
    made: list[Peer] = []

    def make(broker, **kw) -> Peer:
        p = Peer(ctx, broker, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server (tests/redis_server.py: RedisServer, with url, client(), kill9(),
    restart()) on a free 127.0.0.1 port, killed after the test; skips when none is installed."""
    from tests.redis_server import running_redis

    with running_redis(tmp_path / "redis") as server:
        yield server
