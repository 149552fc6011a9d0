"""Integration tests of docs/security.md on real sockets: a real broker subprocess, libzmq peers and
raw ZMTP peers (tests/zmtp.py) that misbehave on purpose. Every wait has a deadline."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import zmq

from tests.harness import Broker, Peer, err, ok, rss
from tests.zmtp import HandshakeFailed, PeerClosed, ZmtpPeer, z85_to_raw

pytestmark = pytest.mark.timeout(90)

MEMORY_BOUND = 64 * 1024 * 1024
"""One connection may grow the broker's RSS by at most this much (issue #7)."""


def logged_in(peers, broker, names, **kw) -> Peer:
    p = peers(broker, **kw)
    name = names()
    ok(p.register(name))
    ok(p.login(name))
    return p


def raw(broker: Broker, port: int | None = None, **kw) -> ZmtpPeer:
    """A raw CURVE peer of `broker` (a fresh key pair unless given)."""
    return ZmtpPeer("127.0.0.1", port or broker.port, mechanism="CURVE",
                    server_key=z85_to_raw(broker.server_key), **kw)


def nothing_arrives(sock: zmq.Socket, seconds: float) -> bool:
    """True when nothing can be read from `sock` within `seconds` (a deadline poll)."""
    return sock.poll(seconds * 1000) == 0


# -- encryption and sessions bound to keys ----------------------------------------------------------

def test_a_stolen_routing_id_cannot_act_as_the_session(broker, peers, names, ctx):
    victim, sender = logged_in(peers, broker, names), logged_in(peers, broker, names)
    rid = victim.dealer.getsockopt(zmq.ROUTING_ID)
    thief = peers(broker, routing_id=rid)  # its own key pair, the victim's routing id
    thief.send_raw([b"ack", b'{"req": 1, "ids": [1, 2, 3]}'])
    thief.send_raw([b"who", b'{"req": 2}'])
    for i in range(5):
        ok(sender.send(victim.user, f"secret {i}"))
    got = victim.wait_msgs(5)
    assert [msg.text for msg in got] == [f"secret {i}" for i in range(5)]
    assert nothing_arrives(thief.dealer, 0.5)  # no reply, no push: the id stays the victim's
    # The victim's connection drops; the thief takes the routing id before the victim is back.
    victim.dealer.close(0)
    thief2, reply = take_routing_id(peers, broker, rid, "who")
    err(reply, "E_NOT_LOGGED_IN")
    err(thief2.call("ack", ids=[m.id for m in got]), "E_NOT_LOGGED_IN")
    ok(sender.send(victim.user, "while you were away"))
    assert not thief2.msgs and nothing_arrives(thief2.dealer, 0.5)
    thief2.close()
    back, reply = take_routing_id(peers, broker, rid, "status", keypair=(victim.public, victim.secret))
    assert ok(reply)["user"] == victim.user
    texts = [m.text for m in back.wait_for(lambda: len(back.msgs) >= 6 and back.msgs, timeout=10, what="pushes")]
    assert "while you were away" in texts  # held, then pushed to the key that owns the session


def take_routing_id(peers, broker, rid: bytes, kind: str, **kw) -> tuple[Peer, dict]:
    """Connect with routing id `rid` until the broker has let the previous holder go (before
    that, libzmq ignores a duplicate id); returns the peer and its reply to `kind`."""
    deadline = time.monotonic() + 15
    while True:
        p = peers(broker, routing_id=rid, **kw)
        try:
            return p, p.call(kind, timeout=1.0)
        except AssertionError:
            p.close()
            assert time.monotonic() < deadline, "the routing id was never released"


def test_the_pub_serves_only_live_sessions(broker, peers, names, ctx):
    speaker = logged_in(peers, broker, names)
    stranger = peers(broker)  # a key with no session
    stranger.subscribe(wait=False)
    null_sub = ctx.socket(zmq.SUB)
    null_sub.setsockopt(zmq.LINGER, 0)
    null_sub.setsockopt(zmq.SUBSCRIBE, b"")
    null_sub.connect(f"tcp://127.0.0.1:{broker.pub_port}")
    leaver = logged_in(peers, broker, names)
    ok(leaver.call("logout"))  # its SUB is cut with the reply, and ZAP refuses it afterwards
    for i in range(3):
        ok(speaker.broadcast(f"only for sessions {i}"))
    speaker.wait_event(lambda e: e.text == "only for sessions 2")
    assert nothing_arrives(null_sub, 0.3)
    stranger.pump(0.3)
    leaver.pump(0.3)
    assert not stranger.events and stranger.welcome is None
    assert not any(e.text.startswith("only for sessions") for e in leaver.events)
    null_sub.close(0)


