"""The text of a load-test message, built (`make_text`) and read (`parse_text`) only here.

Layout: "<head> <send_ns> <padding>".
    head: "<run tag>w<process><p|b><n in hex>", also the message's send id (unique per sender,
        1..64 characters). The run tag marks this run's messages, so leftovers of other runs (e.g.
        old mailbox contents pushed at login) are recognised and ignored; p/b is the kind, n the
        process-local message number of that kind.
    send_ns: time.monotonic_ns() when it was sent (one clock for all processes on Linux, so the
        receive time minus send_ns is the end-to-end latency).
    padding: "x" up to the configured size.
"""

from __future__ import annotations


def make_text(head: str, send_ns: int, size: int, pad: str = "") -> str:
    """Message text "<head> <send_ns> <padding>" of `size` characters (longer if the header alone
    is longer). `pad` is a string of at least `size` padding characters (made when "")."""
    base = f"{head} {send_ns}"
    k = size - len(base) - 1
    if k <= 0:
        return base
    return f"{base} {(pad or 'x' * size)[:k]}"


def parse_text(text: str) -> tuple[str, int] | None:
    """Inverse of `make_text`: (head, send_ns), or None when the text is not of that form."""
    head, _, rest = text.partition(" ")
    ns, _, _ = rest.partition(" ")
    try:
        return head, int(ns)
    except ValueError:
        return None


class Texts:
    """The message texts of one load process.

    Args:
        run_tag: letters/digits marking this run; worker: the process index; size: text length
            in characters.
    """

    def __init__(self, run_tag: str, worker: int, size: int) -> None:
        self.run_tag = run_tag
        self.private_tag = f"{run_tag}w{worker}p"
        self.broadcast_tag = f"{run_tag}w{worker}b"
        self.size = size
        self._pad = "x" * max(size, 1)

    def private(self, n: int, send_ns: int) -> tuple[str, str]:
        """(send id, text) of this process's private message number n sent at `send_ns`."""
        head = f"{self.private_tag}{n:x}"
        return head, make_text(head, send_ns, self.size, self._pad)

    def broadcast(self, n: int, send_ns: int) -> tuple[str, str]:
        """(send id, text) of this process's broadcast number n sent at `send_ns`."""
        head = f"{self.broadcast_tag}{n:x}"
        return head, make_text(head, send_ns, self.size, self._pad)

    def read_private(self, text: str) -> tuple[int, int] | None:
        """(n, send_ns) of a private message sent by this process; None for a text that is not
        (another run's). An unreadable text with this process's tag gives n = -1 (a ledger
        counts it as foreign)."""
        if not text.startswith(self.private_tag):
            return None
        parsed = parse_text(text)
        if parsed is None:
            return -1, 0
        try:
            return int(parsed[0][len(self.private_tag):], 16), parsed[1]
        except ValueError:
            return -1, 0

    def read_broadcast(self, text: str) -> int | None:
        """send_ns of a broadcast of this run (by any process; 0 when unreadable: it counts as
        delivered, with no latency); None for a text of another run."""
        if not text.startswith(self.run_tag):
            return None
        parsed = parse_text(text)
        return parsed[1] if parsed is not None else 0
