"""The client's broker-key pinning (client.trust, client.connection), on real sockets against real
broker subprocesses: trust on first use, a refused first use, a changed key refused loudly, a wrong
--server-key, the other mode (CURVE / --insecure) both ways, a lying or garbled key endpoint,
CHAT_SERVER_KEY, and the promise that every failure is a one-line ConnectError within 5 s.

The asyncio Connection API is driven directly with asyncio.run; every Connection gets its own
known-brokers file under tmp_path, so no test touches the user's config. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pexpect
import pytest
import zmq

from zmq_chat.client.connection import Connection
from zmq_chat.client.errors import ConnectError
from zmq_chat.client.trust import KeyMismatch, KnownBrokers, key_fingerprint
from tests.harness import Broker, FakeRouter

CONNECT_DEADLINE = 10.0
"""Seconds asyncio.wait_for gives a whole connect(): a hang fails the test instead of blocking it."""
PROMISED = 5.0
"""The issue's promise: a clear one-line error within 5 s, never a hang."""


# ---- fixtures and helpers -----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    """A CHAT_SERVER_KEY in the developer's environment would bypass everything tested here."""
    monkeypatch.delenv("CHAT_SERVER_KEY", raising=False)


@pytest.fixture(scope="module")
def insecure_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("insecure-data"), "--insecure")
    yield b
    b.stop()


def addr(broker: Broker) -> str:
    return f"127.0.0.1:{broker.port}"


async def accept(address: str, fp: str) -> bool:
    return True


async def refuse_if_asked(address: str, fp: str) -> bool:
    pytest.fail(f"the trust prompt was asked ({address}, {fp}) although the key is known")


def connect_ok(make: Callable[[], Connection]) -> tuple[Connection, dict]:
    """Build a Connection (inside the loop) and connect it; closes it (linger=False) in any case."""
    async def run() -> tuple[Connection, dict]:
        conn = make()
        try:
            hello = await asyncio.wait_for(conn.connect(), CONNECT_DEADLINE)
            return conn, hello
        finally:
            await conn.close(linger=False)
    return asyncio.run(run())


def connect_fails(make: Callable[[], Connection]) -> ConnectError:
    """Connect, expecting a ConnectError; asserts the promise of item 8: it comes within 5 s of
    calling connect() and str(exc) is one line. Returns the exception."""
    async def run() -> tuple[ConnectError | None, float, dict | None]:
        conn = make()
        try:
            start = time.monotonic()
            try:
                hello = await asyncio.wait_for(conn.connect(), CONNECT_DEADLINE)
            except ConnectError as exc:
                return exc, time.monotonic() - start, None
            return None, time.monotonic() - start, hello
        finally:
            await conn.close(linger=False)

    exc, elapsed, hello = asyncio.run(run())
    assert exc is not None, f"connect() succeeded: {hello}"
    assert elapsed < PROMISED, f"the ConnectError came after {elapsed:.2f} s: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, f"not one line: {text!r}"
    return exc


def fake_key_endpoint(body: bytes) -> FakeRouter:
    """A key endpoint answering a key request [b"key", b"{}"] with [b"key", body]."""
    return FakeRouter(lambda frames: [b"key", body] if frames == [b"key", b"{}"] else None)


def random_key() -> bytes:
    return zmq.curve_keypair()[0]


# ---- 1. trust on first use ------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_trust_on_first_use_records_the_key_then_asks_no_more(broker, tmp_path):
    known = KnownBrokers(tmp_path / "zmq-chat" / "known_brokers")  # the directory does not exist yet
    asked: list[tuple[str, str]] = []

    async def prompt(address: str, fp: str) -> bool:
        asked.append((address, fp))
        return True

    conn, hello = connect_ok(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port,
                                                known=known, trust_prompt=prompt))
    assert hello.ok and hello.broker == "chat-broker"
    assert asked == [(addr(broker), key_fingerprint(broker.server_key))]
    assert conn.key_choice is not None and conn.key_choice.source == "first use"
    assert conn.key_choice.key == broker.server_key

    assert known.path.read_text(encoding="utf-8").splitlines() == [f"{addr(broker)} {broker.server_key.decode()}"]
    assert known.path.stat().st_mode & 0o777 == 0o600
    assert known.path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in known.path.parent.iterdir()) == ["known_brokers"]  # no temp file left

    # the same file: the key is recorded, the prompt is not asked again, nothing is added
    conn2, _ = connect_ok(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port,
                                             known=KnownBrokers(known.path), trust_prompt=refuse_if_asked))
    assert conn2.key_choice is not None and conn2.key_choice.source == "recorded"
    assert conn2.key_choice.line == 1
    assert known.path.read_text(encoding="utf-8").splitlines() == [f"{addr(broker)} {broker.server_key.decode()}"]


