"""Tests of the broker's ready file (broker.ready, `chat-broker --ready-file`) and of the one broker
launcher (broker.launch) that the tests, the load tester and the benchmarks share."""

from __future__ import annotations

import json
import socket

import pytest
from zmq_chat.broker.keys import read_public_key
from zmq_chat.broker.launch import BrokerStartError, LaunchedBroker
from zmq_chat.broker.ready import (
    ReadyInfo,
    read_ready_file,
    remove_ready_file,
    write_ready_file,
)
from zmq_chat.protocol.version import PROTOCOL_VERSION

from zmq_chat import __version__

pytestmark = pytest.mark.timeout(60)

INFO = ReadyInfo(pid=4242, version="1.2.3", protocol=1, bind="127.0.0.1", port=4119, pub_port=4120,
                 key_port=4121, insecure=False, public_key="k" * 40, fingerprint="SHA256:abc",
                 data_dir="/srv/chat-data")


def test_ready_info_round_trips_every_field():
    assert json.loads(INFO.to_json()) == {
        "pid": 4242, "version": "1.2.3", "protocol": 1, "bind": "127.0.0.1", "port": 4119, "pub_port": 4120,
        "key_port": 4121, "insecure": False, "public_key": "k" * 40, "fingerprint": "SHA256:abc",
        "data_dir": "/srv/chat-data"}
    assert ReadyInfo.from_json(INFO.to_json()) == INFO
    assert ReadyInfo.from_json(json.dumps({**json.loads(INFO.to_json()), "newer": 1})) == INFO


@pytest.mark.parametrize("change, field", [
    ({"port": None}, "port"), ({"port": "4119"}, "port"), ({"port": True}, "port"),
    ({"insecure": 0}, "insecure"), ({"public_key": 7}, "public_key"),
])
def test_ready_info_refuses_a_missing_or_mistyped_field(change, field):
    obj = {**json.loads(INFO.to_json()), **change}
    if change[field] is None:
        del obj[field]
    with pytest.raises(ValueError, match=field):
        ReadyInfo.from_json(json.dumps(obj))


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"\xff"])
def test_ready_info_refuses_what_is_not_a_json_object(data):
    with pytest.raises(ValueError):
        ReadyInfo.from_json(data)


def test_the_ready_file_is_replaced_whole_and_removed_only_by_its_broker(tmp_path):
    path = tmp_path / "ready.json"
    assert read_ready_file(path) is None
    write_ready_file(path, INFO)
    newer = ReadyInfo(**{**json.loads(INFO.to_json()), "pid": 5151})
    write_ready_file(path, newer)
    assert read_ready_file(path) == newer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready.json"]  # no temporary file left
    remove_ready_file(path, INFO.pid)  # an older broker exiting leaves the newer one's file
    assert read_ready_file(path) == newer
    remove_ready_file(path, newer.pid)
    assert not path.exists()


def test_write_ready_file_raises_oserror_for_a_missing_directory(tmp_path):
    with pytest.raises(OSError):
        write_ready_file(tmp_path / "missing" / "ready.json", INFO)


def test_a_launched_broker_reports_what_it_bound_and_removes_its_file_at_exit(tmp_path):
    broker = LaunchedBroker(tmp_path / "data", ["--log-level", "debug"]).start()
    ready_dir = broker.ready_path.parent
    try:
        info = broker.info
        assert info == read_ready_file(broker.ready_path)
        assert (info.pid, info.version, info.protocol, info.bind) == (broker.proc.pid, __version__, PROTOCOL_VERSION, "127.0.0.1")
        assert info.data_dir == str((tmp_path / "data").resolve()) and info.insecure is False
        assert broker.server_key == read_public_key(tmp_path / "data") == info.public_key.encode()
        assert broker.fingerprint.startswith("SHA256:")
        ports = (broker.port, broker.pub_port, broker.key_port)
        assert len(set(ports)) == 3 and 0 not in ports
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
            pass  # the ROUTER port is bound and listening
        broker.proc.terminate()
        assert broker.proc.wait(15) == 0
        assert not broker.ready_path.exists()  # a clean exit removes the file
    finally:
        broker.stop()
    assert not ready_dir.exists()  # stop() removes the launcher's temporary directory


def test_an_insecure_broker_reports_no_key(tmp_path):
    with LaunchedBroker(tmp_path / "data", ["--insecure"]) as broker:
        assert broker.server_key is None and broker.fingerprint == "" and broker.info.insecure is True


def test_a_broker_that_cannot_start_fails_with_its_stderr(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = LaunchedBroker(tmp_path / "data", port=taken.getsockname()[1])
        with pytest.raises(BrokerStartError, match=r"exited with status 2 before it was ready(.|\n)*cannot bind port"):
            broker.start()
    assert broker.proc.returncode == 2
