"""What a process holds, read from /proc (Linux): its file descriptors and the TCP connections of
the kernel's tables, for the integration fuzzer's leak checks (tests/test_fuzz_integration.py)."""

from __future__ import annotations

import os


def fds(pid: int) -> int:
    """Open file descriptors of process `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_table() -> dict[str, tuple[int, int]]:
    """Every IPv4/IPv6 TCP socket the kernel lists: inode -> (local port, remote port)."""
    table = {}
    for name in ("tcp", "tcp6"):
        with open(f"/proc/net/{name}") as f:
            next(f)
            for line in f:
                cols = line.split()
                table[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return table


def dead_sockets(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds open that no /proc/net table lists any more: TCP
    connections that ended (closed or reset) while the process kept their file descriptor."""
    listed = set(tcp_table())
    for name in ("udp", "udp6", "unix", "raw", "raw6", "netlink", "packet"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    listed.add(cols[6] if name == "unix" else cols[9] if len(cols) > 9 else cols[-1])
        except OSError:
            continue
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return held - listed