# ---- 2. first use refused --------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_first_use_refused_records_nothing(broker, tmp_path):
    known = KnownBrokers(tmp_path / "known_brokers")
    asked: list[tuple[str, str]] = []

    async def prompt(address: str, fp: str) -> bool:
        asked.append((address, fp))
        return False

    exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port,
                                           known=known, trust_prompt=prompt))
    assert not isinstance(exc, KeyMismatch)
    assert "not trusted" in str(exc)
    assert key_fingerprint(broker.server_key) in str(exc)
    assert asked == [(addr(broker), key_fingerprint(broker.server_key))]
    assert not known.path.exists()

    # no prompt at all refuses too
    exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port, known=known))
    assert "not trusted" in str(exc)
    assert not known.path.exists()


# ---- 3. a changed key is refused loudly ----------------------------------------------------------

@pytest.mark.timeout(30)
def test_changed_key_is_refused_loudly_and_the_file_is_left_alone(broker, tmp_path):
    known = KnownBrokers(tmp_path / "known_brokers")
    recorded = random_key()
    # the broker's line is line 2, so the message must name the right line
    content = f"10.0.0.1:4119 {random_key().decode()}\n{addr(broker)} {recorded.decode()}\n"
    known.path.write_text(content, encoding="utf-8")
    known.path.chmod(0o600)
    before = known.path.stat()

    exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port,
                                           known=known, trust_prompt=refuse_if_asked))
    assert isinstance(exc, KeyMismatch), repr(exc)
    text = str(exc)
    assert "HAS CHANGED" in text
    assert key_fingerprint(recorded) in text
    assert key_fingerprint(broker.server_key) in text
    assert str(known.path) in text
    assert f"line 2 of {known.path}" in text
    assert "--server-key" in text

    after = known.path.stat()
    assert known.path.read_text(encoding="utf-8") == content
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)


# ---- 4. a wrong --server-key ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_wrong_server_key_names_both_fingerprints(broker, tmp_path):
    known = KnownBrokers(tmp_path / "known_brokers")
    given = random_key()
    exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port, server_key=given,
                                           known=known, trust_prompt=refuse_if_asked))
    assert not isinstance(exc, KeyMismatch), repr(exc)  # nothing was recorded: not "changed"
    assert key_fingerprint(given) in str(exc)
    assert key_fingerprint(broker.server_key) in str(exc)
    assert not known.path.exists()


# ---- 5. the other mode, both ways ------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_other_mode_is_refused_both_ways(broker, insecure_broker, tmp_path):
    # NULL client, CURVE broker
    known = KnownBrokers(tmp_path / "a" / "known_brokers")
    exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port, insecure=True,
                                           known=known, trust_prompt=refuse_if_asked))
    assert "requires encryption" in str(exc)
    assert not known.path.exists()

    # CURVE client at first use, --insecure broker: refused before any prompt
    known = KnownBrokers(tmp_path / "b" / "known_brokers")
    asked: list[tuple[str, str]] = []

    async def prompt(address: str, fp: str) -> bool:
        asked.append((address, fp))
        return True

    exc = connect_fails(lambda: Connection("127.0.0.1", insecure_broker.port, key_port=insecure_broker.key_port,
                                           known=known, trust_prompt=prompt))
    assert "without encryption" in str(exc)
    assert asked == []
    assert not known.path.exists()

    # CURVE client with a recorded key, --insecure broker
    known = KnownBrokers(tmp_path / "c" / "known_brokers")
    content = f"{addr(insecure_broker)} {random_key().decode()}\n"
    known.path.parent.mkdir()
    known.path.write_text(content, encoding="utf-8")
    exc = connect_fails(lambda: Connection("127.0.0.1", insecure_broker.port, key_port=insecure_broker.key_port,
                                           known=known, trust_prompt=refuse_if_asked))
    assert "without encryption" in str(exc)
    assert known.path.read_text(encoding="utf-8") == content


