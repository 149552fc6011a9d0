"""Presentation of a load run: the live rich progress display, the final summary tables, the JSON
file and the per-second plot (matplotlib, imported only when a plot is asked for).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zmq_chat.loadtest.accounting import KindResults, Results
from zmq_chat.loadtest.latency import LatencySummary
from zmq_chat.loadtest.runner import Progress


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; `str(exc)` says how to install it."""


class LiveDisplay:
    """Live progress on a rich Console (stderr by default): account preparation, logins, then the
    sending window with the current rates. Use as a context manager; call it with runner.Progress
    snapshots (it is the `progress` callback of run_load) and `prepared(done, total)` during the
    preparation. On a terminal it draws progress bars; otherwise (CI logs, pipes) it prints a line
    per phase and one every `LINE_EVERY_S` seconds while sending.
    """

    LINE_EVERY_S = 2.0

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.bar = RichProgress(
            TextColumn("[bold]{task.description:<8}"),
            BarColumn(bar_width=24),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self._tasks: dict[str, Any] = {}
        self._phase = ""
        self._next_line = 0.0
        self._prepared_said = False

    def __enter__(self) -> "LiveDisplay":
        if self.live:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.bar.stop()

    def _task(self, name: str, total: float) -> Any:
        if name not in self._tasks:
            self._tasks[name] = self.bar.add_task(name, total=total, info="")
        return self._tasks[name]

    def prepared(self, done: int, total: int) -> None:
        """Progress of the account preparation (accounts done out of total)."""
        if self.live:
            self.bar.update(self._task("accounts", max(total, 1)), completed=done, info=f"{done}/{total} accounts")
        elif done >= total and not self._prepared_said:
            self._prepared_said = True
            self._say(f"accounts: {done}/{total} done")

    @staticmethod
    def _rates(p: Progress) -> str:
        return (f"sent {p.send_rate:,.0f}/s  private {p.private_rate:,.0f}/s  bcast deliveries "
                f"{p.broadcast_rate:,.0f}/s  p99 {p.private_p99_ms:.1f}/{p.broadcast_p99_ms:.1f} ms  "
                f"errors {p.errors}  in flight {p.inflight}")

    def __call__(self, p: Progress) -> None:
        if not self.live:
            self._line(p)
            return
        total = max(p.logins_total, 1)
        if p.phase == "login":
            self.bar.update(self._task("login", total), completed=p.logins_done,
                            info=f"{p.logins_ok}/{p.logins_total} logged in")
            return
        self.bar.update(self._task("login", total), completed=total, info=f"{p.logins_ok}/{p.logins_total} logged in")
        dur = max(p.duration_s, 1e-9)
        info = self._rates(p)
        if p.phase == "drain":
            info = "[drain] " + info
        elif p.phase == "done":
            info = "average: " + info
        self.bar.update(self._task("load", dur), completed=min(p.elapsed_s, dur), info=info)

    def _line(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase != self._phase:
            if self._phase == "login":
                self._say(f"logins: {p.logins_ok}/{p.logins_total} ok")
            self._phase = p.phase
            if p.phase == "done":
                self._say("done; averages: " + self._rates(p))
            else:
                self._say({"login": "logging in", "run": f"sending for {p.duration_s:g} s",
                           "drain": "draining"}.get(p.phase, p.phase))
            self._next_line = now + self.LINE_EVERY_S
        elif p.phase == "run" and now >= self._next_line:
            self._next_line = now + self.LINE_EVERY_S
            self._say(f"  {p.elapsed_s:5.1f} s  " + self._rates(p))

    def _say(self, line: str) -> None:
        self.console.print(line, soft_wrap=True, highlight=False, markup=False)


def _n(x: int | float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.1f}"


def _ms(x: float) -> str:
    return f"{x:,.2f}"


def _codes(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "-"


def summary_tables(results: Results) -> list[Table]:
    """The summary as rich Tables: [run overview with logins, messages per kind]."""
    r = results
    overview = Table(title="chat-loadtest run", show_header=False, title_justify="left")
    overview.add_column("what", style="bold")
    overview.add_column("value")
    overview.add_row("clients", f"{r.logged_in:,} logged in of {r.clients:,} ({r.processes} processes, "
                     f"{r.subscribers:,} subscribers)")
    overview.add_row("sending window", f"{r.duration_s:g} s (active {r.active_s:.2f} s, drain {r.drain_s:.2f} s, "
                     f"{'drained' if r.drained else 'NOT drained: something still outstanding'})")
    opts = r.options
    if opts:
        mode = f"{opts.get('rate'):g} msg/s per client" if opts.get("rate") else "unbounded"
        overview.add_row("load", f"{mode}, window {opts.get('window')}, broadcast ratio "
                         f"{opts.get('broadcast_ratio'):g}, size {opts.get('size')} chars")
    if r.prepare:
        p = r.prepare
        overview.add_row("accounts", f"{p.get('created', 0):,} created, {p.get('existed', 0):,} existed, "
                         f"failed: {_codes(p.get('failed', {}))} ({p.get('elapsed_s', 0.0):.2f} s)")
    if r.per_broker:
        order = {label: i for i, label in enumerate(r.options.get("brokers") or [])}
        counts = sorted(r.per_broker.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        overview.add_row("brokers", ", ".join(f"{label} {n:,}" for label, n in counts) + " clients logged in")
    if r.sessions_ended:
        overview.add_row("sessions ended", _codes(r.sessions_ended))
    if r.broker_lost or r.skipped or r.bad_frames:
        overview.add_row("other", f"broker-lost reports {r.broker_lost}, sends skipped (window full) "
                         f"{r.skipped:,}, bad frames {r.bad_frames}")

    lg = r.login
    overview.add_row("logins", f"{lg.ok:,} ok, failed: {_codes(lg.failed)}, {lg.retries:,} retried; "
                     f"{lg.elapsed_s:.2f} s = {lg.rate:,.1f} logins/s")
    overview.add_row("login latency", f"p50 {_ms(lg.latency.p50)}  p90 {_ms(lg.latency.p90)}  "
                     f"p99 {_ms(lg.latency.p99)}  max {_ms(lg.latency.max)} ms")
    overview.add_row("result", "[green]no acknowledged message lost[/]" if r.ok
                     else f"[red]{r.lost:,} acknowledged deliveries lost[/]")

    msgs = Table(title="messages", title_justify="left")
    msgs.add_column("", style="bold")
    msgs.add_column("private", justify="right")
    msgs.add_column("broadcast", justify="right")
    pv, bc = r.private, r.broadcast

    def row(name: str, f) -> None:  # noqa: ANN001
        msgs.add_row(name, f(pv), f(bc))

    row("sent", lambda k: _n(k.sent))
    row("acknowledged (ok)", lambda k: _n(k.acked))
    row("errors", lambda k: _codes(k.errors))
    row("unanswered", lambda k: _n(k.unanswered))
    row("expected deliveries", lambda k: _n(k.expected))
    row("delivered", lambda k: _n(k.delivered))
    row("  of which via history repair", lambda k: _n(k.repaired) if k is bc else "-")
    row("delivered, not acked", lambda k: _n(k.delivered_unacked))
    row("lost", lambda k: (f"[red]{k.lost:,}[/]" if k.lost else "0"))
    row("duplicated", lambda k: _n(k.duplicated))
    row("send rate (msg/s)", lambda k: f"{k.send_rate:,.1f}")
    row("throughput (deliveries/s)", lambda k: f"{k.throughput:,.1f}")
    for label, attr in (("latency p50 ms", "p50"), ("latency p90 ms", "p90"), ("latency p99 ms", "p99"),
                        ("latency p99.9 ms", "p99_9"), ("latency max ms", "max")):
        row(label, lambda k, a=attr: _ms(getattr(k.latency, a)))
    return [overview, msgs]


def print_summary(results: Results, console: Console | None = None) -> None:
    """Print the summary tables (stdout by default)."""
    console = console or Console()
    for table in summary_tables(results):
        console.print(table)


def write_json(results: Results, path: str | os.PathLike[str]) -> None:
    """Write every figure of `results` as JSON (Results.to_dict(); latencies in ms). Raises OSError."""
    Path(path).write_text(json.dumps(results.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def plot(results: Results, path: str | os.PathLike[str]) -> None:
    """Plot per-second throughput (top) and latency percentiles (bottom, log scale) to an image file.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        OSError / ValueError: the file cannot be written (e.g. unknown extension).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install matplotlib (or pip install 'zmq-chat[plot]')") from None
    tl = results.timeline
    t = [s.t for s in tl]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    ax1.plot(t, [s.sent for s in tl], label="sent msg/s", color="grey", linestyle=":")
    ax1.plot(t, [s.private for s in tl], label="private deliveries/s", color="tab:blue")
    ax1.set_ylabel("messages per second")
    ax1.set_title(f"chat-loadtest: {results.logged_in} clients, {results.duration_s:g} s")
    ax1.grid(True, alpha=0.3)
    ax1.set_ylim(bottom=0)
    lines = ax1.get_lines()
    if any(s.broadcast for s in tl):  # broadcast deliveries fan out: own scale on the right
        axb = ax1.twinx()
        lines += axb.plot(t, [s.broadcast for s in tl], label="broadcast deliveries/s (right)", color="tab:orange")
        axb.set_ylabel("broadcast deliveries per second")
        axb.set_ylim(bottom=0)
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="lower center", fontsize="small")
    colors = {"p50": "tab:green", "p90": "tab:blue", "p99": "tab:orange", "p99.9": "tab:red"}
    for kind, style in (("private", "-"), ("broadcast", "--")):
        for label, attr in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99_9")):
            pts = [(s.t, getattr(getattr(s, f"{kind}_latency"), attr)) for s in tl
                   if getattr(s, f"{kind}_latency") is not None]
            if pts:
                ax2.plot([p[0] for p in pts], [max(p[1], 1e-3) for p in pts], style, color=colors[label],
                         label=f"{kind} {label}")
    ax2.set_yscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax2.yaxis.set_major_formatter(plain)
    ax2.yaxis.set_minor_formatter(plain)
    ax2.tick_params(axis="y", which="minor", labelsize="x-small")
    ax2.set_ylabel("end-to-end latency, ms")
    ax2.set_xlabel("seconds since start (per-second buckets)")
    if ax2.lines:
        ax2.legend(loc="best", fontsize="x-small", ncol=2)
    ax2.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    try:
        fig.savefig(os.fspath(path))
    finally:
        plt.close(fig)


def latency_line(name: str, lat: LatencySummary) -> str:
    """One-line latency summary, e.g. for logs: "private p50 1.2 p90 ... ms (n=...)"."""
    return (f"{name} p50 {lat.p50:.2f} p90 {lat.p90:.2f} p99 {lat.p99:.2f} p99.9 {lat.p99_9:.2f} "
            f"max {lat.max:.2f} ms (n={lat.count:,})")


def kind_line(name: str, k: KindResults) -> str:
    """One-line count summary of a message kind."""
    return (f"{name}: sent {k.sent:,} acked {k.acked:,} errors {sum(k.errors.values()):,} unanswered "
            f"{k.unanswered:,} delivered {k.delivered:,}/{k.expected:,} lost {k.lost:,} dup {k.duplicated:,} "
            f"{k.throughput:,.0f}/s")
