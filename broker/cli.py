"""`chat-broker`: command-line entry point (flags documented in README.md, "Broker flags")."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import zmq

from zmq_chat import __version__
from zmq_chat.broker.auth import hash_password
from zmq_chat.broker.config import Config
from zmq_chat.broker.keys import BrokerKeys, KeyFileError, check_private, load_or_create, make_data_dir, private_umask
from zmq_chat.broker.limits import clients_held, files_needed, raise_open_files_limit
from zmq_chat.broker.ready import ReadyInfo, remove_ready_file, write_ready_file
from zmq_chat.broker.sockets import port_of
from zmq_chat.broker.storage import Store, StoreError, UserRecord, WriteBatch
from zmq_chat.broker.store import SqliteStore
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.validation import validate_password, validate_username
from zmq_chat.protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)

Number = TypeVar("Number", int, float)
NumberFlag = tuple[str, Callable[[str], Any], Any, str]
"""A flag taking one number: (flag, parser of its value, default, help text)."""


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    """A parser of `kind` (int or float) that refuses values <= 0 (argparse.ArgumentTypeError)."""
    def parse(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    return parse


def _add_numbers(p: argparse.ArgumentParser, flags: list[NumberFlag]) -> None:
    """Add the flags of one number each, in order."""
    for flag, parse, default, text in flags:
        p.add_argument(flag, type=parse, default=default, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of chat-broker (every flag, with units in its help)."""
    d = Config()
    p = argparse.ArgumentParser(prog="chat-broker",
                                description="ZeroMQ chat broker (ROUTER + PUB; SQLite store, or Redis shared by several brokers)")
    _add_endpoint_flags(p, d)
    _add_session_flags(p, d)
    p.add_argument("--print-key", action="store_true",
                   help="print the broker's public key and its fingerprint (creating the key pair if missing), then exit")
    p.add_argument("--insecure", action="store_true",
                   help="no encryption (NULL mechanism): passwords and messages in clear text, sessions not bound to keys; "
                        "for debugging on a trusted network only")
    p.add_argument("--allow-readable-store", action="store_true",
                   help="start even when group or others can read the data directory or the store")
    _add_numbers(p, _limit_flags(d))
    p.add_argument("--import-users", metavar="FILE", help="add accounts from lines 'username password', then exit")
    p.add_argument("--ready-file", metavar="PATH",
                   help="once every socket is bound, write a JSON object with the pid, version, bound ports, public key and "
                        "data directory to PATH (atomically; removed at a clean exit), for supervisors and tests")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level, any case (default INFO)")
    p.add_argument("--stage-times", metavar="PATH", default="",
                   help="record when each request was read, handled, committed and sent, and write per-stage latency "
                        "percentiles (milliseconds) as JSON to PATH at exit; for benchmarks (off by default: costs nothing)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {PROTOCOL_VERSION})")
    return p


def _add_endpoint_flags(p: argparse.ArgumentParser, d: Config) -> None:
    """Where the broker listens and keeps its store (`d`: the defaults)."""
    _add_numbers(p, [
        ("--port", int, d.port, f"ROUTER port for requests and private delivery (default {d.port}; 0 = any free port)"),
        ("--pub-port", int, None, "PUB port for broadcasts and presence (default port+1)"),
        ("--key-port", int, None,
         "key endpoint port: serves the broker's public key in clear for trust on first use (default port+2)"),
    ])
    p.add_argument("--bind", default=d.bind, help="interface address to bind (default * = all; 127.0.0.1 for local only)")
    p.add_argument("--data-dir", default=d.data_dir,
                   help="directory of the broker's key pair and of the SQLite store (default ./chat-data)")
    p.add_argument("--store", default=d.store, metavar="redis://HOST:PORT/DB",
                   help="keep accounts, mailboxes and the event log in this Redis, shared by every broker pointed at "
                        "it: several brokers, one chat (docs/scaling.md). Default: SQLite under --data-dir")
    p.add_argument("--accept-weak-durability", action="store_true",
                   help="with --store: start even when Redis does not fsync every write (appendonly yes, appendfsync "
                        "always); an ok reply then no longer means the message is on disk (warned at every start)")
    _add_numbers(p, [("--backplane-ttl", _positive(float), d.backplane_ttl,
                      "with --store: seconds after its last heartbeat a broker counts as dead and another broker ends "
                      "its users' sessions (presence lost) (default 10)"),
                     ("--store-outage", _positive(float), d.store_outage,
                      "with --store: seconds a commit waits for an unreachable Redis (replies held meanwhile) before "
                      "the broker stops with exit status 3 (default 60)")])
    p.add_argument("--sync", choices=["full", "normal"], default=d.sync,
                   help="full (default): every acknowledged message is on disk before the ack (one fsync per batch); "
                        "normal: no fsync per batch, so an ack survives a broker crash but not an OS crash or power loss "
                        "(SQLite WAL synchronous=NORMAL)")


