"""A raw, blocking ZMTP 3.0 client for security tests (NULL and CURVE mechanisms).

Written from the specs: ZMTP 3.0 (RFC 23), CurveZMQ (RFC 26), ZMTP-CURVE (RFC 25).
Unlike a libzmq socket it puts every frame on the wire as soon as it is asked to,
so a test can misbehave on purpose: endless MORE frames, a header announcing a
huge frame followed by a trickle of bytes, garbage during or after the handshake,
a stall half way through a frame.

Wire shapes (integers big-endian):
  frame    = flags(1) size(1, or 8 if flags & LONG) body;  flags: MORE=1 LONG=2 COMMAND=4
  command  = name-size(1) name data
  metadata = *(name-size(1) name value-size(4) value)
  CURVE MESSAGE = b"\\x07MESSAGE" short-nonce(8) box(flags(1) payload), sent like libzmq
  does as an outer frame with flags 0; in the boxed flags MORE is 0x01 and libzmq marks
  commands (PING/PONG) with 0x02.

Every blocking call has a timeout: ``socket.timeout`` says what was being waited for.
TCP errors on writes (BrokenPipeError, ConnectionResetError) propagate as they are.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random as nacl_random
from zmq.utils import z85

MORE, LONG, COMMAND = 0x01, 0x02, 0x04  # ZMTP frame flag bits
BOX_COMMAND = 0x02  # libzmq's command bit inside a CURVE MESSAGE box (RFC 26 reserves it)


class ZmtpError(Exception):
    """Protocol failure: malformed data, undecryptable box, ERROR after the handshake."""


class HandshakeFailed(ZmtpError):
    """The handshake did not complete: ERROR command (e.g. ZAP denial), connection
    closed (e.g. wrong server key), bad greeting, unexpected command or bad box."""


class PeerClosed(ZmtpError):
    """The server closed (or reset) the TCP connection while we were reading."""


def z85_to_raw(key: bytes | str) -> bytes:
    """Decode a 40-character Z85 key (as from ``zmq.curve_keypair()``) to 32 raw bytes."""
    return z85.decode(key.encode() if isinstance(key, str) else key)


def raw_to_z85(key: bytes) -> bytes:
    """Encode 32 raw key bytes as 40 Z85 bytes."""
    return z85.encode(key)


def encode_metadata(props: dict[str, bytes]) -> bytes:
    """Encode ZMTP metadata: name-size(1) name value-size(4) value, per property."""
    out = b""
    for name, value in props.items():
        n = name.encode()
        out += bytes([len(n)]) + n + struct.pack(">I", len(value)) + value
    return out


def decode_metadata(data: bytes) -> dict[str, bytes]:
    """Decode ZMTP metadata into {name: value}; raises ZmtpError if malformed."""
    props, i = {}, 0
    try:
        while i < len(data):
            name, i = data[i + 1 : i + 1 + data[i]].decode(), i + 1 + data[i]
            (vlen,) = struct.unpack(">I", data[i : i + 4])
            props[name], i = data[i + 4 : i + 4 + vlen], i + 4 + vlen
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise ZmtpError(f"malformed metadata: {data!r}") from e
    return props


def _split_command(body: bytes) -> tuple[bytes, bytes]:
    if not body or len(body) < 1 + body[0]:
        raise ZmtpError(f"malformed command: {body[:40]!r}")
    return body[1 : 1 + body[0]], body[1 + body[0] :]


def _reason(data: bytes) -> str:  # ERROR data = reason-size(1) reason
    return data[1 : 1 + data[0]].decode(errors="replace") if data else ""


class ZmtpPeer:
    """One ZMTP 3.0 connection to ``host:port`` (TCP connect happens here).

    mechanism: "NULL" or "CURVE".  socket_type: the Socket-Type we announce ("DEALER",
    "SUB", "REQ", ...).  routing_id: sent as the Identity property when non-empty.
    server_key, public_key, secret_key: 32 raw bytes each (see ``z85_to_raw``); the
    client's long-term pair is generated when not given.  A public_key that does not
    match secret_key is sent as is (to test impersonation: the vouch will not open).
    timeout: seconds for connect and the default for every blocking read or write.
    After ``handshake()``: ``server_greeting`` (64 bytes) and ``server_metadata``.
    """

    def __init__(self, host: str, port: int, *, mechanism: str = "NULL",
                 socket_type: str = "DEALER", routing_id: bytes = b"",
                 server_key: bytes | None = None, public_key: bytes | None = None,
                 secret_key: bytes | None = None, timeout: float = 5.0):
        self.mechanism = mechanism.upper()
        if self.mechanism not in ("NULL", "CURVE"):
            raise ValueError(f"unsupported mechanism {mechanism!r}")
        if self.mechanism == "CURVE" and (server_key is None or len(server_key) != 32):
            raise ValueError("CURVE needs server_key as 32 raw bytes")
        self.socket_type, self.routing_id, self.timeout = socket_type, routing_id, timeout
        self.server_key = server_key
        self.secret_key = PrivateKey(secret_key) if secret_key else PrivateKey.generate()
        self.public_key = public_key or bytes(self.secret_key.public_key)
        self.server_greeting, self.server_metadata = b"", {}
        self._session: Box | None = None  # CURVE: Box(C' secret, S' public)
        self._nonce = self._peer_nonce = 0  # short nonces: ours, last seen from server
        self._rbuf = bytearray()  # received but not yet consumed bytes
        self._partial: list[bytes] = []  # frames of a message not yet complete
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ---------------------------------------------------------------- raw I/O
    def _fill(self, n: int, what: str, deadline: float) -> None:
        """Buffer until n bytes are available; on timeout they stay buffered (no desync)."""
        while len(self._rbuf) < n:
            left = deadline - time.monotonic()
            msg = f"timed out waiting for {what} ({len(self._rbuf)}/{n} bytes buffered)"
            if left <= 0:
                raise socket.timeout(msg)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise socket.timeout(msg) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise PeerClosed(f"server closed the connection while waiting for {what}")
            self._rbuf += chunk

    def _take(self, n: int) -> bytes:
        data, self._rbuf[:n] = bytes(self._rbuf[:n]), b""
        return data

    def _read_frame(self, what: str, deadline: float) -> tuple[int, bytes]:
        """Read one whole frame -> (flags, body); nothing is consumed on timeout."""
        self._fill(2, what, deadline)
        head, size = 2, self._rbuf[1]
        if self._rbuf[0] & LONG:
            self._fill(9, what, deadline)
            head, size = 9, struct.unpack(">Q", self._rbuf[1:9])[0]
        self._fill(head + size, what, deadline)
        flags = self._rbuf[0]
        return flags, self._take(head + size)[head:]

    def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes on the TCP stream; socket.timeout if the server stops reading."""
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise socket.timeout(f"timed out writing {len(data)} bytes (server not reading?)") from None

    @staticmethod
    def frame_header(size: int, flags: int = 0) -> bytes:
        """Header of a frame of ``size`` bytes: short form if size <= 255, else long."""
        if size > 255:
            return bytes([flags | LONG]) + struct.pack(">Q", size)
        return bytes([flags & ~LONG, size])

    def _send_command(self, name: bytes, data: bytes) -> None:
        body = bytes([len(name)]) + name + data
        self.send_raw(self.frame_header(len(body), COMMAND) + body)

    # -------------------------------------------------------------- handshake
    def _handshake_read(self, what: str, n: int = 0) -> tuple[int, bytes]:
        """Read n bytes (or, if n == 0, one frame) with a fresh deadline; closure -> HandshakeFailed."""
        deadline = time.monotonic() + self.timeout
        try:
            if n:
                self._fill(n, what, deadline)
                return 0, self._take(n)
            return self._read_frame(what, deadline)
        except PeerClosed as e:
            raise HandshakeFailed(str(e)) from None

    def greet(self) -> bytes:
        """Exchange the 64-byte greetings (version 3.0, as-server 0); returns the server's."""
        mech = self.mechanism.encode().ljust(20, b"\0")
        self.send_raw(b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + mech + b"\0" * 32)
        _, g = self._handshake_read("server greeting", 64)
        if g[0] != 0xFF or g[9] != 0x7F or g[10] < 3:
            raise HandshakeFailed(f"bad server greeting {g!r}")
        if g[12:32] != mech:
            raise HandshakeFailed(f"server mechanism is {g[12:32].rstrip(bytes(1))!r}")
        self.server_greeting = g
        return g

    def _expect(self, want: bytes) -> bytes:
        """Read a handshake command; return its data if it is ``want``."""
        what = f"{want.decode()} command"
        flags, body = self._handshake_read(what)
        if not flags & COMMAND:
            raise HandshakeFailed(f"expected {what}, got a data frame {body[:40]!r}")
        name, data = _split_command(body)
        if name == b"ERROR":
            raise HandshakeFailed(f"server sent ERROR: {_reason(data)}")
        if name != want:
            raise HandshakeFailed(f"expected {what}, got {name!r}")
        return data

    def _metadata(self) -> bytes:
        props = {"Socket-Type": self.socket_type.encode()}
        if self.routing_id:
            props["Identity"] = self.routing_id
        return encode_metadata(props)

    def _next_nonce(self) -> bytes:
        self._nonce += 1
        return struct.pack(">Q", self._nonce)

    def handshake(self) -> None:
        """Greeting plus NULL READY exchange, or CURVE HELLO/WELCOME/INITIATE/READY.

        Each read waits up to ``timeout``.  Raises HandshakeFailed or socket.timeout.
        NB: libzmq sends its NULL READY before checking ours, so a rejected Socket-Type
        shows up only as a closed connection afterwards.
        """
        self.greet()
        if self.mechanism == "NULL":
            self._send_command(b"READY", self._metadata())
            self.server_metadata = decode_metadata(self._expect(b"READY"))
            return
        server = PublicKey(self.server_key)
        cn_secret = PrivateKey.generate()  # transient pair, one per connection
        cn_public = bytes(cn_secret.public_key)
        nonce = self._next_nonce()
        box = Box(cn_secret, server).encrypt(bytes(64), b"CurveZMQHELLO---" + nonce).ciphertext
        self._send_command(b"HELLO", b"\x01\x00" + bytes(72) + cn_public + nonce + box)
        welcome = self._expect(b"WELCOME")  # long nonce(16) box(S' + cookie(96))
        try:
            plain = Box(cn_secret, server).decrypt(welcome[16:], b"WELCOME-" + welcome[:16])
        except CryptoError:
            raise HandshakeFailed("cannot open WELCOME box (wrong server key?)") from None
        sn_public, cookie = PublicKey(plain[:32]), plain[32:128]
        vouch_nonce = nacl_random(16)
        vouch = vouch_nonce + Box(self.secret_key, sn_public).encrypt(
            cn_public + self.server_key, b"VOUCH---" + vouch_nonce).ciphertext
        self._session = Box(cn_secret, sn_public)
        nonce = self._next_nonce()
        box = self._session.encrypt(self.public_key + vouch + self._metadata(),
                                    b"CurveZMQINITIATE" + nonce).ciphertext
        self._send_command(b"INITIATE", cookie + nonce + box)
        ready = self._expect(b"READY")  # short nonce(8) box(metadata)
        try:
            meta = self._session.decrypt(ready[8:], b"CurveZMQREADY---" + ready[:8])
        except CryptoError:
            raise HandshakeFailed("cannot open READY box") from None
        self._peer_nonce = struct.unpack(">Q", ready[:8])[0]
        self.server_metadata = decode_metadata(meta)

    # --------------------------------------------------------------- messages
    def send_frame(self, data: bytes, more: bool = False) -> None:
        """Send one message frame now (CURVE: one MESSAGE command, flags + payload boxed)."""
        self._send_message(MORE if more else 0, data)

    def _send_message(self, flags: int, data: bytes) -> None:
        if self._session is None:
            self.send_raw(self.frame_header(len(data), flags) + data)
            return
        inner = (flags & MORE) | (BOX_COMMAND if flags & COMMAND else 0)
        nonce = self._next_nonce()
        box = self._session.encrypt(bytes([inner]) + data, b"CurveZMQMESSAGEC" + nonce).ciphertext
        body = b"\x07MESSAGE" + nonce + box
        self.send_raw(self.frame_header(len(body)) + body)

    def send_multipart(self, frames: list[bytes]) -> None:
        """Send a whole message: MORE on every frame but the last."""
        for i, frame in enumerate(frames):
            self.send_frame(frame, more=i < len(frames) - 1)

    def send_frame_header(self, size: int, more: bool = False) -> None:
        """Write only a frame header announcing ``size`` bytes (long form if > 255).

        Follow it with ``send_raw`` to trickle the body.  Under CURVE this is the outer
        header of a MESSAGE frame (libzmq checks MAXMSGSIZE against that size).
        """
        self.send_raw(self.frame_header(size, MORE if more else 0))

    def subscribe(self, topic: bytes) -> None:
        """SUB: send the ZMTP 3.0 subscription message b"\\x01" + topic."""
        self.send_frame(b"\x01" + topic)

    def unsubscribe(self, topic: bytes) -> None:
        """SUB: send the ZMTP 3.0 cancel message b"\\x00" + topic."""
        self.send_frame(b"\x00" + topic)

    def recv_multipart(self, timeout: float | None = None) -> list[bytes]:
        """Return the frames of the next message; PINGs are answered with PONG.

        timeout: seconds for the whole message (default: the peer's timeout).  On
        timeout nothing is lost: buffered bytes and frames carry over to the next call.
        Raises socket.timeout, PeerClosed, or ZmtpError (bad box, stale nonce, ERROR).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            flags, body = self._read_frame("a message frame from the server", deadline)
            if self._session is not None:
                if not body.startswith(b"\x07MESSAGE") or len(body) < 33:
                    raise ZmtpError(f"expected a MESSAGE command, got {body[:40]!r}")
                n = struct.unpack(">Q", body[8:16])[0]
                if n <= self._peer_nonce:
                    raise ZmtpError(f"server reused short nonce {n}")
                self._peer_nonce = n
                try:
                    plain = self._session.decrypt(body[16:], b"CurveZMQMESSAGES" + body[8:16])
                except CryptoError:
                    raise ZmtpError("cannot open MESSAGE box") from None
                flags = (plain[0] & MORE) | (COMMAND if plain[0] & BOX_COMMAND else 0)
                body = plain[1:]
            if flags & COMMAND:
                name, data = _split_command(body)
                if name == b"PING":  # PING = ttl(2) context; PONG = context
                    self._send_message(COMMAND, b"\x04PONG" + data[2:])
                elif name == b"ERROR":
                    raise ZmtpError(f"server sent ERROR: {_reason(data)}")
                continue
            self._partial.append(body)
            if not flags & MORE:
                frames, self._partial = self._partial, []
                return frames

    # ---------------------------------------------------------------- teardown
    def alive(self) -> bool:
        """False once the server has closed (FIN or RST) the connection; never blocks.

        Uses poll(POLLRDHUP) where available, so unread data does not hide a closure;
        elsewhere recv(MSG_PEEK), where pending unread bytes count as alive.
        """
        if self.sock.fileno() < 0:
            return False
        if hasattr(select, "POLLRDHUP"):
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLRDHUP)
            dead = select.POLLRDHUP | select.POLLHUP | select.POLLERR
            return not any(ev & dead for _, ev in poller.poll(0))
        saved = self.sock.gettimeout()
        self.sock.settimeout(0)  # with a timeout set, recv would first wait for data
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(saved)

    def wait_closed(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for the server to close; True if it did."""
        deadline = time.monotonic() + timeout
        while self.alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if hasattr(select, "POLLRDHUP"):  # wakes on closure only, not on data
                poller = select.poll()
                poller.register(self.sock, select.POLLRDHUP)
                poller.poll(left * 1000)
            else:
                select.select([self.sock], [], [self.sock], min(left, 0.05))
        return True

    def close(self) -> None:
        """Close the TCP connection (idempotent)."""
        self.sock.close()

    def __enter__(self) -> ZmtpPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
