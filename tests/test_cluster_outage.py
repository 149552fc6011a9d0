"""kill -9 of Redis itself under load (issue 10): real `chat-broker --store redis://...` processes on a
real redis-server started with `appendfsync always` (tests/redis_server.py). The brokers hold every
reply while Redis is away (their commits retry; broker.redisstore), go on once it is back, and no
acknowledged message is lost or stored twice; a broker is reaped only if it really is gone (one
that is slow to come back after the outage is not).

Every wait is a deadline poll (tests.harness.Peer.wait_for), but one: the outage itself lasts
OUTAGE seconds, the scenario's input, not a threshold on anything measured.
"""

from __future__ import annotations

import itertools
import signal
import time

import msgspec
import pytest

from tests.harness import Broker, Peer, ok

pytestmark = pytest.mark.timeout(180)

OUTAGE = 2.0
"""Seconds Redis stays down: longer than the brokers' --backplane-ttl (1.5 s, the cluster fixture's), so
the restarted Redis holds every liveness key expired."""
ROUND = 20
"""Requests each sender pipelines per round (private sends and broadcasts, alternating)."""

_req = itertools.count(50_000)


def peer(ctx, broker: Broker, user: str) -> Peer:
    p = Peer(ctx, broker)
    ok(p.register(user))
    ok(p.login(user))
    return p


class Sender:
    """A peer that pipelines sends to `to` and broadcasts without waiting, as a busy client does;
    `sent` maps each request id to (kind, cid)."""

    def __init__(self, p: Peer, to: str) -> None:
        self.p, self.to = p, to
        self.sent: dict[int, tuple[str, str]] = {}

    def fire(self, tag: str, count: int = ROUND) -> None:
        for i in range(count):
            req, cid = next(_req), f"{self.p.user}-{tag}-{i}"
            kind = "send" if i % 2 == 0 else "broadcast"
            body = {"req": req, "id": cid, "text": cid, **({"to": [self.to]} if kind == "send" else {})}
            self.p.send_raw([kind.encode(), msgspec.json.encode(body)])
            self.sent[req] = (kind, cid)

    def answered(self) -> int:
        return sum(req in self.p.replies for req in self.sent)

    def acked(self, kind: str) -> set[str]:
        return {cid for req, (k, cid) in self.sent.items() if k == kind and self.p.replies[req]["status"] == "ok"}

    def retry_failed(self) -> None:
        """Send every request again that was not answered ok, with its id (the client's retry)."""
        for req, (kind, cid) in list(self.sent.items()):
            if self.p.replies[req]["status"] != "ok":
                reply = self.p.send(self.to, cid, cid=cid) if kind == "send" else self.p.broadcast(cid, cid=cid)
                self.p.replies[req] = ok(reply)

    def cids(self, kind: str) -> list[str]:
        return sorted(cid for k, cid in self.sent.values() if k == kind)


def test_kill_9_of_redis_under_load_loses_and_duplicates_nothing_acknowledged(ctx, cluster, redis_server):
    a, b, c = cluster(3, "--heartbeat-timeout", "120")  # sessions outlive a quiet test
    sam, ann = peer(ctx, a, "sam"), peer(ctx, a, "ann")
    ben, rita = peer(ctx, b, "ben"), peer(ctx, b, "rita")
    peer(ctx, c, "carl")  # on the broker that dies while Redis is down
    everyone = [sam, ann, ben, rita]
    for p in everyone:
        p.wait_for(lambda p=p: "carl" in ok(p.call("who"))["users"], what="carl known everywhere")
    senders = [Sender(sam, "rita"), Sender(ben, "ann")]  # across brokers, both ways
    for s in senders:
        s.fire("before")
    sam.wait_for(lambda: senders[0].answered() >= 5, what="the first replies")
    c.stop(kill=True)
    redis_server.kill9()  # while the rest are in flight
    for s in senders:
        s.fire("during")
    for broker in (a, b):  # each has a commit waiting for Redis: nothing answered meanwhile
        broker.wait_log("unreachable", timeout=20)
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)  # b will be slow to come back (a live broker all the same)
    time.sleep(OUTAGE)
    redis_server.start()
    a.wait_log("brokers without liveness", timeout=20)  # a is back and sees b (and c) without liveness
    b.proc.send_signal(signal.SIGCONT)
    for s in senders:
        s.fire("after")
    for s in senders:
        s.p.wait_for(lambda s=s: s.answered() == len(s.sent), timeout=60, what="every request answered")
        s.retry_failed()  # a read may have failed while Redis was away: the client retries
    assert a.proc is not None and b.proc is not None and a.proc.poll() is None and b.proc.poll() is None
    for broker in (a, b):
        assert "reachable again" in broker.log_text()

    # every acknowledged send delivered exactly once (the unacknowledged were retried: all of them)
    for s, reader in zip(senders, (rita, ann), strict=True):
        want = s.cids("send")
        assert s.acked("send") == set(want)
        reader.wait_for(lambda reader=reader, want=want: len(reader.msgs) >= len(want), timeout=30, what="every send")
        ok(reader.call("who"))  # (a second copy would have been pushed before this reply)
        assert sorted(x.cid for x in reader.msgs) == want

    # the broadcasts: once each, one order on both brokers, no gaps in the seqs
    bcasts = sorted(cid for s in senders for cid in s.cids("broadcast"))
    assert {cid for s in senders for cid in s.acked("broadcast")} == set(bcasts)
    for p in everyone:
        p.wait_for(lambda p=p: sum(e.kind == "bcast" for e in p.events) >= len(bcasts), timeout=30,
                   what="every broadcast")
    orders = [[(e.seq, e.cid) for e in p.events if e.kind == "bcast"] for p in everyone]
    assert all(order == orders[0] for order in orders) and sorted(cid for _, cid in orders[0]) == bcasts

    # carl's broker died during the outage: reaped once Redis is back; nobody else was
    for p in everyone:
        p.wait_event(lambda e: e.kind == "presence" and e.user == "carl" and e.event == "lost", timeout=30)
    for p in everyone:
        seqs = [e.seq for e in p.events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gapless, in order
        assert [e.user for e in p.events if e.kind == "presence" and e.event == "lost"] == ["carl"]
        assert sorted(ok(p.call("who"))["users"]) == ["ann", "ben", "rita", "sam"]

    # both brokers serve new logins afterwards
    newa, newb = peer(ctx, a, "nora"), peer(ctx, b, "nick")
    ok(newa.send("nick", "hello after the outage"))
    assert newb.wait_msgs(1)[0].text == "hello after the outage"
