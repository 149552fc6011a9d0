"""Per-stage latency of requests inside the broker, recorded only under `chat-broker --stage-times
PATH` (a benchmark aid; the loop skips every call here when the flag is off).

Stages of one request, from the loop's monotonic clock (seconds, written as milliseconds):
- queued: from the wake-up that read it (poll returned) until the core began handling it;
- core: the core's handling (decode, checks, state change, the reply built);
- commit_wait: from the end of its wake-up (batch submitted) until the loop saw the batch durable
  and began sending that wake-up's output;
- send: from then until the wake-up's output was written to the sockets;
- total: queued + core + commit_wait + send.
Time in the kernel's and libzmq's queues before the poll returned is not seen by the broker: the
benchmark's end-to-end latency holds it.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any, Callable, Sequence

MAX_SAMPLES = 2_000_000
"""Requests recorded at most (about 100 s at 20k/s; 5 floats each); later ones are counted only."""
STAGES = ("queued", "core", "commit_wait", "send", "total")


class StageTimes:
    """Collects the stage times of every request (up to MAX_SAMPLES) and writes their percentiles.

    Use: `woke()` when the poll returns; `wrap(core.on_request)` replaces the core's handler;
    `take()` at the end of a wake-up returns a token for its output; `sent(token, released_at)`
    once that output is written; `write(path)` at exit.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.woke_at = 0.0
        self.samples: dict[str, list[float]] = {name: [] for name in STAGES}
        self.requests = 0
        self._current: list[tuple[float, float]] = []  # (core start, core end) of this wake-up's requests
        self.gc_pauses: list[list[float]] = [[], [], []]  # seconds per collection, by generation
        self._gc_start = 0.0

    def watch_gc(self) -> None:
        """Record the duration of every garbage collection from now on (gc.callbacks)."""
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = self.clock()
        elif len(self.gc_pauses[info["generation"]]) < MAX_SAMPLES:
            self.gc_pauses[info["generation"]].append(self.clock() - self._gc_start)

    def woke(self) -> None:
        """The poll returned: requests read from now on count their queueing from here."""
        self.woke_at = self.clock()

    def wrap(self, handler: Callable[..., None]) -> Callable[..., None]:
        """`handler` (the core's on_request) timed: the same arguments, nothing returned."""
        clock, current = self.clock, self._current

        def timed(*args: Any) -> None:
            start = clock()
            handler(*args)
            current.append((start, clock()))
        return timed

    def take(self) -> tuple[float, float, list[tuple[float, float]]] | None:
        """The token of this wake-up's requests (None when it read none): (woke at, submitted at,
        [(core start, core end)])."""
        if not self._current:
            return None
        token = (self.woke_at, self.clock(), self._current[:])
        self._current.clear()
        return token

    def sent(self, token: tuple[float, float, list[tuple[float, float]]], released_at: float) -> None:
        """The output of `token`'s wake-up began leaving at `released_at` and has now been sent."""
        woke_at, submitted_at, requests = token
        done = self.clock()
        self.requests += len(requests)
        if len(self.samples["total"]) >= MAX_SAMPLES:
            return
        s = self.samples
        for start, end in requests:
            s["queued"].append(start - woke_at)
            s["core"].append(end - start)
            s["commit_wait"].append(released_at - submitted_at)
            s["send"].append(done - released_at)
            s["total"].append(done - woke_at)

    def summary(self, commits: Sequence[tuple[float, int]] = ()) -> dict[str, Any]:
        """{"requests": N, "stages": {stage: {"p50", "p90", "p99", "max"} in milliseconds},
        "gc": {"gen0".."gen2": {"count", "total_ms", percentiles in ms}}, "commits": {"count": N,
        "ms": {percentiles}, "wake_ups": {the same, in wake-ups per commit}}}; `commits` is
        broker.writer.CommitWriter.commits."""
        stages = {name: _percentiles(values, 1000) for name, values in self.samples.items()}
        pauses = {f"gen{g}": {"count": len(p), "total_ms": round(sum(p) * 1000, 3), **_percentiles(p, 1000)}
                  for g, p in enumerate(self.gc_pauses)}
        return {"requests": self.requests, "stages": stages, "gc": pauses,
                "commits": {"count": len(commits), "ms": _percentiles([c[0] for c in commits], 1000),
                            "wake_ups": _percentiles([float(c[1]) for c in commits], 1)}}

    def write(self, path: str, commits: Sequence[tuple[float, int]] = ()) -> None:
        """Write summary(commits) as JSON to `path` (atomically: a temporary file renamed). Raises OSError."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.summary(commits), f)
        os.replace(tmp, path)


def _percentiles(values: list[float], scale: float) -> dict[str, float]:
    """{"p50", "p90", "p99", "max"} of `values` times `scale` (sorts `values` in place)."""
    values.sort()
    out = {f"p{q}": round(_quantile(values, q / 100) * scale, 3) for q in (50, 90, 99)}
    out["max"] = round(values[-1] * scale, 3) if values else 0.0
    return out


def _quantile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of sorted `values` (nearest rank); 0.0 when empty."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]