def test_a_null_client_is_refused(broker, ctx):
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{broker.port}")
    dealer.send_multipart([b"hello", b'{"req": 1, "version": 1}'])
    assert nothing_arrives(dealer, 1.0)
    with pytest.raises(HandshakeFailed):
        with ZmtpPeer("127.0.0.1", broker.port, mechanism="NULL") as peer:
            peer.handshake()
            peer.recv_multipart(timeout=2.0)  # the broker closes a NULL connection: no READY or no data


def test_the_key_endpoint_answers_in_clear(broker, ctx):
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{broker.key_port}")
    dealer.send_multipart([b"key", b"{}"])
    assert dealer.poll(5000)
    kind, body = dealer.recv_multipart()
    info = json.loads(body)
    assert kind == b"key" and info["curve"] is True and info["public_key"] == broker.server_key.decode()
    assert info["fingerprint"].startswith("SHA256:") and info["port"] == broker.port


# -- memory one connection can cost -----------------------------------------------------------------

def test_endless_more_frames_are_cut_before_64_mib(broker, peers, names):
    canary = logged_in(peers, broker, names)
    base = rss(broker.proc.pid)
    peak = base
    sent = 0
    with raw(broker) as attacker:
        attacker.handshake()
        frame = b"x" * (60 * 1024)
        try:
            while sent < 1024 * 1024 * 1024:
                attacker.send_frame(frame, more=True)
                sent += len(frame)
                if sent % (4 * 1024 * 1024) < len(frame):
                    peak = max(peak, rss(broker.proc.pid))
        except (BrokenPipeError, ConnectionResetError, PeerClosed, TimeoutError):
            pass  # cut off (a reset, or the broker no longer reading before the close)
        assert attacker.wait_closed(10), f"still connected after {sent} bytes"
    peak = max(peak, rss(broker.proc.pid))
    assert peak - base < MEMORY_BOUND, (sent, peak - base)
    broker.wait_log("bytes buffered without a complete message")
    ok(canary.call("who"))  # the broker kept serving


def test_a_huge_frame_on_the_pub_is_refused_at_its_header(broker, peers, names):
    me = logged_in(peers, broker, names)
    base = rss(broker.proc.pid)
    with raw(broker, broker.pub_port, socket_type="SUB", public_key=z85_to_raw(me.public),
             secret_key=z85_to_raw(me.secret)) as attacker:
        attacker.handshake()  # admitted: the key has a session
        attacker.send_raw(ZmtpPeer.frame_header(1 << 30, 0x02))
        try:
            attacker.send_raw(b"\x01" * (8 * 1024 * 1024))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        assert attacker.wait_closed(10)
    assert rss(broker.proc.pid) - base < MEMORY_BOUND
    ok(me.call("who"))


def test_a_peer_that_never_reads_costs_a_few_mib(tmp_path, peers, names):
    b = Broker(tmp_path, "--max-message-chars", "5000")
    try:
        speaker = logged_in(peers, b, names)
        for i in range(200):  # about 1 MB of history
            ok(speaker.broadcast(f"{i:04d} " + "y" * 4990))
        name = names()
        ok(speaker.register(name))
        with raw(b) as reader:
            reader.handshake()
            reader.send_multipart([b"login", json.dumps({"req": 1, "version": 1, "user": name,
                                                          "password": "correct horse"}).encode()])
            assert json.loads(reader.recv_multipart(timeout=10)[1])["status"] == "ok"
            base = rss(b.proc.pid)
            for i in range(300):  # the attack sent 60 such requests; this one never reads
                reader.send_multipart([b"history", f'{{"req": {100 + i}, "after": 0}}'.encode()])
            peak = base
            for _ in range(10):  # round trips of another client: the broker has read all 300 by then
                ok(speaker.call("who"))
                peak = max(peak, rss(b.proc.pid))
            assert peak - base < 16 * 1024 * 1024, peak - base
            deadline = time.monotonic() + 20
            codes = []
            while len(codes) < 300 and time.monotonic() < deadline:
                frames = reader.recv_multipart(timeout=10)
                if frames[0] == b"reply":
                    codes.append(json.loads(frames[1]).get("code", "ok"))
        assert len(codes) == 300 and codes.count("E_OVERLOADED") > 250, codes.count("ok")
    finally:
        b.stop()


# -- connection limits ------------------------------------------------------------------------------

