"""Which broker key a client trusts, like SSH's known_hosts (docs/security.md, "Verifying a broker").

The key comes, in this order, from `--server-key` or the CHAT_SERVER_KEY environment variable
(Z85, 40 characters), from the known-brokers file, or (trust on first use) from the broker's key
endpoint, a NULL-mechanism ROUTER on port+2 that answers `[b"key", b"{}"]` with
`[b"key", {"version", "curve", "public_key", "fingerprint", "port"}]` (docs/protocol.md 1.1). A key
taken on first use is recorded only after the CURVE handshake with it succeeded.

The known-brokers file is `$XDG_CONFIG_HOME/zmq-chat/known_brokers` (default `~/.config/...`), one
`host:port key` line per broker, written with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import zmq
import zmq.asyncio
import zmq.utils.z85
from zmq.utils.monitor import parse_monitor_message

from zmq_chat.client.errors import ConnectError, RequestTimeout
from zmq_chat.protocol.keys import fingerprint

SERVER_KEY_ENV = "CHAT_SERVER_KEY"
KEY_TIMEOUT = 3.0
"""Seconds to wait for the key endpoint's answer."""
DIAGNOSE_TIMEOUT = 1.0
"""Seconds to wait for the key endpoint when finding out why the broker did not answer."""
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
HANDSHAKE_EVENTS = HANDSHAKE_FAILED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
"""What a client's DEALER monitor reports while `handshake_failure` watches it."""

TrustPrompt = Callable[[str, str], Awaitable[bool]]
"""Asked at first use of a broker: (address "host:port", key fingerprint) -> trust it?"""


class KeyMismatch(ConnectError):
    """The broker presents another key than the one recorded for it. str(exc) says both
    fingerprints, where the old one is recorded and how to fix it."""


def key_fingerprint(z85_key: bytes) -> str:
    """`SHA256:...` of a Z85 public key (bytes). Raises ValueError for a malformed key."""
    return fingerprint(parse_key(z85_key))


def parse_key(text: str | bytes) -> bytes:
    """The 32 raw bytes of a Z85 key. Raises ValueError when it is not 40 Z85 characters."""
    raw_text = text.encode("ascii", "replace") if isinstance(text, str) else text
    raw_text = raw_text.strip()
    if len(raw_text) != 40:
        raise ValueError(f"a broker key is 40 Z85 characters, got {len(raw_text)}")
    try:
        return zmq.utils.z85.decode(raw_text)
    except (KeyError, ValueError, IndexError):
        raise ValueError("a broker key is written in Z85 (ZeroMQ RFC 32)") from None


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/zmq-chat, or ~/.config/zmq-chat."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "zmq-chat"


class KnownBrokers:
    """The known-brokers file. `address` is "host:port" as the user typed the host (lower case)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "known_brokers"

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def lookup(self, address: str) -> tuple[bytes, int] | None:
        """(Z85 key, line number) recorded for `address`, or None."""
        address = address.lower()
        for number, line in enumerate(self._lines(), 1):
            parts = line.split()
            if len(parts) == 2 and parts[0] == address:
                return parts[1].encode("ascii"), number
        return None

    def remember(self, address: str, key: bytes) -> None:
        """Record `key` for `address` (replacing nothing: a recorded key is changed only by hand).
        Raises OSError when the file cannot be written."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [*self._lines(), f"{address.lower()} {key.decode('ascii')}"]
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".known_brokers.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            os.unlink(tmp)
            raise


@dataclass(frozen=True)
class KeyInfo:
    """The key endpoint's answer: curve (the broker uses CURVE), public_key (Z85 bytes, b"" if
    not), fingerprint (as the broker computes it; the client recomputes its own)."""

    curve: bool
    public_key: bytes
    fingerprint: str


