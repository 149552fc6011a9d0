"""The argon2id hashing process: `python -m zmq_chat.broker.hasher PRIORITY READ_FD WRITE_FD`.

The broker starts one per hashing thread (broker.auth, which says why they are processes). It lowers
its own priority first, then answers requests until its request pipe reaches end of file (the broker
closed it or exited, even by kill -9), then exits. It imports no zmq and nothing of the broker but this
module, so it starts in about the time of a bare interpreter plus PyNaCl.

Pipe protocol (multiprocessing.connection framing: a 4-byte length, then the bytes):
- request: b"v" + argon2id string (ASCII) + b"\\0" + password (UTF-8, surrogatepass): verify;
  b"h" + b"\\0" + password: hash;
- reply: b"1" or b"0" for a verify; the argon2id string (ASCII) for a hash.
Passwords are never logged, and not kept after their job.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection

import nacl.exceptions
import nacl.pwhash

IDLE = "idle"
"""The PRIORITY that asks for SCHED_IDLE (see `set_priority`)."""


def hash_password(password: str) -> str:
    """argon2id hash string of `password` (nacl.pwhash.argon2id.str, INTERACTIVE limits: ~58 ms of
    one core and 64 MiB of memory on the benchmark machine)."""
    return nacl.pwhash.argon2id.str(password.encode("utf-8", "surrogatepass")).decode("ascii")


def verify_password(pwhash: str, password: str) -> bool:
    """True when `password` matches the argon2id string `pwhash`; False on mismatch or a bad hash."""
    try:
        return nacl.pwhash.verify(pwhash.encode("ascii"), password.encode("utf-8", "surrogatepass"))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError, UnicodeEncodeError):
        return False


def set_priority(priority: str | int) -> str:
    """Lower the calling process's CPU priority: "idle" = SCHED_IDLE (Linux: it runs only on CPU
    time no other task of the machine wants), or a nice increment 0..19. Where SCHED_IDLE is not
    available or not permitted, "idle" falls back to nice 19. Returns what was applied ("idle",
    "nice N"); raises nothing (a priority that cannot be set is left as it was: "unchanged")."""
    if priority == IDLE:
        if hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                return IDLE
            except OSError:  # pragma: no cover - platform dependent
                pass
        priority = 19
    increment = int(priority)
    if increment <= 0:
        return "nice 0"
    try:
        os.nice(increment)
    except OSError:  # pragma: no cover - platform dependent
        return "unchanged"
    return f"nice {increment}"


def answer(request: bytes) -> bytes:
    """The reply to one request (see the module docstring). Raises ValueError on a malformed one."""
    kind = request[:1]
    pwhash, sep, password = request[1:].partition(b"\0")
    if not sep:
        raise ValueError("request without a separator")
    text = password.decode("utf-8", "surrogatepass")
    if kind == b"v":
        return b"1" if verify_password(pwhash.decode("ascii"), text) else b"0"
    if kind == b"h":
        return hash_password(text).encode("ascii")
    raise ValueError(f"unknown request kind {kind!r}")


def serve(requests: Connection, replies: Connection) -> None:
    """Answer requests until end of file on `requests` (or a closed `replies`). Returns then."""
    while True:
        try:
            request = requests.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            replies.send_bytes(answer(request))
        except (BrokenPipeError, OSError):
            return
        del request


def main(argv: list[str]) -> int:
    """Entry point: argv = [PRIORITY, READ_FD, WRITE_FD]. Returns the exit status (0; 2 on bad args)."""
    if len(argv) != 3:
        print("usage: python -m zmq_chat.broker.hasher idle|0..19 READ_FD WRITE_FD", file=sys.stderr)
        return 2
    set_priority(argv[0] if argv[0] == IDLE else int(argv[0]))
    serve(Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
