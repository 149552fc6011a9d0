"""Where the CPU went during one benchmark step (Linux /proc): two snapshots, one before and one
after the step, give each role's CPU time in that span as a share of one core.

    before = snapshot({"brokers": [pid, ...], "redis-server": [pid]})
    ... the step (load processes started and reaped by this process) ...
    shares = cpu_shares(before, snapshot(same roles), wall_s)   # {role: % of one core}

Roles: each named pid counts with its own threads and its live children (a broker's hashing
processes); "load" is what this process's children reaped during the step used (the
chat-loadtest worker processes: /proc/self/stat cutime + cstime); "bench" this process itself;
"other" the rest of the machine's busy time (the kernel's softirq work for loopback traffic, and
any other process on the machine). The parsers are pure; snapshot() reads /proc.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
"""Clock ticks per second of the times in /proc/<pid>/stat and /proc/stat."""


@dataclass(frozen=True)
class ProcTimes:
    """One line of /proc/<pid>/stat: ppid, own (utime + stime, ticks, every thread), reaped
    (cutime + cstime, ticks: children waited for)."""

    ppid: int
    own: int
    reaped: int


def parse_proc_stat(text: str) -> ProcTimes:
    """Parse the content of /proc/<pid>/stat. The command name (field 2) is in parentheses and may
    hold spaces and parentheses itself, so fields are counted after the last ')'.

    Raises ValueError: not of that shape."""
    close = text.rfind(")")
    if close < 0:
        raise ValueError("no ')' closing the command name")
    fields = text[close + 1:].split()
    if len(fields) < 15:
        raise ValueError(f"{len(fields)} fields after the command name, 15 or more expected")
    ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
    return ProcTimes(ppid, utime + stime, cutime + cstime)


def parse_machine_stat(text: str) -> tuple[int, int]:
    """(busy, total) ticks of all cores from the first line of /proc/stat ("cpu  user nice system
    idle iowait irq softirq steal ..."); idle and iowait are not busy. Raises ValueError."""
    first = text.splitlines()[0].split() if text else []
    if not first or first[0] != "cpu" or len(first) < 5:
        raise ValueError("the first line of /proc/stat is not the 'cpu' total")
    ticks = [int(x) for x in first[1:9]]  # guest and guest_nice are already in user and nice
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


@dataclass
class Snapshot:
    """CPU ticks at one instant: roles {role: ticks of its pids and their live children},
    bench (this process's own), reaped (this process's reaped children), machine_busy."""

    roles: dict[str, int] = field(default_factory=dict)
    bench: int = 0
    reaped: int = 0
    machine_busy: int = 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:  # the process ended between the listing and the read
        return ""


def _all_procs() -> dict[int, ProcTimes]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            text = _read(f"/proc/{name}/stat")
            if text:
                try:
                    out[int(name)] = parse_proc_stat(text)
                except ValueError:
                    continue
    return out


def role_ticks(procs: dict[int, ProcTimes], pids: list[int]) -> int:
    """Ticks of `pids` and of their children (one level: a broker's hashing processes) in `procs`
    ({pid: ProcTimes}); a pid not in `procs` counts 0."""
    total = sum(procs[p].own for p in pids if p in procs)
    wanted = set(pids)
    return total + sum(t.own for t in procs.values() if t.ppid in wanted)


def snapshot(roles: dict[str, list[int]]) -> Snapshot:
    """Read /proc now: the ticks of each role's pids (see role_ticks), this process's own and
    reaped children's ticks, the machine's busy ticks. Raises OSError without /proc."""
    procs = _all_procs()
    me = parse_proc_stat(_read("/proc/self/stat"))
    busy, _ = parse_machine_stat(_read("/proc/stat"))
    return Snapshot({role: role_ticks(procs, pids) for role, pids in roles.items()}, me.own, me.reaped, busy)


def cpu_shares(before: Snapshot, after: Snapshot, wall_s: float) -> dict[str, float]:
    """Each role's CPU between the snapshots, in % of one core over `wall_s` seconds (100 = one
    core busy the whole time; a 2-core machine has 200): the roles of `before`, then "load"
    (children reaped in between), "bench", "other" (machine busy time not in any of those, at
    least 0) and "machine" (all busy time). A role's process that ended in between counts 0."""
    scale = 100.0 / (CLK_TCK * max(wall_s, 1e-9))
    out = {role: max(0, after.roles.get(role, 0) - ticks) * scale for role, ticks in before.roles.items()}
    out["load"] = (after.reaped - before.reaped) * scale
    out["bench"] = (after.bench - before.bench) * scale
    machine = (after.machine_busy - before.machine_busy) * scale
    out["other"] = max(0.0, machine - sum(out.values()))
    out["machine"] = machine
    return out
