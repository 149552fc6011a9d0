"""Unit tests of broker.limits (the open-files limit) and the broker's start-up check of it."""

from __future__ import annotations

import logging
import resource

import pytest

from zmq_chat.broker.cli import check_fd_limit
from zmq_chat.broker.limits import raise_open_files_limit


@pytest.mark.timeout(5)
def test_raise_open_files_limit_reaches_at_least_the_hard_limit():
    soft0, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft0, 256), hard))
        got = raise_open_files_limit(0)
        assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft0, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.mark.timeout(5)
def test_check_fd_limit_warns_only_when_max_clients_do_not_fit(caplog):
    caplog.set_level(logging.WARNING, logger="zmq_chat.broker")
    soft = check_fd_limit(1)
    assert not caplog.records
    if 0 < soft < 10**9:
        check_fd_limit(soft)  # soft clients need 2 * soft descriptors
        assert "open files limit" in caplog.text and "--max-clients" in caplog.text