def _add_session_flags(p: argparse.ArgumentParser, d: Config) -> None:
    """Passwords, messages, sessions and the password hashing (`d`: the defaults)."""
    _add_numbers(p, [
        ("--min-password-length", _positive(int), d.min_password_chars, "shortest new password, characters (default 8)"),
        ("--max-login-attempts", _positive(int), d.max_login_attempts,
         "wrong passwords per account and IP before a block (default 3)"),
        ("--block-seconds", _positive(float), d.block_seconds, "length of a login block, seconds (default 60)"),
        ("--max-message-chars", _positive(int), d.max_message_chars, "longest message, characters (default 1000)"),
        ("--history", _positive(int), d.history, "broadcasts and presence events kept for catch-up (default 1000)"),
        ("--heartbeat-timeout", _positive(float), d.heartbeat_timeout,
         "seconds of client silence that end a session (default 15)"),
        ("--idle-timeout", _positive(float), d.idle_timeout / 60, "minutes without a command that log a user out (default 30)"),
        ("--max-clients", _positive(int), None, f"most users logged in at once (default {d.max_clients})"),
        ("--hash-workers", _positive(int), d.hash_workers,
         "processes hashing passwords with argon2id (default: cores - 1, at least 1)"),
    ])
    p.add_argument("--hash-nice", type=lambda v: v if v == "idle" else int(v), choices=["idle", *range(20)],
                   metavar="idle|0..19", default=d.hash_nice,
                   help="priority of the hashing processes, so a login storm yields the CPU to chat traffic: idle = "
                        "SCHED_IDLE (default), or a nice increment (0 = same priority as the loop)")
    _add_numbers(p, [("--max-pending-logins", _positive(int), d.max_pending_auth,
                      "logins waiting for hashing before E_OVERLOADED (default 256)")])


def _limit_flags(d: Config) -> list[NumberFlag]:
    """The flags of what one IP address or connection may cost the broker (`d`: the defaults)."""
    return [
        ("--max-connections-per-ip", _positive(int), d.max_conns_per_ip,
         "TCP connections one IP address may hold (default 64; a client uses 2)"),
        ("--connection-rate", _positive(float), d.conn_rate,
         "new connections one IP address may make per second, 4 seconds' worth at once (default 10)"),
        ("--login-timeout", _positive(float), d.login_timeout,
         "seconds a connection may stay silent without logging in before it is cut (default 60)"),
        ("--rate-limit", float, d.rate_limit,
         "requests per second one connection may make, acks not counted; more get E_RATE_LIMITED "
         "(default 20; 0 = no limit)"),
        ("--rate-burst", _positive(int), d.rate_burst,
         "requests one connection may make at once above --rate-limit (default 100)"),
        ("--mailbox-quota", _positive(int), d.mailbox_quota,
         "messages one recipient's mailbox may hold; senders then get E_MAILBOX_FULL (default 10000)"),
        ("--max-registrations-per-ip", _positive(int), d.max_registrations_per_ip,
         "accounts one IP address may create per hour (default 10)"),
        ("--max-failed-logins-per-ip", _positive(int), d.max_failed_logins_per_ip,
         "wrong passwords and unknown names one IP address may send per 10 minutes, across all accounts, "
         "before E_BLOCKED (default 20)"),
        ("--account-verify-interval", float, d.account_verify_interval,
         "seconds between password checks of an account that had --max-login-attempts wrong passwords "
         "from any address (default 1)"),
        ("--max-queued-logins-per-ip", _positive(int), d.max_queued_auth_per_ip,
         "logins and registrations of one IP address waiting for password hashing (default 8)"),
    ]

