"""The raw ZMTP peer (tests/zmtp.py) speaks real ZMTP 3.0 / CURVE to libzmq sockets."""

from __future__ import annotations

import time

import pytest
import zmq
from zmq.auth.thread import ThreadAuthenticator

from tests.zmtp import HandshakeFailed, ZmtpPeer, raw_to_z85, z85_to_raw

HOST = "127.0.0.1"


@pytest.fixture
def bound(ctx):
    """bound(type, **sockopts) -> (socket, port); sockets are closed with linger 0."""
    made = []

    def make(kind, **opts):
        s = ctx.socket(kind)
        s.linger = 0
        for name, value in opts.items():
            s.setsockopt(getattr(zmq, name.upper()), value)
        made.append(s)
        return s, s.bind_to_random_port(f"tcp://{HOST}")

    yield make
    for s in made:
        s.close(linger=0)


@pytest.fixture
def peers():
    made = []

    def make(port, **kw):
        p = ZmtpPeer(HOST, port, timeout=kw.pop("timeout", 3.0), **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def recv(sock, timeout_ms=2000):
    assert sock.poll(timeout_ms), f"nothing received within {timeout_ms} ms"
    return sock.recv_multipart()


def curve_server_opts():
    public, secret = zmq.curve_keypair()
    return z85_to_raw(public), {"curve_server": 1, "curve_secretkey": secret}


def test_z85_helpers_roundtrip():
    public, secret = zmq.curve_keypair()
    assert len(z85_to_raw(public)) == 32
    assert raw_to_z85(z85_to_raw(secret)) == secret
    assert z85_to_raw(public.decode()) == z85_to_raw(public)


def test_null_dealer_roundtrip(bound, peers):
    router, port = bound(zmq.ROUTER)
    peer = peers(port, routing_id=b"peer-1")
    peer.handshake()
    assert peer.server_metadata["Socket-Type"] == b"ROUTER"
    peer.send_multipart([b"f1", b"f2"])
    assert recv(router) == [b"peer-1", b"f1", b"f2"]
    router.send_multipart([b"peer-1", b"r1", b"r2"])
    assert peer.recv_multipart(2.0) == [b"r1", b"r2"]


def test_curve_dealer_roundtrip(bound, peers):
    server_key, opts = curve_server_opts()
    router, port = bound(zmq.ROUTER, **opts)
    client_public, client_secret = zmq.curve_keypair()
    peer = peers(port, mechanism="CURVE", routing_id=b"c-1", server_key=server_key,
                 public_key=z85_to_raw(client_public), secret_key=z85_to_raw(client_secret))
    peer.handshake()
    assert peer.server_metadata["Socket-Type"] == b"ROUTER"
    peer.send_multipart([b"a", b"bb" * 100, b"c" * 300])
    assert recv(router) == [b"c-1", b"a", b"bb" * 100, b"c" * 300]
    router.send_multipart([b"c-1", b"reply", b"x" * 1000])
    assert peer.recv_multipart(2.0) == [b"reply", b"x" * 1000]
    # the short nonces keep increasing across messages in both directions
    peer.send_multipart([b"again"])
    assert recv(router) == [b"c-1", b"again"]
    router.send_multipart([b"c-1", b"again"])
    assert peer.recv_multipart(2.0) == [b"again"]


def test_curve_wrong_server_key_fails_handshake(bound, peers):
    _, opts = curve_server_opts()
    router, port = bound(zmq.ROUTER, **opts)
    wrong, _ = zmq.curve_keypair()
    peer = peers(port, mechanism="CURVE", server_key=z85_to_raw(wrong), timeout=2.0)
    with pytest.raises(HandshakeFailed, match="closed|reset"):  # closed by libzmq, not timed out
        peer.handshake()
    assert not peer.alive()
    assert router.poll(100) == 0


def test_curve_zap_denial_fails_handshake(ctx, bound, peers, tmp_path):
    auth = ThreadAuthenticator(ctx)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=str(tmp_path))  # no keys allowed
        server_key, opts = curve_server_opts()
        router, port = bound(zmq.ROUTER, **opts)
        peer = peers(port, mechanism="CURVE", server_key=server_key, timeout=2.0)
        with pytest.raises(HandshakeFailed, match="ERROR: 400|closed|reset"):
            peer.handshake()
    finally:
        auth.stop()


@pytest.mark.parametrize("mechanism", ["NULL", "CURVE"])
def test_sub_subscribes_to_xpub(bound, peers, mechanism):
    kw, opts = {}, {"xpub_verbose": 1}
    if mechanism == "CURVE":
        kw["server_key"], curve = curve_server_opts()
        opts.update(curve)
    xpub, port = bound(zmq.XPUB, **opts)
    peer = peers(port, mechanism=mechanism, socket_type="SUB", **kw)
    peer.handshake()
    assert peer.server_metadata["Socket-Type"] == b"XPUB"
    peer.subscribe(b"t")
    assert recv(xpub) == [b"\x01t"]
    xpub.send_multipart([b"u", b"filtered out"])
    xpub.send_multipart([b"t", b"x"])
    assert peer.recv_multipart(2.0) == [b"t", b"x"]


