"""Integration tests of chat-loadtest against a real broker subprocess: the CLI with --spawn-broker,
the Python API (prepare_accounts + run_load) against tests.harness.Broker, and the one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import zmq

from zmq_chat.loadtest.accounts import prepare_accounts
from zmq_chat.loadtest.connect import BrokerUnreachable, check_broker
from zmq_chat.loadtest.options import DEFAULT_PASSWORD, LoadOptions, user_names
from zmq_chat.loadtest.runner import run_load
from zmq_chat.loadtest.spawn import SpawnedBroker
from tests.harness import Broker, Peer, ok

CLI = [sys.executable, "-c", "import sys; from zmq_chat.loadtest.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


def _check_counts(kind: dict, private: bool) -> None:
    assert kind["sent"] > 0
    assert kind["sent"] == kind["acked"] + kind["failed"] + kind["unanswered"]
    assert kind["failed"] == sum(kind["errors"].values())
    assert kind["lost"] == 0
    assert kind["duplicated"] == 0
    assert kind["delivered"] == kind["expected"]
    if private:
        assert kind["expected"] == kind["acked"]
    lat = kind["latency"]
    assert lat["count"] == kind["delivered"] + kind["delivered_unacked"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]


@pytest.mark.timeout(45)
def test_cli_spawn_broker_short_run(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [*CLI, "--spawn-broker", "--clients", "6", "--duration", "2", "--processes", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=40, env=_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["lost"] == 0
    assert data["clients"] == 6 and data["logged_in"] == 6 and data["processes"] == 2
    assert data["subscribers"] == 6
    assert data["prepare"]["ready"] == 6
    assert data["login"]["ok"] == 6 and data["login"]["rate"] > 0 and data["login"]["latency"]["count"] == 6
    _check_counts(data["private"], private=True)
    _check_counts(data["broadcast"], private=False)
    # every acked broadcast reaches all 6 subscribers (all logged in before sending began)
    assert data["broadcast"]["expected"] == 6 * data["broadcast"]["acked"]
    assert data["private"]["throughput"] > 0 and data["broadcast"]["throughput"] > 0
    assert data["timeline"] and sum(s["private"] for s in data["timeline"]) == (
        data["private"]["delivered"] + data["private"]["delivered_unacked"])
    assert data["drained"] is True
    assert "messages" in proc.stdout and "lost" in proc.stdout


@pytest.mark.timeout(60)
def test_cli_compares_curve_against_null_in_one_run(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [*CLI, "--spawn-broker", "--clients", "4", "--duration", "1", "--processes", "1", "--broadcast-ratio", "0",
         "--compare-insecure", "--quiet", "--json", str(out)],
        capture_output=True, text=True, timeout=55, env=_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CURVE against NULL: private" in proc.stdout
    data = json.loads(out.read_text())
    assert data["options"]["insecure"] is False and data["null_run"]["options"]["insecure"] is True
    for run in (data, data["null_run"]):
        assert run["lost"] == 0 and run["private"]["acked"] > 0


def _mail_up_to_a_marker(ctx, broker: Broker, user: str) -> list[str]:
    """Log in as `user` (a load-test account), send it a marker and return the texts of the private
    messages pushed up to the marker (its mailbox before, oldest first, then the marker)."""
    peer = Peer(ctx, broker)
    try:
        ok(peer.login(user, DEFAULT_PASSWORD, subscribe=False))
        ok(peer.send(user, "marker"))
        peer.wait_for(lambda: any(x.text == "marker" for x in peer.msgs), what="the marker")
        return [x.text for x in peer.msgs]
    finally:
        peer.close()


@pytest.mark.timeout(45)
def test_api_prepare_and_run_against_harness_broker(tmp_path, ctx):
    broker = Broker(tmp_path / "data")
    try:
        key = broker.server_key
        prep = prepare_accounts("127.0.0.1", broker.port, 4, prefix="api", concurrency=4, server_key=key)
        assert prep.ok and prep.created == 4
        again = prepare_accounts("127.0.0.1", broker.port, 4, prefix="api", server_key=key)  # resumable: all exist
        assert again.ok and again.created == 0 and again.existed == 4
        snapshots = []
        options = LoadOptions(port=broker.port, clients=4, duration=1.5, processes=1, user_prefix="api",
                              rate=40, window=4, broadcast_ratio=0.5, size=60, seed=1, server_key=key)
        res = run_load(options, progress=snapshots.append)
        # the acks of the last deliveries left before the logouts: a marker sent to a user after
        # the run is the first private message its next login is given, not the run's tail
        for user in user_names("api", 4):
            assert _mail_up_to_a_marker(ctx, broker, user) == ["marker"], user
    finally:
        broker.stop()
    assert res.ok and res.logged_in == 4 and res.drained
    for kind in (res.private, res.broadcast):
        assert kind.sent > 0 and kind.sent == kind.acked + kind.failed + kind.unanswered
        assert kind.lost == 0 and kind.delivered == kind.expected
    assert res.broadcast.expected == 4 * res.broadcast.acked
    # rate mode: the pacing schedules at most rate x clients x duration sends (4 x 40/s x 1.5 s =
    # 240), each either sent or skipped (every window full); every send is in the timeline
    sent = res.private.sent + res.broadcast.sent
    assert options.rate is not None
    assert sent + res.skipped <= options.rate * options.clients * options.duration, (sent, res.skipped)
    assert sum(s.sent for s in res.timeline) == sent
    assert {s.phase for s in snapshots} >= {"login", "run", "done"}


@pytest.mark.timeout(60)
def test_spawned_broker_restart_keeps_its_temporary_store_and_key(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its temporary directories go
    made = lambda: sorted(tmp_path.glob("chat-loadtest-*"))  # noqa: E731
    broker = SpawnedBroker()
    assert made() == []  # nothing to leak before start()
    try:
        broker.start()
        assert made() == [broker.data_dir]
        key = broker.server_key
        assert prepare_accounts("127.0.0.1", broker.port, 1, prefix="rs", server_key=key).created == 1
        broker.restart()
        assert made() == [broker.data_dir] and broker.server_key == key
        again = prepare_accounts("127.0.0.1", broker.port, 1, prefix="rs", server_key=key)
        assert again.ok and again.existed == 1
    finally:
        broker.stop()
    assert made() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(20)
def test_unreachable_broker_is_one_line_exit_2(tmp_path):
    began = time.monotonic()
    key = zmq.curve_keypair()[0].decode()
    proc = subprocess.run([*CLI, "--port", str(_free_port()), "--clients", "2", "--duration", "1", f"--server-key={key}"],
                          capture_output=True, text=True, timeout=15, env=_env(), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no chat broker answered" in lines[0], proc.stderr
    assert time.monotonic() - began < 10


@pytest.mark.timeout(20)
@pytest.mark.parametrize("body", [
    b'{"req": %d, "status": "ok", "broker": "not-chat"}',  # a malformed hello reply
    b'{"req": %d, "status": "ok", "version": 1, "broker": "other", "max_message_chars": 9,'
    b' "min_password_chars": 8, "curve": false}',  # a well-formed hello reply of another program
])
def test_a_wrong_hello_reply_is_not_a_chat_broker_at_once(ctx, body):
    # the check stops at the answer: the message says so, rather than "no chat broker answered"
    # after the whole timeout
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer() -> None:
        if router.poll(10_000):
            rid, _kind, hello = router.recv_multipart()
            router.send_multipart([rid, b"reply", body % json.loads(hello)["req"]])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port} is not a chat broker"):
            check_broker("127.0.0.1", port, timeout=15)
    finally:
        thread.join()
        router.close()


@pytest.mark.timeout(20)
def test_no_broker_key_is_one_line_exit_2(tmp_path):
    env = {**_env(), "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("CHAT_SERVER_KEY", None)
    proc = subprocess.run([*CLI, "--port", str(_free_port()), "--clients", "2"],
                          capture_output=True, text=True, timeout=15, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--server-key" in lines[0], proc.stderr


@pytest.mark.timeout(20)
@pytest.mark.parametrize("args, words", [
    (["--clients", "0"], "--clients"),
    (["--broadcast-ratio", "2"], "--broadcast-ratio"),
    (["--duration", "abc"], "--duration"),
    (["--window", "0"], "--window"),
    (["--user-prefix", "no-dash"], "--user-prefix"),
    (["--bogus"], "unrecognized"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, args, words):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=15, env=_env(), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr
