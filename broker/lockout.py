"""Failed-login accounting (docs/security.md, "Guessing passwords"). Pure: time is passed in, in
seconds.

* LoginGuard, per (account, IP): after N wrong passwords the IP is blocked for that account for a
  while (issue #2; seed 001: 3 tries, then 60 s).
* AccountThrottle, per account, from any address (issue #7): after N wrong passwords within
  `forget_after` seconds of each other, verifications for the account start at most once per
  `interval` seconds, so many addresses together guess no faster than one.
"""

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

    def failures(self, user: str, ip: str) -> int:
        """Wrong passwords of the pair not yet forgotten (0 when none; a block resets the count)."""
        entry = self._entries.get((user, ip))
        return 0 if entry is None else max(entry.failures, 1 if entry.blocked_until else 0)

    def succeed(self, user: str, ip: str) -> None:
        """Forget the pair's failures after a correct password."""
        self._entries.pop((user, ip), None)

    def purge(self, now: float) -> None:
        """Forget pairs not blocked and silent for `block_seconds`."""
        stale = [k for k, e in self._entries.items() if e.blocked_until <= now and e.last + self.block_seconds <= now]
        for key in stale:
            del self._entries[key]


class AccountThrottle:
    """Per account: wrong passwords from any address; once `max_attempts` of them came within
    `forget_after` seconds of each other, a verification may start only `interval` seconds after
    the previous one (the scheduler holds the others). A correct password does not clear it (an
    attack may go on; the owner's logins go first, broker.authqueue): it ends `forget_after`
    seconds after the last wrong password.

    Args:
        max_attempts: wrong passwords before the throttle (>= 1).
        interval: seconds between verifications of a throttled account.
        forget_after: seconds without a wrong password after which the count starts again.
    """

    def __init__(self, max_attempts: int, interval: float, forget_after: float) -> None:
        self.max_attempts = max(1, max_attempts)
        self.interval = interval
        self.forget_after = forget_after
        self._fails: dict[str, tuple[int, float]] = {}  # user -> (wrong passwords, last one)
        self._next: dict[str, float] = {}  # user -> earliest start of the next verification

    def throttled(self, user: str, now: float) -> bool:
        """True when `user` has had max_attempts wrong passwords lately."""
        count, last = self._fails.get(user, (0, 0.0))
        return count >= self.max_attempts and now - last < self.forget_after

    def ready_at(self, user: str, now: float) -> float:
        """When a verification of `user` may start (now, or later while throttled)."""
        if not self.throttled(user, now):
            return now
        return max(now, self._next.get(user, now))

    def started(self, user: str, now: float) -> None:
        """A verification of `user` starts now."""
        if self.throttled(user, now):
            self._next[user] = now + self.interval

    def failed(self, user: str, now: float) -> None:
        """A wrong password for `user`."""
        count, last = self._fails.get(user, (0, 0.0))
        if now - last >= self.forget_after:
            count = 0
        self._fails[user] = (count + 1, now)

    def purge(self, now: float) -> None:
        """Forget accounts without a wrong password for forget_after seconds."""
        for user in [u for u, (_, last) in self._fails.items() if now - last >= self.forget_after]:
            del self._fails[user]
            self._next.pop(user, None)
