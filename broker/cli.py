"""`chat-broker`: command-line entry point (flags documented in README.md, "Broker flags")."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from zmq_chat import __version__
from zmq_chat.broker.auth import hash_password
from zmq_chat.broker.config import Config
from zmq_chat.broker.keys import BrokerKeys, KeyFileError, check_private, load_or_create, make_data_dir, private_umask
from zmq_chat.broker.limits import clients_held, files_needed, raise_open_files_limit
from zmq_chat.broker.ready import ReadyInfo, remove_ready_file, write_ready_file
from zmq_chat.broker.sockets import port_of
from zmq_chat.broker.storage import StoreError, UserRecord, WriteBatch
from zmq_chat.broker.store import SqliteStore
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.validation import validate_password, validate_username
from zmq_chat.protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of chat-broker (every flag, with units in its help)."""
    d = Config()
    p = argparse.ArgumentParser(prog="chat-broker", description="ZeroMQ chat broker (ROUTER + PUB, SQLite store)")
    p.add_argument("--port", type=int, default=d.port, help=f"ROUTER port for requests and private delivery (default {d.port}; 0 = any free port)")
    p.add_argument("--pub-port", type=int, default=None, help="PUB port for broadcasts and presence (default port+1)")
    p.add_argument("--key-port", type=int, default=None, help="key endpoint port: serves the broker's public key in clear for trust on first use (default port+2)")
    p.add_argument("--bind", default=d.bind, help="interface address to bind (default * = all; 127.0.0.1 for local only)")
    p.add_argument("--data-dir", default=d.data_dir, help="directory of the SQLite store (default ./chat-data)")
    p.add_argument("--sync", choices=["full", "normal"], default=d.sync, help="full (default): every acknowledged message is on disk before the ack (one fsync per batch); normal: no fsync per batch, so an ack survives a broker crash but not an OS crash or power loss (SQLite WAL synchronous=NORMAL)")
    p.add_argument("--min-password-length", type=_positive(int), default=d.min_password_chars, help="shortest new password, characters (default 8)")
    p.add_argument("--max-login-attempts", type=_positive(int), default=d.max_login_attempts, help="wrong passwords per account and IP before a block (default 3)")
    p.add_argument("--block-seconds", type=_positive(float), default=d.block_seconds, help="length of a login block, seconds (default 60)")
    p.add_argument("--max-message-chars", type=_positive(int), default=d.max_message_chars, help="longest message, characters (default 1000)")
    p.add_argument("--history", type=_positive(int), default=d.history, help="broadcasts and presence events kept for catch-up (default 1000)")
    p.add_argument("--heartbeat-timeout", type=_positive(float), default=d.heartbeat_timeout, help="seconds of client silence that end a session (default 15)")
    p.add_argument("--idle-timeout", type=_positive(float), default=d.idle_timeout / 60, help="minutes without a command that log a user out (default 30)")
    p.add_argument("--max-clients", type=_positive(int), default=None, help=f"most users logged in at once (default {d.max_clients})")
    p.add_argument("--hash-workers", type=_positive(int), default=d.hash_workers, help="threads hashing passwords with argon2id (default: one per core)")
    p.add_argument("--hash-nice", type=int, choices=range(0, 20), metavar="0..19", default=d.hash_nice, help="nice increment of the hashing threads, so a login storm yields the CPU to chat traffic (default 10; 0 = same priority as the loop)")
    p.add_argument("--max-pending-logins", type=_positive(int), default=d.max_pending_auth, help="logins waiting for hashing before E_OVERLOADED (default 256)")
    p.add_argument("--print-key", action="store_true", help="print the broker's public key and its fingerprint (creating the key pair if missing), then exit")
    p.add_argument("--insecure", action="store_true", help="no encryption (NULL mechanism): passwords and messages in clear text, sessions not bound to keys; for debugging on a trusted network only")
    p.add_argument("--allow-readable-store", action="store_true", help="start even when group or others can read the data directory or the store")
    p.add_argument("--max-connections-per-ip", type=_positive(int), default=d.max_conns_per_ip, help="TCP connections one IP address may hold (default 64; a client uses 2)")
    p.add_argument("--connection-rate", type=_positive(float), default=d.conn_rate, help="new connections one IP address may make per second, 4 seconds' worth at once (default 10)")
    p.add_argument("--login-timeout", type=_positive(float), default=d.login_timeout, help="seconds a connection may stay silent without logging in before it is cut (default 60)")
    p.add_argument("--rate-limit", type=float, default=d.rate_limit, help="requests per second one connection may make, acks not counted; more get E_RATE_LIMITED (default 20; 0 = no limit)")
    p.add_argument("--rate-burst", type=_positive(int), default=d.rate_burst, help="requests one connection may make at once above --rate-limit (default 100)")
    p.add_argument("--mailbox-quota", type=_positive(int), default=d.mailbox_quota, help="messages one recipient's mailbox may hold; senders then get E_MAILBOX_FULL (default 10000)")
    p.add_argument("--max-registrations-per-ip", type=_positive(int), default=d.max_registrations_per_ip, help="accounts one IP address may create per hour (default 10)")
    p.add_argument("--max-failed-logins-per-ip", type=_positive(int), default=d.max_failed_logins_per_ip, help="wrong passwords and unknown names one IP address may send per 10 minutes, across all accounts, before E_BLOCKED (default 20)")
    p.add_argument("--account-verify-interval", type=float, default=d.account_verify_interval, help="seconds between password checks of an account that had --max-login-attempts wrong passwords from any address (default 1)")
    p.add_argument("--max-queued-logins-per-ip", type=_positive(int), default=d.max_queued_auth_per_ip, help="logins and registrations of one IP address waiting for password hashing (default 8)")
    p.add_argument("--import-users", metavar="FILE", help="add accounts from lines 'username password', then exit")
    p.add_argument("--ready-file", metavar="PATH", help="once every socket is bound, write a JSON object with the pid, version, "
                   "bound ports, public key and data directory to PATH (atomically; removed at a clean exit), for supervisors and tests")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level, any case (default INFO)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {PROTOCOL_VERSION})")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Build a Config from parsed arguments."""
    return Config(
        port=args.port, pub_port=args.pub_port, bind=args.bind, data_dir=args.data_dir, sync=args.sync,
        min_password_chars=args.min_password_length, max_login_attempts=args.max_login_attempts,
        block_seconds=args.block_seconds, max_message_chars=args.max_message_chars, history=args.history,
        heartbeat_timeout=args.heartbeat_timeout, idle_timeout=args.idle_timeout * 60,
        max_clients=args.max_clients or Config.max_clients, hash_workers=args.hash_workers, hash_nice=args.hash_nice, max_pending_auth=args.max_pending_logins,
        key_port=args.key_port, insecure=args.insecure, allow_readable_store=args.allow_readable_store,
        max_conns_per_ip=args.max_connections_per_ip, login_timeout=args.login_timeout, conn_rate=args.connection_rate,
        rate_limit=args.rate_limit, rate_burst=args.rate_burst, mailbox_quota=args.mailbox_quota,
        max_registrations_per_ip=args.max_registrations_per_ip, max_failed_logins_per_ip=args.max_failed_logins_per_ip,
        account_verify_interval=args.account_verify_interval, max_queued_auth_per_ip=args.max_queued_logins_per_ip,
    )


