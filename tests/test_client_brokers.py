"""Unit tests of client.brokers (pure): the --host list, the key of each broker, the failover order;
and of chat-client's parsing of them (client.cli.parse_args)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from zmq_chat.client import cli
from zmq_chat.client.brokers import BrokerAddress, failover_plan, parse_host, parse_hosts, spread_keys
from zmq_chat.client.errors import ConnectError
from zmq_chat.client.failover import BrokerSet, FailoverOutcome
from zmq_chat.protocol import replies as r
from zmq_chat.protocol.errors import ErrorCode

pytestmark = pytest.mark.timeout(60)

KEY_A = b"A" * 40
KEY_B = b"B" * 40


def test_hosts_repeated_and_comma_separated_keep_their_order_and_default_port():
    got = parse_hosts(["a:4200,b", "c.example.org:5000", "10.0.0.9"], 4119)
    assert got == [BrokerAddress("a", 4200), BrokerAddress("b", 4119), BrokerAddress("c.example.org", 5000),
                   BrokerAddress("10.0.0.9", 4119)]
    assert [b.address for b in got] == ["a:4200", "b:4119", "c.example.org:5000", "10.0.0.9:4119"]


def test_a_single_host_is_what_it_always_was():
    assert parse_hosts(["127.0.0.1"], 4119) == [BrokerAddress("127.0.0.1", 4119)]
    assert parse_hosts(["chat.example.org"], 5555) == [BrokerAddress("chat.example.org", 5555)]


def test_ipv6_literals_with_and_without_brackets():
    assert parse_host("[::1]:4200", 4119) == BrokerAddress("::1", 4200)
    assert parse_host("[::1]", 4119) == BrokerAddress("::1", 4119)
    assert parse_host("fe80::2", 4119) == BrokerAddress("fe80::2", 4119)


def test_a_repeated_broker_is_tried_once():
    assert parse_hosts(["a,b:4119", "A:4119,b"], 4119) == [BrokerAddress("a", 4119), BrokerAddress("b", 4119)]


@pytest.mark.parametrize("values", [["a,,b"], ["a:0"], ["a:65536"], ["a:x"], [":4119"], ["[::1"], ["[::1]x"], [""]])
def test_bad_host_items_are_refused_with_a_message(values):
    with pytest.raises(ValueError) as info:
        parse_hosts(values, 4119)
    assert str(info.value)


def test_keys_one_for_all_one_per_broker_or_none():
    assert spread_keys([], 2) == [None, None]
    assert spread_keys([KEY_A], 3) == [KEY_A] * 3
    assert spread_keys([KEY_A + b"," + KEY_B], 2) == [KEY_A, KEY_B]
    assert spread_keys([KEY_A, KEY_B], 2) == [KEY_A, KEY_B]
    with pytest.raises(ValueError, match="2 keys for 3 brokers"):
        spread_keys([KEY_A, KEY_B], 3)
    with pytest.raises(ValueError, match="empty"):
        spread_keys([KEY_A + b","], 2)


def test_failover_goes_round_robin_from_the_next_broker_the_lost_one_last():
    plan = list(itertools.islice(failover_plan(3, 1, jitter=lambda: 0.5), 6))
    assert [index for index, _ in plan] == [2, 0, 1, 2, 0, 1]


def test_no_wait_inside_a_round_and_a_doubling_capped_wait_between_rounds():
    plan = list(itertools.islice(failover_plan(2, 0, jitter=lambda: 0.5), 14))
    waits = [wait for _, wait in plan]
    assert waits[0] == waits[1] == 0.0  # the first round at once
    assert waits[3::2] == [0.0] * 6  # nothing inside a round
    assert waits[2::2] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # between rounds (jitter 0.5 -> factor 1.0)


def test_jitter_spreads_the_wait_by_twenty_percent():
    low = list(itertools.islice(failover_plan(1, 0, jitter=lambda: 0.0), 3))
    high = list(itertools.islice(failover_plan(1, 0, jitter=lambda: 0.999999), 3))
    assert [w for _, w in low] == [0.0, 0.4, 0.8]
    assert [round(w, 3) for _, w in high] == [0.0, 0.6, 1.2]


def test_one_broker_fails_over_to_itself():
    assert [i for i, _ in itertools.islice(failover_plan(1, 0), 3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        next(failover_plan(2, 2))


def test_the_client_command_line_takes_several_hosts_and_keys(monkeypatch):
    monkeypatch.delenv("CHAT_SERVER_KEY", raising=False)
    args = cli.parse_args(["--host", "a:4200,b", "--host", "c", "--port", "5000",
                           "--server-key", KEY_A.decode(), "--server-key", f"{KEY_B.decode()},{KEY_A.decode()}"])
    assert [b.address for b in args.brokers] == ["a:4200", "b:5000", "c:5000"]
    assert args.keys == [KEY_A, KEY_B, KEY_A]
    single = cli.parse_args(["--host", "127.0.0.1"])
    assert single.brokers == [BrokerAddress("127.0.0.1", 4119)] and single.keys == [None]


def test_the_environment_key_serves_every_broker(monkeypatch):
    monkeypatch.setenv("CHAT_SERVER_KEY", KEY_A.decode())
    assert cli.parse_args(["--host", "a,b"]).keys == [KEY_A, KEY_A]


def test_bad_host_lists_and_key_counts_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("CHAT_SERVER_KEY", raising=False)
    for argv in (["--host", "a,,b"], ["--host", "a,b,c", "--server-key", f"{KEY_A.decode()},{KEY_B.decode()}"]):
        with pytest.raises(SystemExit) as info:
            cli.parse_args(argv)
        assert info.value.code == 2
    assert "2 keys for 3 brokers" in capsys.readouterr().err


# -- BrokerSet.fail_over with a stand-in connection (no sockets) ------------------------------------

class FakeConn:
    """What BrokerSet.fail_over uses of a Connection: switch, login, credentials, address."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers  # address -> an exception to raise at switch, or the login reply
        self.credentials: tuple[str, str] | None = ("alice", "pw123456")
        self.address = "a:1"
        self.tried: list[tuple[str, bytes | None]] = []

    async def switch(self, host, port, *, server_key=None, key_port=None, trust_prompt=None):
        self.address = f"{host}:{port}"
        self.tried.append((self.address, server_key))
        answer = self.answers.get(self.address)
        if isinstance(answer, Exception):
            raise answer

    async def login(self, user, password):
        answer = self.answers.get(self.address)
        return answer if answer is not None else r.LoginReply(
            req=1, user=user, pub_port=2, seq=0, since=0, since_ts=1.0, heartbeat_interval=1.0, heartbeat_timeout=3.0,
            idle_timeout=60.0, max_message_chars=1000, pub_heartbeat=1.0, dup=False, epoch="e")


