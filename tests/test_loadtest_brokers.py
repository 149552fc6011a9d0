"""chat-loadtest over several brokers of one chat: the --host list, the round robin spread of the
clients, the per-broker report; and one run against ONE real broker under two addresses (the same
chat: a shared store is what makes several brokers one chat, and runs over brokers sharing a Redis
belong with those brokers' tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from zmq_chat.loadtest.accounting import Results
from zmq_chat.loadtest.cli import build_parser, options_from_args
from zmq_chat.loadtest.options import LoadOptions, OptionsError
from zmq_chat.loadtest.report import print_summary
from zmq_chat.loadtest.runner import spread_over_brokers, worker_configs
from tests.harness import Broker

KEY_A, KEY_B = "A" * 40, "B" * 40
CLI = [sys.executable, "-c", "import sys; from zmq_chat.loadtest.cli import main; sys.exit(main())"]


def options(*argv: str) -> LoadOptions:
    return options_from_args(build_parser().parse_args(list(argv)))


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch, tmp_path):
    monkeypatch.delenv("CHAT_SERVER_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no recorded keys


@pytest.mark.timeout(10)
def test_clients_go_round_robin_over_the_brokers():
    assert spread_over_brokers(5, 2) == [0, 1, 0, 1, 0]
    assert spread_over_brokers(3, 1) == [0, 0, 0]


@pytest.mark.timeout(10)
def test_the_host_list_with_a_key_each_fills_brokers():
    opts = options("--host", "127.0.0.1:4200,127.0.0.2", "--host", "127.0.0.3", "--port", "5000",
                   f"--server-key={KEY_A},{KEY_B},{KEY_A}")
    assert opts.brokers == [("127.0.0.1", 4200, KEY_A.encode()), ("127.0.0.2", 5000, KEY_B.encode()),
                            ("127.0.0.3", 5000, KEY_A.encode())]
    assert (opts.host, opts.port, opts.server_key) == ("127.0.0.1", 4200, KEY_A.encode())
    assert opts.to_dict()["brokers"] == ["127.0.0.1:4200", "127.0.0.2:5000", "127.0.0.3:5000"]


@pytest.mark.timeout(10)
def test_one_host_is_the_single_broker_run_as_before():
    for argv in ([], ["--host", "127.0.0.1"], ["--host", "127.0.0.1:4119"]):
        opts = options(*argv, f"--server-key={KEY_A}")
        assert (opts.host, opts.port, opts.server_key, opts.brokers) == ("127.0.0.1", 4119, KEY_A.encode(), [])
        cfgs = worker_configs(LoadOptions(**{**opts.__dict__, "clients": 4, "processes": 2}))
        assert [c.brokers for c in cfgs] == [[], []] and [c.broker_of for c in cfgs] == [[], []]
        assert {(c.address, c.port, c.server_key) for c in cfgs} == {("127.0.0.1", 4119, KEY_A.encode())}


@pytest.mark.timeout(10)
def test_a_key_missing_for_one_broker_or_a_wrong_key_count_is_refused():
    with pytest.raises(OptionsError, match="2 keys for 3 brokers"):
        options("--host", "127.0.0.1,127.0.0.2", "--host", "127.0.0.3", f"--server-key={KEY_A},{KEY_B}")
    with pytest.raises(OptionsError, match="bad broker key"):
        options("--host", "127.0.0.1,127.0.0.2", f"--server-key={KEY_A},{'~' * 40}")
    with pytest.raises(OptionsError, match="key of the broker at 127.0.0.2:4119"):
        LoadOptions(brokers=[("127.0.0.1", 4119, KEY_A.encode()), ("127.0.0.2", 4119, None)]).validate()


@pytest.mark.timeout(10)
def test_each_load_process_gets_its_clients_brokers():
    opts = LoadOptions(brokers=[("127.0.0.1", 4200, b"a" * 40), ("127.0.0.1", 4300, b"b" * 40)], clients=5,
                       processes=2, insecure=False)
    cfgs = worker_configs(opts)
    assert [c.users for c in cfgs] == [["lt0", "lt1", "lt2"], ["lt3", "lt4"]]
    assert [c.broker_of for c in cfgs] == [[0, 1, 0], [1, 0]]  # a process's clients span the brokers
    assert cfgs[0].brokers == [("127.0.0.1:4200", "127.0.0.1", 4200, False, b"a" * 40),
                               ("127.0.0.1:4300", "127.0.0.1", 4300, False, b"b" * 40)]


@pytest.mark.timeout(10)
def test_the_report_says_how_many_clients_were_on_each_broker():
    res = Results(clients=4, logged_in=4, per_broker={"b:2": 1, "a:1": 3},
                  options={"brokers": ["a:1", "b:2"], "rate": None, "window": 8, "broadcast_ratio": 0.1, "size": 100})
    console = Console(record=True, width=200)
    print_summary(res, console)
    assert "a:1 3, b:2 1 clients logged in" in console.export_text()
    assert res.to_dict()["per_broker"] == {"b:2": 1, "a:1": 3}
    single = Console(record=True, width=200)
    print_summary(Results(clients=1, logged_in=1), single)
    assert "brokers" not in single.export_text()


@pytest.mark.timeout(60)
def test_a_run_spread_over_two_addresses_of_one_chat(tmp_path):
    broker = Broker(tmp_path / "data")
    out = tmp_path / "out.json"
    try:
        hosts = f"127.0.0.1:{broker.port},localhost:{broker.port}"
        proc = subprocess.run(
            [*CLI, "--host", hosts, f"--server-key={broker.server_key.decode()}", "--clients", "4", "--duration",
             "1.5", "--processes", "1", "--rate", "20", "--broadcast-ratio", "0.5", "--json", str(out)],
            capture_output=True, text=True, timeout=50, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"},
        )
    finally:
        broker.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and data["logged_in"] == 4
    assert data["per_broker"] == {f"127.0.0.1:{broker.port}": 2, f"localhost:{broker.port}": 2}
    assert data["private"]["acked"] > 0 and data["private"]["lost"] == 0
    assert f"127.0.0.1:{broker.port} 2, localhost:{broker.port} 2 clients logged in" in proc.stdout


@pytest.mark.timeout(90)
def test_a_run_spread_over_two_brokers_sharing_a_redis(tmp_path, redis_server):
    brokers = [Broker(tmp_path / f"b{i}", "--store", redis_server.url) for i in range(2)]
    out = tmp_path / "out.json"
    try:
        hosts = ",".join(f"127.0.0.1:{b.port}" for b in brokers)
        keys = ",".join(b.server_key.decode() for b in brokers)
        proc = subprocess.run(
            [*CLI, "--host", hosts, f"--server-key={keys}", "--clients", "6", "--duration", "1.5", "--processes", "2",
             "--rate", "20", "--broadcast-ratio", "0.3", "--json", str(out)],
            capture_output=True, text=True, timeout=80, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"},
        )
    finally:
        for b in brokers:
            b.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and data["logged_in"] == 6
    assert data["per_broker"] == {f"127.0.0.1:{b.port}": 3 for b in brokers}
    for kind in ("private", "broadcast"):  # across brokers: every acked message delivered once
        assert data[kind]["acked"] > 0 and data[kind]["lost"] == 0 and data[kind]["duplicated"] == 0
