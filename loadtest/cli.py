"""`chat-loadtest`: argument parsing and orchestration (check the broker, prepare the accounts, run,
report). Exit status: 0 = no acknowledged message lost, 1 = some were lost, 2 = bad arguments, an
unreachable broker or a run that could not be carried out (one line on stderr, no traceback),
130 = interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console

from zmq_chat import __version__
from zmq_chat.client.brokers import parse_hosts, spread_keys
from zmq_chat.client.errors import ConnectError
from zmq_chat.client.trust import KnownBrokers, choose_key
from zmq_chat.loadtest.accounts import prepare_accounts
from zmq_chat.loadtest.connect import HELLO_TIMEOUT, BrokerUnreachable, check_broker
from zmq_chat.loadtest.options import DEFAULT_PASSWORD, LoadOptions, OptionsError
from zmq_chat.loadtest.spawn import BrokerStartError, SpawnedBroker, raise_fd_limit
from zmq_chat.protocol.limits import DEFAULT_PORT
from zmq_chat.protocol.version import PROTOCOL_VERSION

if TYPE_CHECKING:  # pragma: no cover
    from zmq_chat.loadtest.accounting import Results

PROG = "chat-loadtest"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        """Print "chat-loadtest: error: MESSAGE (see --help)" and exit 2."""
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The chat-loadtest argument parser (units in every help text)."""
    d = LoadOptions()
    p = _Parser(prog=PROG, description="Load test of a chat broker with many real clients: throughput, "
                "end-to-end latency, losses. Creates the accounts lt<prefix><i> first (resumable).")
    p.add_argument("--host", action="append",
                   help="broker host, HOST or HOST:PORT (default 127.0.0.1); repeat it or give a comma-separated list "
                        "to spread the clients round robin over several brokers of one chat")
    p.add_argument("--port", type=int, default=d.port,
                   help=f"broker ROUTER port of every --host without one (default {DEFAULT_PORT})")
    p.add_argument("--spawn-broker", action="store_true",
                   help="start a private broker on free 127.0.0.1 ports with a temporary data directory "
                        "(ignores --host/--port); stopped at the end")
    p.add_argument("--clients", type=int, default=d.clients, help="simulated users, each with a DEALER and a SUB (default 10)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of sending (default 10)")
    p.add_argument("--rate", type=float, default=None,
                   help="messages per second per client (default: unbounded, as fast as --window allows)")
    p.add_argument("--window", type=int, default=d.window, help="most unanswered messages per client (default 8)")
    p.add_argument("--broadcast-ratio", type=float, default=d.broadcast_ratio,
                   help="share of broadcasts among messages, 0..1 (default 0.1); each broadcast reaches every client")
    p.add_argument("--size", type=int, default=d.size, help="message length in characters (default 100)")
    p.add_argument("--processes", type=int, default=d.processes,
                   help=f"load processes (default: one per core = {d.processes})")
    p.add_argument("--user-prefix", default=d.user_prefix, help="accounts are lt<prefix><i> (letters/digits; default none)")
    p.add_argument("--password", default=DEFAULT_PASSWORD, help="password of the load-test accounts")
    p.add_argument("--drain", type=float, default=d.drain,
                   help="most seconds to wait after sending for replies and deliveries (default 5)")
    p.add_argument("--login-parallel", type=int, default=d.login_parallel,
                   help="logins and registrations in flight at once (default 64)")
    p.add_argument("--login-timeout", type=float, default=None,
                   help="most seconds for the login phase (default 60 + 0.1 per client)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the message mix (default random)")
    p.add_argument("--server-key", action="append",
                   help="the broker's public key, 40 Z85 characters (chat-broker --print-key); with several brokers one "
                   "key for all or a comma-separated list (or repeated option) with one per --host; default: "
                   "$CHAT_SERVER_KEY, else the key chat-client recorded for each broker; "
                   "taken from the broker itself with --spawn-broker")
    p.add_argument("--insecure", action="store_true",
                   help="the broker runs --insecure: no encryption (with --spawn-broker: spawn it so)")
    p.add_argument("--compare-insecure", action="store_true",
                   help="with --spawn-broker: run the same load again on an --insecure broker "
                   "and print the cost of CURVE against NULL")
    p.add_argument("--prepare-only", action="store_true", help="create the accounts, then exit")
    p.add_argument("--skip-prepare", action="store_true", help="assume the accounts exist")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot throughput and latency percentiles per second (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {PROTOCOL_VERSION})")
    return p


