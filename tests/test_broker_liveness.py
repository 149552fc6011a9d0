"""Integration: heartbeat and idle timeouts, shutdown notice, malformed input while others chat,
mailbox flow control (real broker subprocesses with short flags)."""

from __future__ import annotations

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmq_chat.protocol import messages as m
from tests.harness import Broker, err, ok

pytestmark = pytest.mark.timeout(60)


def new_user(peers, broker, names, login=True):
    p = peers(broker)
    name = names()
    ok(p.register(name))
    if login:
        ok(p.login(name))
    return p


def test_heartbeat_timeout_ends_a_silent_session_and_publishes_it(tmp_path, peers, names):
    b = Broker(tmp_path, "--heartbeat-timeout", "1")
    try:
        watcher = new_user(peers, b, names)
        silent = new_user(peers, b, names)
        # The watcher keeps pinging; the silent one says nothing.
        def lost():
            ok(watcher.call("ping"))
            return next((e for e in watcher.events if e.user == silent.user and e.event == "lost"), None)
        event = watcher.wait_for(lost, timeout=10, what="the 'lost' presence event")
        assert (event.kind, event.user, event.event) == ("presence", silent.user, "lost")
        end = silent.wait_for(lambda: silent.ends and silent.ends[0])
        assert end == m.End("heartbeat_timeout", "no heartbeat from your client; session ended")
        err(silent.call("who"), "E_NOT_LOGGED_IN")
        assert "heartbeat timeout user=" + silent.user in b.log_text()
    finally:
        b.stop()


def test_idle_timeout_logs_out_with_a_notice(tmp_path, peers, names):
    b = Broker(tmp_path, "--idle-timeout", "0.02")  # 1.2 s
    try:
        watcher = new_user(peers, b, names)
        idle = new_user(peers, b, names)
        # Pings keep the connection alive but are not commands; the watcher's `status` is one (its
        # own session must stay alive: the PUB serves live sessions only).
        def ended():
            idle.call("ping")
            watcher.call("status")
            return idle.ends and idle.ends[0]
        end = idle.wait_for(ended, timeout=8, what="idle timeout")
        assert end.reason == "idle_timeout" and "minutes" in end.message
        watcher.wait_event(lambda e: e.user == idle.user and e.event == "timeout", timeout=5)
    finally:
        b.stop()


def test_shutdown_tells_clients_and_exits_0(tmp_path, peers, names):
    b = Broker(tmp_path)
    p = new_user(peers, b, names)
    assert b.stop() == 0
    end = p.wait_for(lambda: p.ends and p.ends[0], what="shutdown notice")
    assert end.reason == "shutdown"
    assert "shutting down" in b.log_text()


@pytest.mark.parametrize("frames, code, req", [
    ([b"who"], "E_FRAMES", None),
    ([b"who", b"{}", b"extra"], "E_FRAMES", None),
    ([b"nonsense", b'{"req": 5}'], "E_UNKNOWN_TYPE", 5),
    ([b"send", b"\xff\xfe garbage"], "E_BAD_JSON", None),
    ([b"send", b"[1, 2]"], "E_BAD_FIELD", None),
    ([b"last", b'{"req": 6, "minutes": "ten"}'], "E_BAD_FIELD", 6),
    ([b"send", b'{"req": 7, "id": "x", "to": "bob", "text": "hi"}'], "E_BAD_FIELD", 7),
    ([b"login", b'{"req": 8}'], "E_BAD_FIELD", 8),
])
def test_malformed_requests_get_error_replies_while_others_chat(broker, peers, names, frames, code, req):
    a = new_user(peers, broker, names)
    c = new_user(peers, broker, names)
    bad = peers(broker)
    bad.send_raw(frames)
    reply = bad.wait_for(lambda: next(iter(bad.replies.values()), None), what="error reply")
    assert (reply["status"], reply["code"], reply["req"]) == ("error", code, req), reply
    assert list(bad.replies) == [req]  # one reply
    ok(a.send(c.user, "still here"))
    assert c.wait_msgs(1)[0].text == "still here"


def test_oversize_frame_disconnects_only_its_sender(broker, peers, names, ctx):
    a = new_user(peers, broker, names)
    c = new_user(peers, broker, names)
    giant = ctx.socket(zmq.DEALER)
    giant.setsockopt(zmq.LINGER, 0)
    giant.curve_serverkey = broker.server_key
    giant.curve_publickey, giant.curve_secretkey = zmq.curve_keypair()
    monitor = giant.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    giant.connect(f"tcp://127.0.0.1:{broker.port}")
    try:
        giant.send_multipart([b"send", b"x" * (300 * 1024)])  # over the ROUTER's 64 KiB ZMQ_MAXMSGSIZE
        events = []
        while zmq.EVENT_DISCONNECTED not in events:
            assert monitor.poll(5000), f"the broker kept the giant's connection (events {events})"
            events.append(recv_monitor_message(monitor)["event"])
        assert events[:2] == [zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED]
        ok(a.send(c.user, "after the giant"))
        assert [x.text for x in c.wait_msgs(1)] == ["after the giant"]
        assert broker.proc.poll() is None
    finally:
        giant.disable_monitor()
        monitor.close(0)
        giant.close(0)


def test_mailbox_is_sent_in_windows_of_unacknowledged_messages(tmp_path, peers, names):
    b = Broker(tmp_path)
    try:
        a = new_user(peers, b, names)
        r = new_user(peers, b, names)
        ok(r.call("logout"))
        for i in range(1100):
            ok(a.send(r.user, f"m{i}"))
        r2 = peers(b)
        ok(r2.login(r.user))
        r2.wait_msgs(1000, timeout=10)
        ok(r2.call("ping"))  # a barrier: a push sent before this reply would be here
        assert [x.text for x in r2.msgs] == [f"m{i}" for i in range(1000)]  # the window is full until an ack
        ok(r2.ack_all())
        msgs = r2.wait_msgs(1100, timeout=10)
        assert [x.text for x in msgs] == [f"m{i}" for i in range(1100)]
    finally:
        b.stop()
