"""Fair queueing of argon2id work (docs/security.md, "Login storms"). Pure: no threads, no clock.

Logins and registrations wait here until a hashing thread is free; the core hands out at most one
job per free thread. Each job is ranked when queued: 0 for an address its account logged in from
before, 1 for a clean address (no recent wrong password from it, none for this account), 2 for
the others. `pick` serves the lowest rank first and, within a rank, the IP addresses round robin,
each address's jobs in order. So a storm of wrong passwords from many addresses slows down the
attackers, not a user logging in from a fresh or a known address: that user waits for the jobs
already running and the first attempts of other fresh addresses at most. A job is picked only
when it is ready (an account under attack verifies once a second, broker.lockout.AccountThrottle);
jobs of a connection that closed are dropped unrun. Picking costs O(1) per job in the common case
(O(addresses) when the heads of their queues are not ready).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from zmq_chat.broker.accounts import AuthJob

RANKS = (0, 1, 2)


class AuthQueue:
    """Waiting argon2id jobs, per rank and IP.

    Args:
        per_ip: most jobs one IP may have waiting (more are refused by `add`).
    """

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self._queues: dict[int, dict[str, deque[AuthJob]]] = {r: {} for r in RANKS}
        self._order: dict[int, deque[str]] = {r: deque() for r in RANKS}  # IPs with jobs, next first
        self._per_ip: dict[str, int] = {}
        self._per_user: dict[str, int] = {}  # waiting verify jobs per account
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def waiting_for(self, user: str) -> int:
        """Logins (verify jobs) of account `user` waiting."""
        return self._per_user.get(user, 0)

    def add(self, job: AuthJob, rank: int = 1) -> bool:
        """Queue `job` at `rank` (0, 1 or 2) behind its IP's others there. False (nothing queued)
        when that IP has per_ip jobs waiting."""
        if self._per_ip.get(job.ip, 0) >= self.per_ip:
            return False
        queues = self._queues[rank]
        queue = queues.get(job.ip)
        if queue is None:
            queue = queues[job.ip] = deque()
            self._order[rank].append(job.ip)
        queue.append(job)
        self._counted(job, 1)
        return True

    def drop(self, keep: Callable[[AuthJob], bool]) -> list[AuthJob]:
        """Remove and return every waiting job for which keep(job) is False (e.g. its connection
        closed)."""
        gone: list[AuthJob] = []
        for rank in RANKS:
            for ip, queue in list(self._queues[rank].items()):
                kept = deque(j for j in queue if keep(j))
                if len(kept) == len(queue):
                    continue
                for j in queue:
                    if not keep(j):
                        gone.append(j)
                        self._counted(j, -1)
                self._set(rank, ip, kept)
        return gone

    def pick(self, ready: Callable[[AuthJob], bool]) -> AuthJob | None:
        """The next job to run, or None: the lowest rank with a ready job at the head of some
        address's queue, addresses round robin; the address served goes to the back of the line."""
        for rank in RANKS:
            order, queues = self._order[rank], self._queues[rank]
            for _ in range(len(order)):
                ip = order[0]
                order.rotate(-1)
                queue = queues[ip]
                if ready(queue[0]):
                    job = queue.popleft()
                    self._counted(job, -1)
                    self._set(rank, ip, queue)
                    return job
        return None

    def _counted(self, job: AuthJob, delta: int) -> None:
        self._count += delta
        _bump(self._per_ip, job.ip, delta)
        if job.kind == "verify":
            _bump(self._per_user, job.user, delta)

    def _set(self, rank: int, ip: str, queue: deque) -> None:
        if queue:
            self._queues[rank][ip] = queue
            return
        del self._queues[rank][ip]
        self._order[rank].remove(ip)


def _bump(counts: dict[str, int], key: str, delta: int) -> None:
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