def test_endless_more_frames_are_withheld_by_libzmq(bound, peers):
    router, port = bound(zmq.ROUTER)
    peer = peers(port, routing_id=b"more")
    peer.handshake()
    chunk = b"m" * 10240
    for _ in range(50):
        peer.send_frame(chunk, more=True)
    assert router.poll(200) == 0  # libzmq delivers nothing until the last frame
    peer.send_frame(b"last", more=False)
    msg = recv(router)
    assert len(msg) == 52
    assert msg[0] == b"more" and msg[1:51] == [chunk] * 50 and msg[51] == b"last"


def test_maxmsgsize_oversized_header_disconnects(bound, peers):
    router, port = bound(zmq.ROUTER, maxmsgsize=1024)
    peer = peers(port, routing_id=b"big")
    peer.handshake()
    peer.send_frame(b"ok")
    assert recv(router) == [b"big", b"ok"]
    peer.send_frame_header(1 << 30)  # announce 1 GiB, send no body
    assert peer.wait_closed(2.0), "libzmq kept the connection after an oversized header"
    assert router.poll(100) == 0


def test_garbage_greeting_disconnects(bound, peers):
    router, port = bound(zmq.ROUTER)
    peer = peers(port)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64)
    assert peer.wait_closed(2.0)


def test_curve_claimed_key_without_its_secret_is_rejected(bound, peers):
    server_key, opts = curve_server_opts()
    router, port = bound(zmq.ROUTER, **opts)
    victim_public, _ = zmq.curve_keypair()
    peer = peers(port, mechanism="CURVE", server_key=server_key,
                 public_key=z85_to_raw(victim_public), timeout=2.0)
    with pytest.raises(HandshakeFailed, match="closed"):
        peer.handshake()  # the vouch box does not open with the claimed key


@pytest.mark.parametrize("mechanism", ["NULL", "CURVE"])
def test_heartbeat_pings_are_answered(bound, peers, mechanism):
    kw, opts = {}, {"heartbeat_ivl": 50, "heartbeat_timeout": 150}
    if mechanism == "CURVE":
        kw["server_key"], curve = curve_server_opts()
        opts.update(curve)
    router, port = bound(zmq.ROUTER, **opts)
    peer = peers(port, mechanism=mechanism, routing_id=b"hb", **kw)
    peer.handshake()
    pongs = []
    send = peer._send_message

    def counting(flags, data):
        if data.startswith(b"\x04PONG"):
            pongs.append(data)
        send(flags, data)

    peer._send_message = counting
    # recv_multipart answers PING with PONG. Unanswered, the first PING would have cut the
    # connection (heartbeat_timeout 150 ms) before the sixth (heartbeat_ivl 50 ms) is sent.
    deadline = time.monotonic() + 5.0
    while len(pongs) < 6:
        assert time.monotonic() < deadline, f"{len(pongs)} PINGs in 5 s"
        with pytest.raises(TimeoutError):
            peer.recv_multipart(0.03)
    assert peer.alive()
    peer.send_multipart([b"still here"])
    assert recv(router) == [b"hb", b"still here"]


def test_stalled_peers_are_cut_by_handshake_ivl_and_heartbeat(bound, peers):
    _, port = bound(zmq.ROUTER, handshake_ivl=200)
    greeted_only = peers(port)
    greeted_only.greet()  # then never sends READY
    _, port = bound(zmq.ROUTER, heartbeat_ivl=50, heartbeat_timeout=150)
    mid_frame = peers(port)
    mid_frame.handshake()
    mid_frame.send_frame_header(100)
    mid_frame.send_raw(b"x" * 50)  # half a frame, then silence (no PONG either)
    assert greeted_only.wait_closed(2.0) and mid_frame.wait_closed(2.0)


def test_maxmsgsize_is_per_frame_and_counts_curve_overhead(bound, peers):
    router, port = bound(zmq.ROUTER, maxmsgsize=1024)
    peer = peers(port, routing_id=b"many")
    peer.handshake()
    peer.send_multipart([b"f" * 1000] * 100)  # 100 kB message, every frame under the limit
    assert len(recv(router)) == 101
    server_key, opts = curve_server_opts()
    router, port = bound(zmq.ROUTER, maxmsgsize=1024, **opts)
    peer = peers(port, mechanism="CURVE", routing_id=b"c", server_key=server_key)
    peer.handshake()
    peer.send_frame(b"x" * 991)  # 991 + 33 bytes of MESSAGE overhead = 1024: accepted
    assert recv(router) == [b"c", b"x" * 991]
    peer.send_frame(b"x" * 992)  # outer frame 1025 bytes: connection dropped
    assert peer.wait_closed(2.0)
    assert router.poll(100) == 0
