"""chat-loadtest: many real clients against a broker; throughput, latency, losses.

Python API (imported lazily, so `import zmq_chat.loadtest` stays cheap):

    from zmq_chat.loadtest import LoadOptions, SpawnedBroker, check_broker, prepare_accounts, run_load

    with SpawnedBroker() as broker:                       # or any running broker (and its public key)
        key = broker.server_key                           # Z85 bytes; None for a broker run --insecure
        check_broker("127.0.0.1", broker.port, server_key=key)  # hello within 4 s, else BrokerUnreachable
        prepare_accounts("127.0.0.1", broker.port, 100, server_key=key)  # resumable; argon2id cost stays out of the run
        results = run_load(LoadOptions(port=broker.port, server_key=key, clients=100, duration=10))
    results.private.throughput, results.broadcast.latency.p99, results.lost, results.to_dict()

Modules: options (settings), texts (the message text layout), latency (HDR histograms), ledgers
(one process's bookkeeping), accounting (the merged results), fleet (one process's clients on a
poller), logins (the login phase), worker (one process's phases), runner (orchestration), accounts
(preparation), connect (hello check), spawn (--spawn-broker), report (live display, tables, JSON,
plot), cli (the command).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "LoadOptions": "zmq_chat.loadtest.options",
    "OptionsError": "zmq_chat.loadtest.options",
    "user_name": "zmq_chat.loadtest.options",
    "run_load": "zmq_chat.loadtest.runner",
    "Progress": "zmq_chat.loadtest.runner",
    "LoadTestError": "zmq_chat.loadtest.runner",
    "Results": "zmq_chat.loadtest.accounting",
    "prepare_accounts": "zmq_chat.loadtest.accounts",
    "PrepareResult": "zmq_chat.loadtest.accounts",
    "check_broker": "zmq_chat.loadtest.connect",
    "BrokerUnreachable": "zmq_chat.loadtest.connect",
    "SpawnedBroker": "zmq_chat.loadtest.spawn",
    "BrokerStartError": "zmq_chat.loadtest.spawn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public names on first use (see _EXPORTS)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loadtest' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