def import_users(store: SqliteStore, path: Path, min_password_chars: int, workers: int) -> tuple[int, int]:
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
                              for (_, name, _), pwhash in zip(todo, hashes)])
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
    secure = keys is not None and not config.insecure
    return ReadyInfo(
        pid=os.getpid(), version=__version__, protocol=PROTOCOL_VERSION, bind=config.bind,
        port=port_of(endpoints["router"]), pub_port=port_of(endpoints["pub"]), key_port=port_of(endpoints["key"]),
        insecure=config.insecure, public_key=keys.public.decode() if secure else "",
        fingerprint=keys.fingerprint if secure else "", data_dir=str(Path(config.data_dir).resolve()),
    )


def main(argv: list[str] | None = None) -> int:
    """Run chat-broker. Returns 0 after a clean shutdown, 2 on a startup error (bad port, store,
    keys, a data directory readable by others)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    config = config_from_args(args)
    private_umask()
    try:
        make_data_dir(config.data_dir)
        if not config.allow_readable_store:
            check_private(config.data_dir)
        keys, created = (None, False) if config.insecure and not args.print_key else load_or_create(config.data_dir)
    except KeyFileError as exc:
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 2
    if args.print_key:
        print(f"public key:  {keys.public.decode()}\nfingerprint: {keys.fingerprint}")
        return 0
    try:
        store = SqliteStore(config.data_dir, synchronous=config.sync.upper())
    except StoreError as exc:
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 2
    if args.import_users:
        try:
            added, skipped = import_users(store, Path(args.import_users), config.min_password_chars, config.hash_workers)
        except OSError as exc:
            print(f"chat-broker: cannot read {args.import_users}: {exc.strerror}", file=sys.stderr)
            return 2
        finally:
            store.close()
        print(f"imported {added} users, skipped {skipped} lines")
        return 0
    from zmq_chat.broker.loop import BrokerLoop

    check_fd_limit(config.max_clients, explicit=args.max_clients is not None)
    try:
        loop = BrokerLoop(config, store, keys)
    except zmq.ZMQError as exc:
        store.close()
        print(f"chat-broker: cannot bind port {config.port}, {config.effective_pub_port} or "
              f"{config.effective_key_port} on {config.bind}: {exc}", file=sys.stderr)
        return 2
    if config.insecure:
        log.warning("INSECURE: --insecure turns encryption off: passwords and messages cross the network in "
                    "clear text and sessions are not bound to keys; CURVE clients will refuse this broker")
    elif created:
        log.info("created the broker key pair in %s (fingerprint %s)", Path(config.data_dir).resolve(), keys.fingerprint)
    e = loop.endpoints
    log.info("broker started router=%s pub=%s key=%s data=%s fingerprint=%s", e["router"], e["pub"], e["key"],
             Path(config.data_dir).resolve(), "none (insecure)" if config.insecure else keys.fingerprint)
    if args.ready_file:
        try:
            write_ready_file(args.ready_file, ready_info(config, e, keys))
        except OSError as exc:
            loop.close()
            print(f"chat-broker: cannot write the ready file {args.ready_file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        return loop.run()
    finally:
        if args.ready_file:
            remove_ready_file(args.ready_file, os.getpid())
