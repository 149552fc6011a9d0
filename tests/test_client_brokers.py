"""Unit tests of client.brokers (pure): the --host list, the key of each broker, the failover order;
and of chat-client's parsing of them (client.cli.parse_args)."""

from __future__ import annotations

import itertools

import pytest

from zmq_chat.client import cli
from zmq_chat.client.brokers import BrokerAddress, failover_plan, parse_host, parse_hosts, spread_keys

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
