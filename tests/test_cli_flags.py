"""The flags every command shares: --version (package and protocol version) and a case-insensitive
--log-level; and chat-broker's --max-clients default (explicit or not, see check_fd_limit)."""

from __future__ import annotations

import pytest
from zmq_chat.broker import cli as broker_cli
from zmq_chat.client import cli as client_cli
from zmq_chat.loadtest import cli as loadtest_cli
from zmq_chat.protocol.version import PROTOCOL_VERSION

from zmq_chat import __version__

PARSERS = {
    "chat-broker": lambda argv: broker_cli.build_parser().parse_args(argv),
    "chat-client": lambda argv: client_cli.parse_args(["--host", "127.0.0.1", *argv]),
    "chat-loadtest": lambda argv: loadtest_cli.build_parser().parse_args(argv),
}


@pytest.mark.parametrize("prog", PARSERS)
def test_version_prints_the_package_and_protocol_versions(prog, capsys):
    with pytest.raises(SystemExit) as exit_:
        PARSERS[prog](["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"{prog} {__version__} (protocol {PROTOCOL_VERSION})\n"


@pytest.mark.parametrize("prog", ["chat-broker", "chat-client"])
@pytest.mark.parametrize("given", ["debug", "Debug", "DEBUG"])
def test_log_level_is_case_insensitive(prog, given):
    assert PARSERS[prog](["--log-level", given]).log_level == "DEBUG"


def test_max_clients_is_none_unless_given_and_the_config_gets_the_default():
    parser = broker_cli.build_parser()
    default, given = parser.parse_args([]), parser.parse_args(["--max-clients", "20000"])
    assert default.max_clients is None and given.max_clients == 20000
    assert broker_cli.config_from_args(default).max_clients == broker_cli.Config().max_clients == 10000
    assert broker_cli.config_from_args(given).max_clients == 20000


def test_ready_file_flag_is_parsed():
    assert broker_cli.build_parser().parse_args(["--ready-file", "/run/chat/ready.json"]).ready_file == "/run/chat/ready.json"