def fetch_key(address: str, port: int, ipv6: bool = False, timeout: float = KEY_TIMEOUT) -> KeyInfo | None:
    """Ask the key endpoint tcp://address:port; None when nothing answers within `timeout` s.

    Raises:
        ConnectError: the answer is not a key endpoint's (a liar is caught later, by the CURVE
            handshake failing).
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(f"tcp://[{address}]:{port}" if ipv6 else f"tcp://{address}:{port}")
        sock.send_multipart([b"key", b"{}"])
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(math.ceil(left * 1000)):
                return None
            frames = sock.recv_multipart()
            if len(frames) == 2 and frames[0] == b"key":
                return _key_info(frames[1])
        return None
    finally:
        sock.close(0)
        ctx.term()


def _key_info(body: bytes) -> KeyInfo:
    try:
        obj = json.loads(body)
        curve = bool(obj["curve"])
        key = str(obj.get("public_key", "")).encode("ascii")
        if curve:
            parse_key(key)
        return KeyInfo(curve, key, str(obj.get("fingerprint", "")))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        raise ConnectError("the key endpoint sent something that is not a broker key") from None


def mismatch(address: str, recorded: bytes, line: int, presented: bytes, path: Path) -> KeyMismatch:
    """The loud error for a broker whose key changed (both fingerprints and the fix)."""
    return KeyMismatch(
        f"WARNING: THE BROKER KEY OF {address} HAS CHANGED. Someone may be intercepting the connection, "
        f"or the broker's key was replaced. Recorded: {key_fingerprint(recorded)}; presented: "
        f"{key_fingerprint(presented)}. Refusing to connect. If the operator confirms the new fingerprint "
        f"(chat-broker --print-key), remove line {line} of {path} and connect again, or pass --server-key."
    )


@dataclass(frozen=True)
class KeyChoice:
    """The broker key a connection uses. key: Z85 bytes, None for --insecure (NULL); source:
    "given" (--server-key or CHAT_SERVER_KEY), "recorded" (known-brokers line `line`), "first use"
    (from the key endpoint, recorded once the handshake succeeds) or "insecure"."""

    key: bytes | None
    source: str
    line: int = 0


def choose_key(address: str, server_key: bytes | None, insecure: bool, known: KnownBrokers) -> KeyChoice | None:
    """The key to use without asking the network, or None when it must come from the key
    endpoint (trust on first use). Raises ConnectError for a malformed --server-key."""
    if insecure:
        return KeyChoice(None, "insecure")
    if server_key is None and os.environ.get(SERVER_KEY_ENV):
        server_key = os.environ[SERVER_KEY_ENV].encode("ascii", "replace")
    if server_key is not None:
        try:
            parse_key(server_key)
        except ValueError as exc:
            raise ConnectError(f"bad broker key: {exc}") from None
        return KeyChoice(server_key.strip(), "given")
    recorded = known.lookup(address)
    if recorded is not None:
        return KeyChoice(recorded[0], "recorded", recorded[1])
    return None


def diagnose(address: str, choice: KeyChoice, info: KeyInfo | None, known: KnownBrokers, waited: float) -> ConnectError:
    """Why a connection with `choice` got no hello reply in `waited` seconds (or had its handshake
    refused), given what the key endpoint says now (`info`, None when silent)."""
    silent = ConnectError(f"no chat broker answered at {address} within {waited:.0f} s "
                          "(is it running? right host and port?)")
    if choice.key is None:  # we speak NULL
        if info is not None and info.curve:
            return ConnectError(f"the broker at {address} requires encryption (CURVE); "
                                "run the client without --insecure")
        return silent
    if info is None:
        return silent
    if not info.curve:
        return ConnectError(f"the broker at {address} runs without encryption (--insecure): refusing to send "
                            "passwords and messages in clear text (pass --insecure to connect anyway)")
    if info.public_key != choice.key:
        if choice.source == "recorded":
            return mismatch(address, choice.key, choice.line, info.public_key, known.path)
        return ConnectError(f"the broker at {address} presents key {key_fingerprint(info.public_key)}, "
                            f"not the given {key_fingerprint(choice.key)}: refusing to connect")
    if choice.source == "first use":
        return ConnectError(f"the CURVE handshake with {address} failed with the key its key endpoint sent "
                            f"({key_fingerprint(choice.key)}): the key endpoint may be lying; "
                            "verify the fingerprint with the broker's operator and pass --server-key")
    return ConnectError(f"the CURVE handshake with {address} failed although the broker presents the "
                        f"expected key {key_fingerprint(choice.key)} (too many connections from your address?)")


async def handshake_failure(monitor: zmq.asyncio.Socket) -> bool:
    """Watch a DEALER's monitor until the handshake succeeds (returns False) or fails or the
    connection drops before it succeeded (True): a wrong key, a refused connection, the other mode."""
    while True:
        event = parse_monitor_message(await monitor.recv_multipart())["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return False
        if event & HANDSHAKE_FAILED or event == zmq.EVENT_DISCONNECTED:
            return True


async def hello_failed(hello: asyncio.Future[Any], monitor: zmq.asyncio.Socket) -> bool:
    """Wait until `hello` (the hello request in flight) is done, watching the handshake on
    `monitor` (the DEALER's monitor socket for HANDSHAKE_EVENTS) meanwhile.

    Returns True when the handshake failed, or `hello` ended in RequestTimeout: `hello` is then
    cancelled and the caller finds out why (`explain`); False when `hello` is done otherwise (its
    result is the reply, or the error it raises). The monitor socket is left to the caller.
    """
    watch = asyncio.ensure_future(handshake_failure(monitor))
    try:
        await asyncio.wait({hello, watch}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done() and not watch.result():  # the handshake succeeded: wait for hello
            await asyncio.wait({hello})
        failed = watch.done() and watch.result()
        if failed or (hello.done() and isinstance(hello.exception(), RequestTimeout)):
            hello.cancel()
            return True
        return False
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch


async def first_use(address: str, ip: str, key_port: int, ipv6: bool, timeout: float,
                    prompt: TrustPrompt | None) -> KeyChoice:
    """The broker key from its key endpoint (tcp://ip:key_port), if `prompt` accepts its
    fingerprint. Raises ConnectError: nothing answered, the broker runs --insecure, not trusted."""
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(None, fetch_key, ip, key_port, ipv6, max(0.5, timeout))
    if info is None:
        raise ConnectError(f"no chat broker answered at {address} (its key endpoint, port {key_port}, "
                           "is silent: is it running? right host and port? or pass --server-key)")
    if not info.curve:
        raise ConnectError(f"the broker at {address} runs without encryption (--insecure): refusing to "
                           "send passwords and messages in clear text (pass --insecure to connect anyway)")
    fp = key_fingerprint(info.public_key)
    if prompt is None or not await prompt(address, fp):
        raise ConnectError(f"the key of {address} ({fp}) is not trusted; verify it with the broker's "
                           "operator (chat-broker --print-key) and pass --server-key")
    return KeyChoice(info.public_key, "first use")


async def explain(address: str, ip: str, key_port: int, ipv6: bool, choice: KeyChoice, known: KnownBrokers,
                  waited: float) -> ConnectError:
    """Why the broker did not answer `hello` with `choice` (see `diagnose`), asking the key
    endpoint for at most DIAGNOSE_TIMEOUT seconds."""
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(None, fetch_key, ip, key_port, ipv6, DIAGNOSE_TIMEOUT)
    return diagnose(address, choice, info, known, waited)
