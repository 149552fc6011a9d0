"""Token buckets: the broker's flood control (docs/security.md, "Limits"). Pure: time is passed in.

A bucket holds up to `burst` tokens and gains `rate` tokens per second; an action takes one token
(or `cost`). When too few are left the action is refused and the caller is told how many seconds
until it would pass: that is the `retry_after` of E_RATE_LIMITED and E_BLOCKED replies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate` tokens per second (> 0), at most `burst` (>= 1); full when made."""

    rate: float
    burst: float
    tokens: float | None = None  # None: full, from the first use on
    stamp: float = 0.0

    def _refill(self, now: float) -> float:
        """Add the tokens gained up to `now` (seconds); returns how many there are."""
        if self.tokens is None:
            self.tokens, self.stamp = self.burst, now
        elif now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens at time `now` (seconds). Returns 0.0 when taken, else the seconds
        until they would be there (nothing is taken then)."""
        tokens = self._refill(now)
        if tokens >= cost:
            self.tokens = tokens - cost
            return 0.0
        return (cost - tokens) / self.rate

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there (0.0 when they are now); takes nothing."""
        tokens = self._refill(now)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket is back to `burst` (it can be forgotten)."""
        return self._refill(now) >= self.burst


class KeyedBuckets:
    """One TokenBucket per key (e.g. per IP address), made on first use; full buckets are
    forgotten by `purge`, and at most `max_keys` are kept (the least recently made go first)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """TokenBucket.take on the bucket of `key`."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            while len(self._buckets) > self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        return bucket.take(now, cost)

    def drain(self, key: str, now: float) -> None:
        """Empty the bucket of `key` and put it a full burst in debt (a penalty: nothing passes
        until it has refilled twice over, 2 x burst / rate seconds)."""
        self.take(key, now, 0.0)
        self._buckets[key].tokens = -self.burst

    def wait(self, key: str, now: float, cost: float = 1.0) -> float:
        """Seconds until `key` may take `cost` tokens (0.0 when unknown or now)."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(now, cost)

    def purge(self, now: float) -> None:
        """Forget the buckets that are full again."""
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