# ---- 6. a lying key endpoint -----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_lying_key_endpoint_is_caught_by_the_handshake(broker, tmp_path):
    lie = random_key()
    fake = fake_key_endpoint(json.dumps({"version": 1, "curve": True, "public_key": lie.decode(),
                                       "fingerprint": "x", "port": broker.port}).encode())
    known = KnownBrokers(tmp_path / "known_brokers")
    asked: list[tuple[str, str]] = []

    async def prompt(address: str, fp: str) -> bool:
        asked.append((address, fp))
        return True

    try:
        exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=fake.port,
                                               known=known, trust_prompt=prompt))
    finally:
        fake.close()
    assert "may be lying" in str(exc)
    assert key_fingerprint(lie) in str(exc)
    # the prompt was shown the client's own fingerprint of the lie, not the endpoint's "x"
    assert asked == [(addr(broker), key_fingerprint(lie))]
    assert fake.asked >= 1
    assert not known.path.exists()


# ---- 7. garbage from the key endpoint ------------------------------------------------------------

@pytest.mark.timeout(30)
def test_garbage_from_the_key_endpoint(broker, tmp_path):
    fake = fake_key_endpoint(b"not json")
    known = KnownBrokers(tmp_path / "known_brokers")
    try:
        exc = connect_fails(lambda: Connection("127.0.0.1", broker.port, key_port=fake.port,
                                               known=known, trust_prompt=accept))
    finally:
        fake.close()
    assert "not a broker key" in str(exc)
    assert fake.asked == 1
    assert not known.path.exists()


# ---- 8. never a hang ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(30)
def test_silence_is_a_one_line_error_within_5_s(tmp_path):
    """Items 2-7 each check (in connect_fails) that their ConnectError comes within 5 s and is one
    line. The slowest failures are silent ones: nothing at the key endpoint at first use, and
    nothing at the broker port with a given key (hello timeout, then the diagnosis)."""
    known = KnownBrokers(tmp_path / "known_brokers")
    port = _free_port()
    exc = connect_fails(lambda: Connection("127.0.0.1", port, key_port=_free_port(), known=known,
                                           trust_prompt=accept))
    assert "no chat broker answered" in str(exc)
    exc = connect_fails(lambda: Connection("127.0.0.1", port, server_key=random_key(), known=known,
                                           trust_prompt=refuse_if_asked))
    assert "no chat broker answered" in str(exc)
    assert not known.path.exists()


# ---- 9. CHAT_SERVER_KEY ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_chat_server_key_env_is_used_and_records_nothing(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAT_SERVER_KEY", broker.server_key.decode())
    known = KnownBrokers(tmp_path / "known_brokers")
    conn, hello = connect_ok(lambda: Connection("127.0.0.1", broker.port, key_port=broker.key_port, known=known))
    assert hello.ok
    assert conn.key_choice is not None and conn.key_choice.source == "given"
    assert conn.key_choice.key == broker.server_key
    assert not known.path.exists()


# ---- 10. the real program --------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_real_client_refuses_a_changed_key_with_exit_2(broker, tmp_path):
    cfg = tmp_path / "cfg"
    known_path = cfg / "zmq-chat" / "known_brokers"
    known_path.parent.mkdir(parents=True, mode=0o700)
    wrong = random_key()
    content = f"{addr(broker)} {wrong.decode()}\n"
    known_path.write_text(content, encoding="utf-8")
    known_path.chmod(0o600)

    env = {**os.environ, "TERM": "dumb", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONUNBUFFERED": "1",
           "XDG_CONFIG_HOME": str(cfg)}
    env.pop("CHAT_SERVER_KEY", None)
    child = pexpect.spawn(sys.executable, ["-m", "zmq_chat.client", "--host", "127.0.0.1", "--port", str(broker.port),
                                           "--key-port", str(broker.key_port)],
                          cwd=str(Path(__file__).resolve().parent.parent), encoding="utf-8", env=env,
                          timeout=15, dimensions=(50, 200))
    out = io.StringIO()
    child.logfile_read = out
    try:
        child.expect_exact("HAS CHANGED", timeout=15)
        child.expect(pexpect.EOF, timeout=10)
        child.close()
        assert child.exitstatus == 2, f"status {child.exitstatus}, signal {child.signalstatus}"
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
        child.close(force=True)
    text = out.getvalue()
    assert "Traceback" not in text
    assert key_fingerprint(wrong) in text and key_fingerprint(broker.server_key) in text
    assert known_path.read_text(encoding="utf-8") == content
