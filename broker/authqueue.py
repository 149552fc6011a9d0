"""Fair queueing of argon2id work (docs/security.md, "Login storms"). Pure: no threads, no clock.

Logins and registrations wait here, one queue per IP address, until a hashing thread is free; the
core hands out at most one job per free thread. `pick` serves the IPs round robin, by rank: first
jobs ranked 0 (the core: an address this account logged in from before), then 1 (a clean
address: no recent wrong passwords from it, none for this account), then 2 (the others). So a
storm of wrong passwords from many addresses slows down the attackers, not a user logging in from
a fresh or a known address: that user waits for one job at most.
A job is picked only when it is ready (an account under attack verifies once a second,
broker.lockout.AccountThrottle); jobs of a connection that closed are dropped unrun.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from broker.accounts import AuthJob


class AuthQueue:
    """Waiting argon2id jobs, per IP.

    Args:
        per_ip: most jobs one IP may have waiting (more are refused by `add`).
    """

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self._queues: dict[str, deque[AuthJob]] = {}
        self._order: deque[str] = deque()  # IPs with waiting jobs, next to serve first
        self._count = 0
        self._per_user: dict[str, int] = {}  # waiting verify jobs per account

    def __len__(self) -> int:
        return self._count

    def waiting_for(self, user: str) -> int:
        """Logins (verify jobs) of account `user` waiting."""
        return self._per_user.get(user, 0)

    def _counted(self, job: AuthJob, delta: int) -> None:
        self._count += delta
        if job.kind == "verify":
            left = self._per_user.get(job.user, 0) + delta
            if left > 0:
                self._per_user[job.user] = left
            else:
                self._per_user.pop(job.user, None)

    def add(self, job: AuthJob) -> bool:
        """Queue `job` behind its IP's others. False (nothing queued) when that IP has per_ip waiting."""
        queue = self._queues.get(job.ip)
        if queue is None:
            queue = self._queues[job.ip] = deque()
            self._order.append(job.ip)
        elif len(queue) >= self.per_ip:
            return False
        queue.append(job)
        self._counted(job, 1)
        return True

    def drop(self, keep: Callable[[AuthJob], bool]) -> list[AuthJob]:
        """Remove and return every waiting job for which keep(job) is False (e.g. its connection
        closed)."""
        gone: list[AuthJob] = []
        for ip in list(self._queues):
            queue = self._queues[ip]
            kept = deque(j for j in queue if keep(j))
            if len(kept) != len(queue):
                for j in queue:
                    if j not in kept:
                        gone.append(j)
                        self._counted(j, -1)
                self._set(ip, kept)
        return gone

    def pick(self, ready: Callable[[AuthJob], bool], rank: Callable[[AuthJob], int]) -> AuthJob | None:
        """The next job to run, or None: only ready ones, lowest rank (0, 1, 2) first, round robin
        over IPs within a rank; the IP served goes to the back of the line."""
        for want in (0, 1, 2):
            for _ in range(len(self._order)):
                ip = self._order[0]
                self._order.rotate(-1)
                queue = self._queues[ip]
                for job in queue:
                    if rank(job) == want and ready(job):
                        queue.remove(job)
                        self._counted(job, -1)
                        self._set(ip, queue)
                        return job
        return None

    def _set(self, ip: str, queue: deque) -> None:
        if queue:
            self._queues[ip] = queue
            return
        del self._queues[ip]
        self._order.remove(ip)
