"""Kernel-level facts about libzmq's TCP connections, read from their file descriptors (Linux).

The socket monitor tells each connection's fd (ZMQ_EVENT_ACCEPTED / DISCONNECTED) and every
received message tells its source fd (the SRCFD property), so the broker can ask the kernel what
libzmq cannot tell: the peer's address, the bytes received on a connection (TCP_INFO
tcpi_bytes_received), the bytes queued towards a peer that does not read (SIOCOUTQ), and it can
cut a connection off (shutdown(2): libzmq sees the end of the stream and closes its side, emitting
DISCONNECTED). The fd stays libzmq's: every function here wraps it without taking ownership
(`socket.socket(fileno=...)` then `detach()`), and `cut` first checks that the fd still belongs to
the expected peer, since a closed fd number can be reused by a new connection.

Every function returns a neutral value (None, 0, False) when the fd is gone or the platform lacks
the feature; none raises.
"""

from __future__ import annotations

import array
import os
import socket
import struct

try:
    import fcntl
    import termios

    _OUTQ = termios.TIOCOUTQ  # SIOCOUTQ on sockets
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    fcntl = None  # type: ignore[assignment]
    _OUTQ = 0

TCP_INFO_SIZE = 232
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_OFFSET = 128
"""Offset of tcpi_bytes_received (u64, Linux >= 4.1) in struct tcp_info."""


def _wrap(fd: int, family: int = socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)


def peer_of(fd: int) -> tuple[str, int] | None:
    """(IP, port) of the TCP peer on `fd`, or None when it is not a connected TCP socket."""
    try:
        sock = socket.socket(fileno=fd)  # family detected from the fd
    except OSError:
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        addr = sock.getpeername()
        return str(addr[0]), int(addr[1])
    except OSError:
        return None
    finally:
        sock.detach()


def bytes_received(fd: int) -> int | None:
    """The kernel's count of bytes received on the TCP connection `fd`, or None."""
    if not hasattr(socket, "TCP_INFO"):  # pragma: no cover - not Linux
        return None
    try:
        sock = _wrap(fd)
    except OSError:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except OSError:
        return None
    finally:
        sock.detach()
    if len(info) < _BYTES_RECEIVED_OFFSET + 8:
        return None
    return _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_OFFSET)[0]


def peer_behind(fd: int, limit: int) -> bool:
    """True when more than `limit` bytes (or a quarter of the send buffer, if smaller) wait in the
    kernel's send queue of `fd`: the peer is not reading what it was sent."""
    if fcntl is None or fd < 0:
        return False
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, _OUTQ, buf)
        sock = _wrap(fd)
    except OSError:
        return False
    try:
        sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except OSError:
        sndbuf = 0
    finally:
        sock.detach()
    threshold = min(limit, sndbuf // 4) if sndbuf > 0 else limit
    return buf[0] > threshold


def cut(fd: int, ip: str, port: int) -> bool:
    """Shut the TCP connection on `fd` down (both directions) if its peer is still (ip, port).
    Returns True when it was cut. libzmq notices and closes it; a zmq peer may reconnect."""
    if peer_of(fd) != (ip, port):
        return False
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.detach()


class RssReader:
    """The process's resident set size in bytes, read from /proc/self/statm (about 1.5 us).
    read() returns 0 where /proc is missing."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:  # pragma: no cover - not Linux
            self._fd = -1

    def read(self) -> int:
        """Resident set size now, bytes (0 when unknown)."""
        if self._fd < 0:
            return 0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return 0

    def close(self) -> None:
        """Close the /proc file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
