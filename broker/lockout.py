"""Failed-login accounting per (account, IP): after N wrong passwords the IP is blocked for that
account for a while (issue #2; seed 001: 3 tries, then 60 s). Pure: time is passed in, in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginGuard:
    """Counts wrong passwords per (user, ip) and blocks the pair for `block_seconds`.

    Args:
        max_attempts: wrong passwords that trigger a block (>= 1).
        block_seconds: length of a block, seconds.
        max_entries: bound on remembered pairs; the oldest are forgotten first.
    """

    def __init__(self, max_attempts: int, block_seconds: float, max_entries: int = 100_000) -> None:
        self.max_attempts = max(1, max_attempts)
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], _Entry] = {}

    def blocked_for(self, user: str, ip: str, now: float) -> float:
        """Seconds the pair stays blocked (0.0 when not blocked)."""
        entry = self._entries.get((user, ip))
        if entry is None or entry.blocked_until <= now:
            return 0.0
        return entry.blocked_until - now

    def fail(self, user: str, ip: str, now: float) -> int:
        """Record a wrong password. Returns attempts left before a block; 0 means blocked now."""
        key = (user, ip)
        entry = self._entries.pop(key, None) or _Entry()
        if entry.blocked_until and entry.blocked_until <= now:
            entry = _Entry()
        entry.failures += 1
        entry.last = now
        self._entries[key] = entry  # re-inserted: dict order is least recently failed first
        if entry.failures >= self.max_attempts:
            entry.blocked_until = now + self.block_seconds
            entry.failures = 0
            left = 0
        else:
            left = self.max_attempts - entry.failures
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]
        return left

    def succeed(self, user: str, ip: str) -> None:
        """Forget the pair's failures after a correct password."""
        self._entries.pop((user, ip), None)

    def purge(self, now: float) -> None:
        """Forget pairs not blocked and silent for `block_seconds`."""
        stale = [k for k, e in self._entries.items() if e.blocked_until <= now and e.last + self.block_seconds <= now]
        for key in stale:
            del self._entries[key]