def test_connections_per_ip_are_capped_at_the_handshake(tmp_path):
    b = Broker(tmp_path, "--max-connections-per-ip", "3")
    held = []
    try:
        for _ in range(3):
            p = raw(b)
            p.handshake()
            held.append(p)
        extra = raw(b)
        with pytest.raises(HandshakeFailed) as info:
            extra.handshake()
        assert "400" in str(info.value) or "closed" in str(info.value)
        extra.close()
        held.pop().close()
        again = raw(b)
        deadline = time.monotonic() + 10
        while True:  # once the monitor reported the close, a new connection is admitted
            try:
                again.handshake()
                break
            except HandshakeFailed:
                assert time.monotonic() < deadline
                again.close()
                again = raw(b)
        held.append(again)
    finally:
        for p in held:
            p.close()
        b.stop()


def test_silent_and_half_sent_connections_are_cut(tmp_path):
    b = Broker(tmp_path, "--login-timeout", "1")
    try:
        silent, half = raw(b), raw(b)
        silent.handshake()
        half.handshake()
        half.send_raw(ZmtpPeer.frame_header(40_000, 0x02) + b"z" * 1000)  # and never the rest
        assert silent.wait_closed(10) and half.wait_closed(10)
        tcp = socket.create_connection(("127.0.0.1", b.port))  # not even a greeting
        tcp.settimeout(15)
        assert tcp.recv(1024) is not None  # the handshake interval ends it (read returns b"" or data)
        tcp.close()
    finally:
        b.stop()


# -- the store on disk ------------------------------------------------------------------------------

def test_the_data_dir_is_private_and_a_readable_one_is_refused(tmp_path):
    data = tmp_path / "data"
    b = Broker(data)
    b.stop()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("chat.sqlite3", "broker.key_secret"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    os.chmod(data, 0o755)
    os.chmod(data / "chat.sqlite3", 0o644)
    cmd = [sys.executable, "-m", "zmq_chat.broker", "--bind", "127.0.0.1", "--port", "0", "--data-dir", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "readable by other users" in proc.stderr and "chmod 700" in proc.stderr
    printed = subprocess.run([*cmd, "--allow-readable-store", "--print-key"], capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0
    assert b.server_key.decode() in printed.stdout and "fingerprint: SHA256:" in printed.stdout
    assert "secret" not in printed.stdout.lower()


def test_every_socket_enforces_its_zap_domain_and_fails_closed(tmp_path):
    from zmq_chat.broker.config import Config
    from zmq_chat.broker.keys import load_or_create
    from zmq_chat.broker.sockets import open_sockets

    keys, _ = load_or_create(tmp_path)
    ctx = zmq.Context()
    socks = open_sockets(ctx, Config(port=0, bind="127.0.0.1", data_dir=str(tmp_path)), keys)
    client = ctx.socket(zmq.DEALER)
    try:
        for sock in (socks.router, socks.pub, socks.key):
            assert sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1 and sock.getsockopt_string(zmq.ZAP_DOMAIN)
        assert socks.router.getsockopt(zmq.CURVE_SERVER) == 1 and socks.pub.getsockopt(zmq.CURVE_SERVER) == 1
        socks.zap.close(0)  # no authenticator answers any more
        public, secret = zmq.curve_keypair()
        client.setsockopt(zmq.LINGER, 0)
        client.curve_serverkey, client.curve_publickey, client.curve_secretkey = keys.public, public, secret
        client.connect(socks.endpoints["router"])
        client.send_multipart([b"hello", b'{"req": 1, "version": 1}'])
        assert nothing_arrives(socks.router, 1.0)  # refused, not admitted: ZAP fails closed
    finally:
        client.close(0)
        for sock in socks.all():
            if not sock.closed:
                sock.close(0)
        ctx.term()


def test_insecure_says_so_at_every_start(tmp_path):
    b = Broker(tmp_path, "--insecure")
    try:
        b.wait_log("INSECURE")
    finally:
        b.stop()


def test_a_refused_subscription_never_delivers_anything(broker, peers, names, ctx):
    speaker, nosy = logged_in(peers, broker, names), logged_in(peers, broker, names)
    sub = nosy._socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")  # everything: refused (the welcomes of others would leak)
    sub.connect(f"tcp://127.0.0.1:{broker.pub_port}")
    other = logged_in(peers, broker, names)  # its welcome is published while nosy's SUB is up
    ok(speaker.broadcast("not for the empty prefix"))
    speaker.wait_event(lambda e: e.text == "not for the empty prefix")
    assert other.welcome is not None
    assert nothing_arrives(sub, 0.5)  # XPUB_MANUAL: the subscription was never applied
    sub.close(0)


def test_a_key_request_of_many_frames_gets_its_connection_cut(broker):
    with ZmtpPeer("127.0.0.1", broker.key_port, mechanism="NULL") as peer:
        peer.handshake()
        for _ in range(10):
            peer.send_frame(b"key", more=True)
        peer.send_frame(b"{}")
        assert peer.wait_closed(10)
