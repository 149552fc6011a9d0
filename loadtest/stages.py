"""Reading the broker's per-stage latency file (`chat-broker --stage-times PATH`, written at a
clean exit by broker.stages) and printing it as a table. Pure apart from reading the file.

The file is JSON: {"requests": N, "stages": {stage: {"p50", "p90", "p99", "max"}}, and optionally
"commits": {"count": N, "ms": {percentiles}, "wake_ups": {percentiles}}}, where the stages are
queued, core, commit_wait, send and total and every stage figure is in milliseconds.

    report = read_stage_times(path)        # None when the broker wrote no file
    for line in stage_table(report):
        print(line)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("queued", "core", "commit_wait", "send", "total")
"""The stages of one request in the broker, in order (total = read to sent)."""
PERCENTILES = ("p50", "p90", "p99", "max")


@dataclass
class StageReport:
    """What a --stage-times file says: requests (int, requests timed), stages {stage: {"p50",
    "p90", "p99", "max": ms}} for every name of STAGES, commits ({"count": int, "ms": {...},
    "wake_ups": {...}}, or {} when the file has none)."""

    requests: int
    stages: dict[str, dict[str, float]]
    commits: dict[str, Any] = field(default_factory=dict)


def _figures(value: Any, what: str) -> dict[str, float]:
    """{"p50", "p90", "p99", "max"} of `value` as floats. Raises ValueError naming `what`."""
    if not isinstance(value, dict):
        raise ValueError(f"{what}: not an object")
    out = {}
    for key in PERCENTILES:
        figure = value.get(key)
        if isinstance(figure, bool) or not isinstance(figure, (int, float)) or not math.isfinite(figure):
            raise ValueError(f"{what}.{key}: not a number")
        out[key] = float(figure)
    return out


def parse_stage_times(data: Any) -> StageReport:
    """A StageReport from the decoded JSON of a --stage-times file.

    Raises ValueError: not of the documented shape (a stage or a percentile missing, not a number).
    """
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ValueError("not a stage-times object (no 'stages')")
    requests = data.get("requests")
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        raise ValueError("requests: not a whole number")
    stages = {name: _figures(data["stages"].get(name), name) for name in STAGES}
    commits: dict[str, Any] = {}
    raw = data.get("commits")
    if isinstance(raw, dict) and isinstance(raw.get("count"), int):
        commits = {"count": raw["count"]}
        for key in ("ms", "wake_ups"):
            if key in raw:
                commits[key] = _figures(raw[key], f"commits.{key}")
    return StageReport(requests, stages, commits)


def read_stage_times(path: str | Path) -> StageReport | None:
    """Read a --stage-times file. Returns None when it does not exist (the broker did not write
    it: the flag unknown to it, or it did not exit cleanly).

    Raises ValueError: the file is not JSON of the documented shape; OSError: it cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    return parse_stage_times(data)


def stage_table(report: StageReport, indent: str = "     ") -> list[str]:
    """Lines of a table: one row per stage with its p50, p90, p99 and max (ms), then the commits
    (count, duration percentiles in ms, wake-ups per commit) when the file had them."""
    lines = [f"{indent}per-stage latency in the broker, {report.requests:,} requests (ms):",
             f"{indent}{'stage':<12} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}"]
    for name in STAGES:
        f = report.stages[name]
        lines.append(f"{indent}{name:<12} {f['p50']:>9.3f} {f['p90']:>9.3f} {f['p99']:>9.3f} {f['max']:>9.3f}")
    c = report.commits
    if c:
        line = f"{indent}commits: {c['count']:,}"
        if "ms" in c:
            line += f"; duration p50 {c['ms']['p50']:.3f} ms, p99 {c['ms']['p99']:.3f} ms, max {c['ms']['max']:.3f} ms"
        if "wake_ups" in c:
            line += f"; wake-ups per commit p50 {c['wake_ups']['p50']:g}, max {c['wake_ups']['max']:g}"
        lines.append(line)
    return lines
