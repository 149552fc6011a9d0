"""Unit tests of broker.limits (the open-files limit) and the broker's start-up check of it."""

from __future__ import annotations

import logging
import resource

import pytest

from zmq_chat.broker.cli import check_fd_limit
from zmq_chat.broker.limits import FDS_PER_CLIENT, FDS_RESERVED, clients_held, files_needed, raise_open_files_limit


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


def test_clients_held_counts_two_files_per_client_after_the_reserve():
    assert clients_held(20000) == (20000 - FDS_RESERVED) // FDS_PER_CLIENT == 9968
    assert clients_held(FDS_RESERVED) == 0 and clients_held(10) == 0
    assert clients_held(-1) is None and clients_held(0) is None  # unlimited, unknown
    assert files_needed(9968) <= 20000 < files_needed(9969)


@pytest.mark.timeout(5)
def test_check_fd_limit_says_at_info_how_many_clients_fit(caplog):
    caplog.set_level(logging.INFO, logger="zmq_chat.broker")
    soft = check_fd_limit(1)
    assert [r.levelname for r in caplog.records] == ["INFO"]
    held = clients_held(soft)
    if held is not None:
        assert f"open files limit {soft} holds about {held} clients" in caplog.text


@pytest.mark.timeout(5)
def test_check_fd_limit_warns_only_for_an_explicit_max_clients_that_does_not_fit(caplog):
    caplog.set_level(logging.INFO, logger="zmq_chat.broker")
    soft = check_fd_limit(1)
    held = clients_held(soft)
    if held is None:
        pytest.skip("no open-files limit here")
    caplog.clear()
    check_fd_limit(held + 1, explicit=False)  # the default --max-clients: no operator asked for it
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert f"--max-clients {held + 1}" in caplog.text
    caplog.clear()
    check_fd_limit(held + 1, explicit=True)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"holds about {held} clients, fewer than --max-clients {held + 1}" in caplog.text
    assert f"ulimit -n {files_needed(held + 1)}" in caplog.text
