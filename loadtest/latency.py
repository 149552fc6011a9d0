"""End-to-end latency of a load run: HDR histograms in microseconds (1 us .. 1 h, 3 significant
digits), recorded per second of the run in each load process (`LatencyRecorder`), shipped encoded
(bytes) and summarised as percentiles in milliseconds (`LatencySummary`). Pure: no clocks of its
own, callers pass monotonic nanoseconds in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from hdrh.histogram import HdrHistogram

LATENCY_LOWEST_US = 1
LATENCY_HIGHEST_US = 3_600_000_000
"""Latencies are recorded in microseconds, 1 us .. 1 hour (larger values are clamped)."""
LATENCY_DIGITS = 3
"""Significant decimal digits of the HDR histograms (0.1 % value resolution)."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_NS = 1_000_000_000


def new_histogram() -> HdrHistogram:
    """A fresh latency histogram: values in microseconds, 1 us .. 1 h, 3 significant digits."""
    return HdrHistogram(LATENCY_LOWEST_US, LATENCY_HIGHEST_US, LATENCY_DIGITS)


def merge_histograms(encoded: Iterable[bytes | str | None]) -> HdrHistogram:
    """Add up histograms encoded with `HdrHistogram.encode()` (e.g. one per load process; None and
    b"" count as empty) into one new histogram."""
    hist = new_histogram()
    for blob in encoded:
        if blob:
            hist.decode_and_add(blob)
    return hist


def decode_histogram(encoded: bytes | str | None) -> HdrHistogram:
    """Decode one encoded histogram (None or b"" -> an empty histogram)."""
    return merge_histograms([encoded])


@dataclass
class LatencySummary:
    """Percentiles of one latency histogram, in milliseconds (float); all 0.0 when count is 0.

    Fields: count (int, values recorded), p50, p90, p99, p99_9, max, mean (ms).
    """

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    p99_9: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @classmethod
    def of(cls, hist: HdrHistogram) -> "LatencySummary":
        """Summarise a microsecond histogram (one pass over its counts)."""
        count = hist.get_total_count()
        if not count:
            return cls()
        values = hist.get_percentile_to_value_dict(list(PERCENTILES))
        p50, p90, p99, p99_9 = (values.get(p, 0) / 1000.0 for p in PERCENTILES)
        return cls(count, p50, p90, p99, p99_9, hist.get_max_value() / 1000.0, hist.get_mean_value() / 1000.0)

    @classmethod
    def merged(cls, encoded: Iterable[bytes | str | None]) -> "LatencySummary":
        """Summarise the sum of encoded histograms (see `merge_histograms`)."""
        return cls.of(merge_histograms(encoded))


def quantize_us(us: int) -> int:
    """Round a microsecond value down to 11 significant bits, the resolution of a 3-digit HDR
    histogram, so that equal buckets can be counted before recording (see LatencyRecorder)."""
    b = us.bit_length() - 11
    return us >> b << b if b > 0 else us


class LatencyRecorder:
    """End-to-end latency of one message kind: one histogram per second of the run, and the total.

    Args:
        start_ns: the run's start, monotonic nanoseconds (second 0 begins here).
    `record` is cheap (well under a microsecond): it appends the value, rounded to the histogram's
    resolution, to a list; the list is counted (collections.Counter, C speed) into the second's
    histogram when the second ends. `record` must be called with non-decreasing `now_ns`; a value
    for an earlier second is added to the current one.
    """

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.total = new_histogram()
        self.seconds: list[tuple[int, int, bytes]] = []  # (second, count, encoded histogram)
        self._sec = 0
        self._next_ns = start_ns + _NS
        self._values: list[int] = []
        self._last_p99 = 0.0

    def record(self, now_ns: int, latency_ns: int) -> None:
        """Record one delivery at `now_ns` (monotonic ns) that took `latency_ns` (ns, clamped to
        1 us .. 1 h)."""
        if now_ns >= self._next_ns:
            self._roll((now_ns - self.start_ns) // _NS)
        us = latency_ns // 1000
        self._values.append(quantize_us(us) if us > 0 else 1)

    def roll_to(self, now_ns: int) -> None:
        """Close the seconds that ended before `now_ns` (call about once a second, cheap otherwise)."""
        if now_ns >= self._next_ns:
            self._roll((now_ns - self.start_ns) // _NS)

    def last_second_p99(self) -> float:
        """p99 (ms) of the last closed second that had values, 0.0 if none."""
        return self._last_p99

    def _roll(self, sec: int) -> None:
        if self._values:
            hist = new_histogram()
            for us, n in Counter(self._values).items():
                hist.record_value(min(us, LATENCY_HIGHEST_US), n)
            self.total.add(hist)
            self._last_p99 = hist.get_value_at_percentile(99.0) / 1000.0
            self.seconds.append((self._sec, len(self._values), hist.encode()))
            self._values = []
        self._sec = max(sec, self._sec)
        self._next_ns = self.start_ns + (self._sec + 1) * _NS

    def finish(self) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """Close the current second. Returns (encoded total histogram, [(second, count, encoded)])."""
        self._roll(self._sec + 1)
        return self.total.encode(), self.seconds
