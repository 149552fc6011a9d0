"""Several brokers, one chat: real `chat-broker --store redis://...` processes on a real redis-server
(tests/redis_server.py), clients on different brokers (issue 10, docs/scaling.md).

Every wait is a deadline poll (tests.harness.Peer.wait_for); nothing asserts a timing.
"""

from __future__ import annotations

import msgspec

from tests.harness import Broker, Peer, err, ok

def peer(ctx, broker: Broker, user: str, register: bool = True) -> Peer:
    p = Peer(ctx, broker)
    if register:
        ok(p.register(user))
    ok(p.login(user))
    return p


def test_a_private_and_a_group_message_cross_brokers(ctx, cluster):
    a, b = cluster(2)
    alice, bob = peer(ctx, a, "alice"), peer(ctx, b, "bob")
    carol = peer(ctx, b, "carol")
    reply = ok(alice.send("bob", "hi bob, from broker A"))
    assert bob.wait_msgs(1)[0].text == "hi bob, from broker A"
    group = ok(alice.send(["bob", "carol", "alice"], "team meeting"))
    assert set(group["ids"]) == {"bob", "carol", "alice"}
    assert [x.text for x in bob.wait_msgs(2)] == ["hi bob, from broker A", "team meeting"]
    assert carol.wait_msgs(1)[0].id == group["ids"]["carol"]
    assert alice.wait_msgs(1)[0].text == "team meeting"
    ok(bob.send("alice", "hi alice, from broker B"))
    assert alice.wait_msgs(2)[1].text == "hi alice, from broker B"
    assert reply["ids"]["bob"] == bob.msgs[0].id


def test_broadcasts_keep_one_global_order_on_every_broker(ctx, cluster):
    a, b, c = cluster(3)
    peers = [peer(ctx, x, name) for x, name in ((a, "ann"), (b, "ben"), (c, "cid"))]
    sent = []
    for round_ in range(5):
        for p in peers:
            sent.append(ok(p.broadcast(f"{p.user} {round_}"))["seq"])
    assert len(set(sent)) == len(sent)
    for p in peers:
        p.wait_for(lambda p=p: sum(e.kind == "bcast" for e in p.events) >= len(sent), what="every broadcast")
    orders = [[(e.seq, e.text) for e in p.events if e.kind == "bcast"] for p in peers]
    assert orders[0] == orders[1] == orders[2]
    seqs = [e.seq for e in peers[0].events]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps
    assert sorted(s for s, _ in orders[0]) == sorted(sent)


def test_who_and_presence_cover_every_broker(ctx, cluster):
    a, b = cluster(2)
    alice = peer(ctx, a, "alice")
    bob = peer(ctx, b, "bob")
    alice.wait_event(lambda e: e.kind == "presence" and e.user == "bob" and e.event == "login")
    alice.wait_for(lambda: set(ok(alice.call("who"))["users"]) == {"alice", "bob"}, what="bob in alice's who")
    ok(bob.call("hide"))
    alice.wait_for(lambda: ok(alice.call("who"))["users"] == ["alice"], what="bob hidden from alice's who")
    ok(bob.call("appear"))
    ok(bob.call("logout"))
    alice.wait_event(lambda e: e.kind == "presence" and e.user == "bob" and e.event == "logout")
    assert "bob" in ok(alice.call("last", minutes=5))["users"]


def test_the_offline_mailbox_is_delivered_on_another_broker(ctx, cluster):
    a, b = cluster(2)
    alice = peer(ctx, a, "alice")
    bob = peer(ctx, b, "bob")
    ok(bob.call("logout"))
    ids = [ok(alice.send("bob", f"while you were away {i}"))["ids"]["bob"] for i in range(3)]
    later = peer(ctx, a, "bob", register=False)  # bob comes back on the other broker
    assert [x.id for x in later.wait_msgs(3)] == ids
    ok(later.ack_all())
    again = peer(ctx, b, "bob", register=False)
    ok(again.call("who"))  # a login's pushes leave before any later reply on the same connection
    assert again.msgs == []  # acked on A: gone on B too