def config_from_args(args: argparse.Namespace) -> Config:
    """Build a Config from parsed arguments."""
    return Config(
        port=args.port, pub_port=args.pub_port, bind=args.bind, data_dir=args.data_dir, sync=args.sync,
        store=args.store, weak_durability=args.accept_weak_durability, backplane_ttl=args.backplane_ttl,
        store_outage=args.store_outage,
        stage_times=args.stage_times,
        min_password_chars=args.min_password_length, max_login_attempts=args.max_login_attempts,
        block_seconds=args.block_seconds, max_message_chars=args.max_message_chars, history=args.history,
        heartbeat_timeout=args.heartbeat_timeout, idle_timeout=args.idle_timeout * 60,
        max_clients=args.max_clients or Config.max_clients, hash_workers=args.hash_workers, hash_nice=args.hash_nice,
        max_pending_auth=args.max_pending_logins,
        key_port=args.key_port, insecure=args.insecure, allow_readable_store=args.allow_readable_store,
        max_conns_per_ip=args.max_connections_per_ip, login_timeout=args.login_timeout, conn_rate=args.connection_rate,
        rate_limit=args.rate_limit, rate_burst=args.rate_burst, mailbox_quota=args.mailbox_quota,
        max_registrations_per_ip=args.max_registrations_per_ip, max_failed_logins_per_ip=args.max_failed_logins_per_ip,
        account_verify_interval=args.account_verify_interval, max_queued_auth_per_ip=args.max_queued_logins_per_ip,
    )


def import_users(store: Store, path: Path, min_password_chars: int, workers: int) -> tuple[int, int]:
    """Add accounts from `path`, one `username password` per line (the seeds' user_pass.txt form).

    Blank lines and lines starting with # are skipped silently; bad lines and taken names are
    reported on stderr by line number and skipped. Returns (added, skipped).
    Raises OSError when the file cannot be read.
    """
    todo: list[tuple[int, str, str]] = []
    skipped = 0
    seen: set[str] = set()
    snap = store.load(time.time())
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'username password'")
            validate_username(parts[0])
            validate_password(parts[1], min_password_chars)
            if parts[0] in seen or parts[0] in snap.users:
                raise ValueError(f"the name '{parts[0]}' is taken")
        except (ValueError, ProtocolError) as exc:
            print(f"{path}:{number}: skipped: {getattr(exc, 'message', exc)}", file=sys.stderr)
            skipped += 1
            continue
        seen.add(parts[0])
        todo.append((number, parts[0], parts[1]))
    with ThreadPoolExecutor(workers) as pool:
        hashes = list(pool.map(lambda t: hash_password(t[2]), todo))
    batch = WriteBatch(users=[UserRecord(name, pwhash, time.time(), last_seq=snap.seq)
                              for (_, name, _), pwhash in zip(todo, hashes, strict=True)])
    store.commit(batch)
    return len(todo), skipped


def check_fd_limit(max_clients: int, explicit: bool = True) -> int:
    """Raise the soft open-files limit to the hard limit and log at INFO how many clients it holds
    (broker.limits.clients_held). Log a WARNING only when `explicit` (--max-clients was given on
    the command line) and the limit cannot hold `max_clients` clients: a default the machine cannot
    reach is no operator's mistake. Returns the soft limit in force (see raise_open_files_limit).
    Raises nothing."""
    soft = raise_open_files_limit()
    held = clients_held(soft)
    if held is None:
        log.info("open files limit: none (or unknown); --max-clients %d", max_clients)
    elif held >= max_clients:
        log.info("open files limit %d holds about %d clients; --max-clients %d", soft, held, max_clients)
    elif explicit:
        log.warning("open files limit %d holds about %d clients, fewer than --max-clients %d; "
                    "raise it (ulimit -n %d)", soft, held, max_clients, files_needed(max_clients))
    else:
        log.info("open files limit %d holds about %d clients, so at most that many can log in "
                 "(--max-clients %d; ulimit -n %d for all)", soft, held, max_clients, files_needed(max_clients))
    return soft


def ready_info(config: Config, endpoints: dict[str, str], keys: BrokerKeys | None) -> ReadyInfo:
    """The ready file's content for a broker bound at `endpoints` (kind -> "tcp://host:port")."""
    used = None if config.insecure else keys  # the key pair the broker runs with, if any
    return ReadyInfo(
        pid=os.getpid(), version=__version__, protocol=PROTOCOL_VERSION, bind=config.bind,
        port=port_of(endpoints["router"]), pub_port=port_of(endpoints["pub"]), key_port=port_of(endpoints["key"]),
        insecure=config.insecure, public_key=used.public.decode() if used else "",
        fingerprint=used.fingerprint if used else "", data_dir=str(Path(config.data_dir).resolve()),
    )


