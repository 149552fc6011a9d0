"""Process limits the broker and the load tester share: the open-files limit (RLIMIT_NOFILE)."""

from __future__ import annotations

FDS_PER_CLIENT = 2
"""Open files per logged-in client in the broker: one TCP connection each for its DEALER and SUB."""
FDS_RESERVED = 64
"""Open files the broker needs besides its clients: the store, its sockets, pipes and monitors."""


def clients_held(soft_limit: int) -> int | None:
    """How many logged-in clients an open-files limit of `soft_limit` descriptors holds in the
    broker (FDS_PER_CLIENT each after FDS_RESERVED); None when unlimited (-1) or unknown (0)."""
    if soft_limit <= 0:
        return None
    return max(0, (soft_limit - FDS_RESERVED) // FDS_PER_CLIENT)


def files_needed(max_clients: int) -> int:
    """Open files the broker needs to hold `max_clients` logged-in clients."""
    return FDS_PER_CLIENT * max_clients + FDS_RESERVED


def raise_open_files_limit(wanted: int = 0) -> int:
    """Raise the open-files limit: both limits to `wanted` where the process may (root with
    CAP_SYS_RESOURCE), else the soft limit up to the hard one. Children inherit it.

    Returns the soft limit in force (-1 when unlimited, 0 where the platform has no such limit).
    Raises nothing: what is not allowed is left as it is.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    try:
        if hard != unlimited and hard < wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
                return wanted
            except (ValueError, OSError):
                pass  # not privileged: the soft limit can still go up to the hard one
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (ValueError, OSError):
        pass
    return soft
