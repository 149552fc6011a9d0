"""Integration: heartbeat and idle timeouts, shutdown notice, malformed input while others chat,
mailbox flow control (real broker subprocesses with short flags)."""

from __future__ import annotations

import zmq
import pytest

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
        event = None
        for _ in range(60):
            ok(watcher.call("ping"))
            watcher.pump(0.1)
            event = next((e for e in watcher.events if e.user == silent.user and e.event == "lost"), None)
            if event:
                break
        assert event is not None, "no 'lost' presence event"
        end = silent.wait_for(lambda: silent.ends and silent.ends[0])
        assert end.reason == "heartbeat_timeout"
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


@pytest.mark.parametrize("frames, code", [
    ([b"who"], "E_FRAMES"),
    ([b"who", b"{}", b"extra"], "E_FRAMES"),
    ([b"nonsense", b'{"req": 5}'], "E_UNKNOWN_TYPE"),
    ([b"send", b"\xff\xfe garbage"], "E_BAD_JSON"),
    ([b"send", b"[1, 2]"], "E_BAD_FIELD"),
    ([b"last", b'{"req": 6, "minutes": "ten"}'], "E_BAD_FIELD"),
    ([b"send", b'{"req": 7, "id": "x", "to": "bob", "text": "hi"}'], "E_BAD_FIELD"),
    ([b"login", b'{"req": 8}'], "E_BAD_FIELD"),
])
def test_malformed_requests_get_error_replies_while_others_chat(broker, peers, names, frames, code):
    a = new_user(peers, broker, names)
    c = new_user(peers, broker, names)
    bad = peers(broker)
    bad.send_raw(frames)
    reply = bad.wait_for(lambda: next(iter(bad.replies.values()), None), what="error reply")
    assert reply["status"] == "error" and reply["code"] == code, reply
    if b'"req"' in frames[-1]:
        assert isinstance(reply["req"], int)
    ok(a.send(c.user, "still here"))
    assert c.wait_msgs(1)[0].text == "still here"


def test_oversize_frame_disconnects_only_its_sender(broker, peers, names, ctx):
    a = new_user(peers, broker, names)
    c = new_user(peers, broker, names)
    giant = ctx.socket(zmq.DEALER)
    giant.setsockopt(zmq.LINGER, 0)
    giant.connect(f"tcp://127.0.0.1:{broker.port}")
    try:
        giant.send_multipart([b"send", b"x" * (300 * 1024)])
        ok(a.send(c.user, "after the giant"))
        assert c.wait_msgs(1)[0].text == "after the giant"
        assert broker.proc.poll() is None
    finally:
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
        ok(r2.call("ping"))
        r2.pump(0.3)
        assert len(r2.msgs) == 1000  # the window is full until an ack
        ok(r2.ack_all())
        msgs = r2.wait_msgs(1100, timeout=10)
        assert [x.text for x in msgs] == [f"m{i}" for i in range(1100)]
    finally:
        b.stop()