def broker_set(n: int = 3, patience: float = 5.0) -> BrokerSet:
    return BrokerSet([BrokerAddress(name, i + 1) for i, name in enumerate("abcd"[:n])],
                     [bytes([65 + i]) * 40 for i in range(n)], patience=patience)


def test_fail_over_tries_the_next_brokers_with_their_own_keys():
    brokers = broker_set()
    conn = FakeConn({"b:2": ConnectError("no chat broker answered at b:2")})
    outcome = asyncio.run(brokers.fail_over(conn))  # type: ignore[arg-type]
    assert outcome == FailoverOutcome("c:3") and brokers.current == 2
    assert conn.tried == [("b:2", b"B" * 40), ("c:3", b"C" * 40)]


def test_fail_over_stops_at_a_refused_login_and_passes_an_overloaded_broker():
    refused = r.ErrorReply(req=1, code=ErrorCode.BAD_CREDENTIALS.value, message="wrong password")
    busy = r.ErrorReply(req=1, code=ErrorCode.OVERLOADED.value, message="busy")
    brokers = broker_set()
    conn = FakeConn({"b:2": busy, "c:3": refused})
    outcome = asyncio.run(brokers.fail_over(conn))  # type: ignore[arg-type]
    assert outcome.address == "" and "c:3 refused the login" in outcome.problem
    assert [a for a, _ in conn.tried] == ["b:2", "c:3"] and brokers.current == 0


def test_fail_over_gives_up_after_a_round_when_patience_is_spent():
    brokers = broker_set(2, patience=0.2)  # less than the first backoff: one round, no sleeping
    conn = FakeConn({"b:2": ConnectError("silent b"), "a:1": ConnectError("silent a")})
    outcome = asyncio.run(brokers.fail_over(conn))  # type: ignore[arg-type]
    assert outcome.address == "" and "b:2: silent b" in outcome.problem and "a:1: silent a" in outcome.problem
    assert [a for a, _ in conn.tried] == ["b:2", "a:1"]


def test_fail_over_needs_a_session():
    conn = FakeConn({})
    conn.credentials = None
    assert asyncio.run(broker_set().fail_over(conn)).problem == "not logged in"  # type: ignore[arg-type]
