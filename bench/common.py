"""What the benchmark's scenarios share (bench/run.py and the scenario modules beside it): the
printed and kept rows of figures, brokers with accounts written straight into their store, and
load runs against them.

Accounts are written with one argon2id hash at the *minimum* limits (preparation is not what the
scenarios measure). Every broker listens on 127.0.0.1; every data directory made here is removed
when the benchmark exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time

import nacl.pwhash

from zmq_chat.broker.storage import UserRecord, WriteBatch
from zmq_chat.broker.store import SqliteStore
from zmq_chat.loadtest import LoadOptions, SpawnedBroker, run_load
from zmq_chat.loadtest.accounting import Results
from zmq_chat.loadtest.options import DEFAULT_PASSWORD, user_name

ROWS: list[dict] = []
"""Every figure printed so far (what --json writes)."""
_DIRS: list[str] = []


@atexit.register
def _remove_dirs() -> None:
    for path in _DIRS:
        shutil.rmtree(path, ignore_errors=True)


def row(scenario: str, figure: str, value: float, unit: str, baseline: float | None = None,
        target: str = "", met: bool | None = None) -> None:
    """Print and keep one figure, with its ratio to `baseline` and whether `target` was met."""
    ratio = f"{value / baseline:.2f}x" if baseline else ""
    verdict = "" if met is None else ("met" if met else "MISSED")
    ROWS.append({"scenario": scenario, "figure": figure, "value": value, "unit": unit,
                 "baseline": baseline, "ratio": ratio, "target": target, "verdict": verdict})
    base = f"{baseline:,.2f}" if baseline is not None else ""
    print(f"{scenario:<4} {figure:<44} {value:>12,.2f} {unit:<10} {base:>12} {ratio:>7} {target:<18} {verdict}",
          flush=True)


def failed(scenario: str, figure: str, why: str, target: str = "") -> None:
    """Print and keep a step that could not be measured: no figure, the reason, MISSED."""
    ROWS.append({"scenario": scenario, "figure": figure, "value": None, "unit": "", "baseline": None,
                 "ratio": "", "target": target, "verdict": "MISSED", "why": why})
    print(f"{scenario:<4} {figure:<44} {'-':>12} {'':<10} {'':>12} {'':>7} {target:<18} MISSED", flush=True)
    print(f"     why: {why}", flush=True)


def note(text: str) -> None:
    """Print an indented line that is no figure (a sweep step, a reason, a table)."""
    print(f"     {text}", flush=True)


def temp_dir() -> str:
    """A new private temporary directory, removed when the benchmark exits."""
    path = tempfile.mkdtemp(prefix="chat-bench-")
    _DIRS.append(path)
    return path


def cheap_accounts(data_dir: str, prefix: str, count: int) -> None:
    """Write `count` accounts user_name(prefix, i) with one minimum-cost argon2id hash."""
    pwhash = nacl.pwhash.argon2id.str(DEFAULT_PASSWORD.encode(), opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
                                      memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN).decode()
    store = SqliteStore(data_dir)
    store.commit(WriteBatch(users=[UserRecord(user_name(prefix, i), pwhash, time.time()) for i in range(count)]))
    store.close()


def broker_with_accounts(prefix: str, count: int, extra: list[str] | None = None) -> SpawnedBroker:
    """A started broker (--max-clients 20000, then `extra` flags) whose store holds `count`
    accounts user_name(prefix, i). Raises BrokerStartError."""
    data_dir = temp_dir()
    cheap_accounts(data_dir, prefix, count)
    broker = SpawnedBroker(["--max-clients", "20000", *(extra or [])], data_dir=data_dir)
    return broker.start()


def load(broker: SpawnedBroker, prefix: str, clients: int, duration: float, **kw) -> Results:
    """run_load against `broker` with `clients` of the accounts user_name(prefix, i) for
    `duration` seconds; `kw` are further LoadOptions. Raises LoadTestError, OptionsError."""
    options = LoadOptions(host="127.0.0.1", port=broker.port, clients=clients, duration=duration,
                          user_prefix=prefix, server_key=broker.server_key,
                          insecure=broker.server_key is None, **kw).validate()
    return run_load(options)


def load_in_background(broker: SpawnedBroker, prefix: str, clients: int, duration: float,
                       **kw) -> tuple[threading.Thread, dict]:
    """Start load(broker, prefix, clients, duration, **kw) in a thread, already started; the run's
    result is put in the returned dict under "r" when it finishes, or the exception it raised
    under "error"."""
    box: dict = {}

    def target() -> None:
        try:
            box["r"] = load(broker, prefix, clients, duration, **kw)
        except Exception as exc:  # reported by the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box