def options_from_args(args: argparse.Namespace) -> LoadOptions:
    """LoadOptions from parsed arguments (validated; with --spawn-broker the key is the spawned
    broker's, filled in once it runs). Several --host brokers fill `brokers`. Raises OptionsError."""
    try:
        hosts = parse_hosts(args.host or [LoadOptions.host], args.port)
        given = spread_keys([k.encode("ascii", "replace") for k in args.server_key or []], len(hosts))
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    if not 1 <= args.port <= 65535:
        raise OptionsError(f"--port must be 1..65535, got {args.port}")
    keys: list[bytes | None] = [None] * len(hosts)
    if not args.insecure and not args.spawn_broker:
        for i, broker in enumerate(hosts):
            try:
                choice = choose_key(broker.address, given[i], False, KnownBrokers())
            except ConnectError as exc:
                raise OptionsError(str(exc)) from None
            keys[i] = choice.key if choice else None
    several = len(hosts) > 1 and not args.spawn_broker
    return LoadOptions(
        host=hosts[0].host, port=hosts[0].port, clients=args.clients, duration=args.duration, rate=args.rate,
        window=args.window, broadcast_ratio=args.broadcast_ratio, size=args.size, processes=args.processes,
        user_prefix=args.user_prefix, password=args.password, drain=args.drain,
        login_parallel=args.login_parallel, login_timeout=args.login_timeout, seed=args.seed,
        server_key=keys[0], insecure=args.insecure,
        brokers=[(b.host, b.port, key) for b, key in zip(hosts, keys, strict=True)] if several else [],
    ).validate(require_key=not args.spawn_broker)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run chat-loadtest; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
    except OptionsError as exc:
        return _fail(f"error: {exc}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("error: --plot needs matplotlib: pip install matplotlib")
    if args.compare_insecure and (not args.spawn_broker or args.insecure):
        return _fail("error: --compare-insecure needs --spawn-broker (and no --insecure)")
    raise_fd_limit()
    broker = None
    try:
        if args.spawn_broker:
            extra = ["--max-clients", str(max(10000, options.clients + 100))] + (["--insecure"] if args.insecure else [])
            broker = SpawnedBroker(extra).start()
            options.host, options.port, options.server_key = broker.host, broker.port, broker.server_key
        code = _run(args, options, broker)
        if args.compare_insecure and code in (0, 1):
            assert broker is not None  # --compare-insecure was checked to come with --spawn-broker
            broker.stop()
            broker = SpawnedBroker([*extra, "--insecure"]).start()
            plain = dataclasses.replace(options, port=broker.port, server_key=None, insecure=True)
            print("the same load without encryption (--insecure broker):")
            code = max(code, _run(args, plain, broker, compare_to=LAST[0]))
        return code
    except BrokerStartError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()


LAST: list = [None]
"""The Results of the last run (for --compare-insecure)."""


def _check(options: LoadOptions) -> str:
    """Ask every broker `hello` and check the options against the (first's) limits; "" when fine,
    else the one-line error."""
    try:
        hellos = [check_broker(host, port, HELLO_TIMEOUT, key) for host, port, key in options.targets()]
    except BrokerUnreachable as exc:
        return str(exc)
    hello = hellos[0]
    if options.size > hello.max_message_chars:
        return f"error: --size {options.size} exceeds the broker's max_message_chars {hello.max_message_chars}"
    if len(options.password) < hello.min_password_chars:
        return f"error: --password is shorter than the broker's minimum of {hello.min_password_chars} characters"
    return ""


def _run(args: argparse.Namespace, options: LoadOptions, broker: SpawnedBroker | None, compare_to=None) -> int:
    """Check the broker, prepare the accounts, run, report. `compare_to`: the Results of the CURVE
    run, when this is the --compare-insecure run (its figures go in the JSON as "null_run")."""
    from zmq_chat.loadtest.report import LiveDisplay, print_summary
    from zmq_chat.loadtest.runner import LoadTestError, run_load

    err = Console(stderr=True)
    problem = _check(options)
    if problem:
        return _fail(problem)
    labels = [LoadOptions.label(host, port) for host, port, _ in options.targets()]
    where = f"broker {labels[0]}" if len(labels) == 1 else f"brokers {', '.join(labels)} (clients round robin)"
    if not args.quiet:
        err.print(f"{where}{' (spawned)' if broker else ''}: {options.clients} clients, "
                  f"{options.effective_processes} processes")
    display = LiveDisplay(err) if not args.quiet else None
    prepare = None
    try:
        if display:
            display.__enter__()
        if not args.skip_prepare:
            prepare = prepare_accounts(options.host, options.port, options.clients, options.user_prefix,
                                       options.password, concurrency=options.login_parallel,
                                       progress=display.prepared if display else None,
                                       server_key=options.server_key)
            if not prepare.ok:
                codes = ", ".join(f"{k} x{v}" for k, v in sorted(prepare.failed.items()))
                return _fail(f"could not create {prepare.requested - prepare.ready} of {prepare.requested} accounts: {codes}")
            if args.prepare_only:
                if display:
                    display.__exit__(None, None, None)
                    display = None
                print(f"accounts ready: {prepare.created} created, {prepare.existed} existed "
                      f"({prepare.elapsed_s:.2f} s, {prepare.rate:.1f} created/s)")
                return 0
        try:
            results = run_load(options, progress=display)
        except LoadTestError as exc:
            return _fail(str(exc))
        except BrokerUnreachable as exc:
            return _fail(str(exc))
    finally:
        if display:
            display.__exit__(None, None, None)
    if prepare is not None:
        results.prepare = prepare.to_dict()
    print_summary(results)
    LAST[0] = results
    if compare_to is not None:
        curve, plain = compare_to.private, results.private
        print(f"CURVE against NULL: private {curve.throughput:,.0f} against {plain.throughput:,.0f} msg/s "
              f"({curve.throughput / max(1.0, plain.throughput):.2f}x); p99 {curve.latency.p99:.1f} against "
              f"{plain.latency.p99:.1f} ms")
        compare_to.null_run = results.to_dict()
        results = compare_to
    problem = _write_files(args, results)
    if problem:
        return _fail(problem)
    return 0 if results.ok else 1


def _write_files(args: argparse.Namespace, results: Results) -> str:
    """Write --json and --plot; "" when done, else the one-line error."""
    from zmq_chat.loadtest.report import PlotUnavailable, plot, write_json

    if args.json:
        try:
            write_json(results, args.json)
        except OSError as exc:
            return f"cannot write {args.json}: {exc.strerror or exc}"
    if args.plot:
        try:
            plot(results, args.plot)
        except PlotUnavailable as exc:
            return str(exc)
        except (OSError, ValueError) as exc:
            return f"cannot write the plot {args.plot}: {exc}"
    return ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
