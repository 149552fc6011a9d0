"""The reporting side of bench/cluster.py (scenario 7): a measured Step, the rows and notes printed
for it, the summary table, and the pure helpers behind them (the broker log lines worth a look,
commit figures from --stage-times, redis-server's warnings, the CPU columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import failed, note, row
from zmq_chat.loadtest.accounting import Results
from zmq_chat.loadtest.stages import StageReport

LEVELS = ("WARNING", "ERROR", "CRITICAL")


@dataclass
class Step:
    """One measured step: `brokers` brokers on `store` ("sqlite" or "redis"), `mode` "closed" or
    "paced"; res (None when it failed: error says why); per broker: stages (its --stage-times
    report or None), statuses (exit status after SIGTERM), problems (its log lines worth a look);
    cpu ({role: % of one core} over the load run, closed-loop steps only)."""

    store: str
    brokers: int
    mode: str
    res: Results | None = None
    error: str = ""
    stages: list[StageReport | None] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """e.g. "Redis x2", "SQLite x1"."""
        return f"{'SQLite' if self.store == 'sqlite' else 'Redis'} x{self.brokers}"


def log_problems(lines: list[str]) -> list[str]:
    """The lines of a broker's stderr (`asctime levelname message`, see broker/cli.py) worth
    reporting: WARNING, ERROR and CRITICAL records and every line that is no log record (a
    traceback's lines, anything printed raw), without their newlines."""
    out = []
    for line in lines:
        parts = line.split(" ", 3)
        is_record = len(parts) >= 3 and parts[0][:2].isdigit() and parts[0].count("-") == 2
        if (not is_record and line.strip()) or (is_record and parts[2] in LEVELS):
            out.append(line.rstrip("\n"))
    return out


def commit_figures(stages: list[StageReport | None], messages: int) -> tuple[float, float, float]:
    """From the brokers' --stage-times reports and the `messages` acked in the run: (median of
    the brokers' commit p50 in ms, messages per commit over all brokers, writer time per message
    in microseconds estimated as sum(commits x commit p50) / messages). NaN where unknown."""
    nan = float("nan")
    known = [s.commits for s in stages if s is not None and s.commits.get("count") and "ms" in s.commits]
    if not known or messages <= 0:
        return nan, nan, nan
    p50s = sorted(c["ms"]["p50"] for c in known)
    median = p50s[len(p50s) // 2] if len(p50s) % 2 else (p50s[len(p50s) // 2 - 1] + p50s[len(p50s) // 2]) / 2
    commits = sum(c["count"] for c in known)
    busy_ms = sum(c["count"] * c["ms"]["p50"] for c in known)
    return median, messages / commits, busy_ms * 1000.0 / messages


def stage_lines(stages: list[StageReport | None]) -> list[str]:
    """One line per broker with a --stage-times report: each stage's p50/p99 in ms (requests
    inside that broker: queued, core, commit_wait, send, total)."""
    return [f"broker {i} stages p50/p99 ms: " + ", ".join(
        f"{name} {f['p50']:.2f}/{f['p99']:.2f}" for name, f in report.stages.items())
        for i, report in enumerate(stages) if report is not None]


def redis_warnings(path: Path) -> list[str]:
    """The warning-level lines (`pid:role date time # text`) of a redis-server log at `path`
    after its "Ready to accept connections" (the start banner is at that level too); [] when
    there is no log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    ready = next((i for i, line in enumerate(lines) if "Ready to accept connections" in line), -1)
    return [line for line in lines[ready + 1:] if " # " in line]


def report_step(step: Step, base: Step | None) -> None:
    """Print the rows of one step (baseline: the SQLite step of the same mode), then its
    commit figures, CPU shares, per-broker spread and problems."""
    name = f"{step.label} {'closed' if step.mode == 'closed' else 'paced'}"
    if step.res is None:
        failed("7", name, step.error or "no result")
    else:
        r, b = step.res, (base.res if base else None)
        skipped = f" ({r.skipped:,} skipped)" if r.skipped else ""
        row("7", f"{name}: msgs/s{skipped}", r.private.throughput, "msg/s", b.private.throughput if b else None)
        row("7", f"{name}: p50", r.private.latency.p50, "ms", b.private.latency.p50 if b else None)
        row("7", f"{name}: p99", r.private.latency.p99, "ms", b.private.latency.p99 if b else None)
        bad = r.private.lost + r.private.failed + r.private.unanswered + r.broker_lost + r.bad_frames
        row("7", f"{name}: lost/failed/unanswered", bad, "msgs", None, "0", bad == 0)
        if bad or r.sessions_ended or r.private.errors:
            note(f"lost {r.private.lost}, failed {r.private.failed} {r.private.errors}, unanswered "
                 f"{r.private.unanswered}, duplicated {r.private.duplicated}, broker lost {r.broker_lost}, "
                 f"sessions ended {r.sessions_ended}, bad frames {r.bad_frames}")
        if r.per_broker:
            note("clients per broker: " + ", ".join(f"{k} {v}" for k, v in sorted(r.per_broker.items())))
        median, per_commit, writer_us = commit_figures(step.stages, r.private.acked)
        note(f"commits: p50 {median:.2f} ms (median over brokers), {per_commit:.1f} msgs/commit, "
             f"writer ~{writer_us:.1f} us/msg (commits x p50 / msgs)")
        for line in stage_lines(step.stages):
            note(line)
        note("per second, delivery p50 ms: " + " ".join(
            f"{t.private_latency.p50:.0f}" if t.private_latency else "-" for t in r.timeline))
    if step.cpu:
        note("CPU, % of one core (200 = both): " + ", ".join(f"{k} {v:.0f}" for k, v in step.cpu.items()))
    if any(s not in (0, None) for s in step.statuses):
        note(f"broker exit statuses after SIGTERM: {step.statuses}")
    for line in step.problems[:40]:
        note(f"LOG {line}")
    if len(step.problems) > 40:
        note(f"... {len(step.problems) - 40} more log lines")


def cpu_columns(cpu: dict[str, float]) -> tuple[float, float, float, float]:
    """(all brokers, redis-server, load processes, the rest: this process and "other") from
    cpu_shares' dict with one "broker <i>" role per broker; NaN for each when `cpu` is empty."""
    if not cpu:
        return (float("nan"),) * 4
    brokers = sum(v for k, v in cpu.items() if k.startswith("broker "))
    return brokers, cpu.get("redis-server", 0.0), cpu.get("load", 0.0), cpu.get("bench", 0.0) + cpu.get("other", 0.0)


def summary_table(steps: list[Step], clients: int) -> list[str]:
    """The steps as one table (lines): per store and broker count, the closed-loop msgs/s and
    p99, the paced p50 and p99 (ms), acknowledged messages lost, the commit p50 (ms) and the CPU
    shares of the closed-loop step (% of one core)."""
    def cell(step: Step | None, value) -> str:
        return "-" if step is None or step.res is None else value(step)

    head = (f"{'store':<7}{'brokers':>8}{'clients':>9}{'msgs/s':>9}{'p50':>7}{'p99':>7}{'paced p50':>10}{'p99':>7}"
            f"{'lost':>6}{'commit p50':>11}   CPU % of a core: brokers / redis / load / rest")
    lines = [head]
    for store, brokers in dict.fromkeys((s.store, s.brokers) for s in steps):
        closed, paced = (next((s for s in steps if (s.store, s.brokers, s.mode) == (store, brokers, mode)), None)
                         for mode in ("closed", "paced"))
        lost = sum(s.res.private.lost for s in (closed, paced) if s is not None and s.res is not None)
        commit = commit_figures(closed.stages, closed.res.private.acked) if closed and closed.res else (float("nan"),)
        cpu = " / ".join(f"{v:.0f}" for v in cpu_columns(closed.cpu if closed else {}))
        lines.append(f"{store:<7}{brokers:>8}{clients:>9}"
                     f"{cell(closed, lambda s: f'{s.res.private.throughput:,.0f}'):>9}"
                     f"{cell(closed, lambda s: f'{s.res.private.latency.p50:.1f}'):>7}"
                     f"{cell(closed, lambda s: f'{s.res.private.latency.p99:.1f}'):>7}"
                     f"{cell(paced, lambda s: f'{s.res.private.latency.p50:.2f}'):>10}"
                     f"{cell(paced, lambda s: f'{s.res.private.latency.p99:.2f}'):>7}"
                     f"{lost:>6}{commit[0]:>11.2f}   {cpu}")
    return lines