def test_a_second_login_on_another_broker_replaces_the_first(ctx, cluster):
    a, b = cluster(2)
    first = peer(ctx, a, "alice")
    second = peer(ctx, b, "alice", register=False)
    first.wait_for(lambda: any(e.reason == "replaced" for e in first.ends), what="the end push")
    err(first.call("who"), "E_NOT_LOGGED_IN")
    watcher = peer(ctx, a, "bob")
    assert set(ok(watcher.call("who"))["users"]) == {"alice", "bob"}
    ok(second.call("who"))


def test_a_registration_is_known_to_every_broker_and_a_name_is_taken_once(ctx, cluster):
    a, b = cluster(2)
    ok(Peer(ctx, a).register("alice"))
    err(Peer(ctx, b).register("alice"), "E_USER_EXISTS")
    bob = peer(ctx, b, "bob")
    bob.wait_for(lambda: "ids" in (r := bob.send("alice", "welcome")) and r["status"] == "ok", what="alice known on B")
    alice = peer(ctx, b, "alice", register=False)
    assert alice.wait_msgs(1)[0].text == "welcome"


def test_kill_9_of_a_broker_under_load_loses_and_duplicates_nothing_acknowledged(ctx, cluster):
    a, b = cluster(2)
    sender = peer(ctx, a, "sam")
    reader = peer(ctx, b, "rita")
    watcher = peer(ctx, b, "walt")
    tried = [f"m{i}" for i in range(201)]
    for i, cid in enumerate(tried):  # requests in flight when the broker dies: some answered, some not
        sender.send_raw([b"send", msgspec.json.encode({"req": 10_000 + i, "id": cid, "to": ["rita"], "text": cid})])
    sender.wait_for(lambda: len(sender.replies) >= 20, what="the first replies")
    a.stop(kill=True)  # while the rest are in flight
    sender.pump(0.1)  # the replies that arrived before the kill
    acked = {cid for i, cid in enumerate(tried) if sender.replies.get(10_000 + i, {}).get("status") == "ok"}
    sender.close()
    watcher.wait_event(lambda e: e.kind == "presence" and e.user == "sam" and e.event == "lost", timeout=10)
    again = peer(ctx, b, "sam", register=False)  # the client fails over to B and retries every unanswered send
    for cid in tried:
        if cid not in acked:
            ok(again.send("rita", cid, cid=cid))
    reader.wait_for(lambda: len({x.cid for x in reader.msgs}) >= len(tried), what="every send")
    ok(reader.call("who"))  # (a duplicate would have been pushed by now: pushes precede this reply)
    cids = [x.cid for x in reader.msgs]
    assert sorted(cids) == sorted(tried), "each send stored once, the acknowledged ones among them"
    assert len(acked) >= 20


def test_a_broker_restarts_and_rejoins(ctx, cluster):
    a, b = cluster(2)
    alice = peer(ctx, a, "alice")
    bob = peer(ctx, b, "bob")
    ok(bob.broadcast("before"))
    a.restart(kill=True)
    alice.close()
    alice = peer(ctx, a, "alice", register=False)
    ok(alice.send("bob", "back again"))
    assert bob.wait_msgs(1)[0].text == "back again"
    seq = ok(bob.broadcast("after"))["seq"]
    alice.wait_event(lambda e: e.seq == seq and e.text == "after")
    history = ok(alice.call("history", after=0, limit=100))
    assert [e["text"] for e in history["events"] if e["kind"] == "bcast"] == ["before", "after"]


def test_a_store_that_lost_its_data_stops_every_broker(ctx, cluster, redis_server):
    (a,) = cluster(1)
    alice = peer(ctx, a, "alice")
    ok(alice.broadcast("kept until the store is wiped"))
    redis_server.client().flushall()
    assert a.proc is not None
    alice.wait_for(lambda: a.proc.poll() is not None, timeout=10, what="the broker to stop")
    assert a.proc.returncode == 3
    assert "lost this broker's event log" in a.log_text()