def main(argv: list[str] | None = None) -> int:
    """Run chat-broker. Returns 0 after a clean shutdown (or after --print-key, --import-users), 2 on
    a startup error (bad port, store, keys, a data directory readable by others)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    config = config_from_args(args)
    private_umask()
    try:
        make_data_dir(config.data_dir)
        if not config.allow_readable_store:
            check_private(config.data_dir)
        if args.print_key:
            pair, _ = load_or_create(config.data_dir)
            print(f"public key:  {pair.public.decode()}\nfingerprint: {pair.fingerprint}")
            return 0
        keys, created = (None, False) if config.insecure else load_or_create(config.data_dir)
    except KeyFileError as exc:
        return _startup_error(str(exc))
    try:
        store = open_store(config)
    except StoreError as exc:
        return _startup_error(str(exc))
    if args.import_users:
        return _import_file(store, args.import_users, config)
    return _serve(args, config, store, keys, created)


def open_store(config: Config) -> Store:
    """The store --store names (broker.redisstore.RedisStore for redis://), else SQLite under
    --data-dir. Raises StoreError when it cannot be opened (or, for Redis, does not fsync every
    write and --accept-weak-durability was not given)."""
    if not config.store:
        return SqliteStore(config.data_dir, synchronous=config.sync.upper())
    if not config.store.startswith(("redis://", "rediss://", "unix://")):
        raise StoreError(f"--store: expected redis://HOST:PORT/DB, got {config.store!r}")
    from zmq_chat.broker.redisstore import RedisStore

    return RedisStore(config.store, weak_durability=config.weak_durability, outage=config.store_outage)


def _redact(url: str) -> str:
    """`url` without a password (redis://:secret@host -> redis://:***@host), for the log."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    return head[:head.rindex(":") + 1] + "***@" + tail


def _startup_error(message: str) -> int:
    """Say why the broker cannot start, on stderr; returns the exit status 2."""
    print(f"chat-broker: {message}", file=sys.stderr)
    return 2


def _import_file(store: Store, path: str, config: Config) -> int:
    """--import-users: add the accounts of `path` (import_users) and close the store. Returns 0, or
    2 when the file cannot be read."""
    try:
        added, skipped = import_users(store, Path(path), config.min_password_chars, config.hash_workers)
    except OSError as exc:
        return _startup_error(f"cannot read {path}: {exc.strerror}")
    finally:
        store.close()
    print(f"imported {added} users, skipped {skipped} lines")
    return 0


def _serve(args: argparse.Namespace, config: Config, store: Store, keys: BrokerKeys | None, created: bool) -> int:
    """Bind the sockets, write the ready file (--ready-file) and run the loop until a signal stops
    it. `keys`: the key pair (None with --insecure), `created` when it was made just now. Returns
    the loop's exit status, or 2 when a port cannot be bound or the ready file cannot be written."""
    from zmq_chat.broker.loop import BrokerLoop

    check_fd_limit(config.max_clients, explicit=args.max_clients is not None)
    try:
        loop = BrokerLoop(config, store, keys)
    except zmq.ZMQError as exc:
        store.close()
        return _startup_error(f"cannot bind port {config.port}, {config.effective_pub_port} or "
                              f"{config.effective_key_port} on {config.bind}: {exc}")
    fingerprint = "none (insecure)" if keys is None else keys.fingerprint
    if config.insecure:
        log.warning("INSECURE: --insecure turns encryption off: passwords and messages cross the network in "
                    "clear text and sessions are not bound to keys; CURVE clients will refuse this broker")
    elif created:
        log.info("created the broker key pair in %s (fingerprint %s)", Path(config.data_dir).resolve(), fingerprint)
    e = loop.endpoints
    log.info("broker started router=%s pub=%s key=%s data=%s fingerprint=%s", e["router"], e["pub"], e["key"],
             _redact(config.store) or Path(config.data_dir).resolve(), fingerprint)
    if args.ready_file:
        try:
            write_ready_file(args.ready_file, ready_info(config, e, keys))
        except OSError as exc:
            loop.close()
            return _startup_error(f"cannot write the ready file {args.ready_file}: {exc.strerror or exc}")
    try:
        return loop.run()
    finally:
        if args.ready_file:
            remove_ready_file(args.ready_file, os.getpid())
