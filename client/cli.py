"""`chat-client --host <HOST[:PORT][,HOST[:PORT]...]> [--host ...] [--port 4119] [--user U]
[--server-key KEY[,KEY...]] [--key-port P] [--accept-key] [--insecure] [--log-level LEVEL]`.

Several brokers of one chat (client.brokers): `--host` may be repeated and each value may be a
comma-separated list; the client uses the first that answers and, when it stops answering during a
session, fails over to the next (client.failover), logs in again and resumes.

The broker's key is trusted like SSH's known_hosts (client.trust), per host:port: given with
--server-key (or CHAT_SERVER_KEY; one key for every broker, or one per broker in --host order),
recorded in the known-brokers file, or shown by fingerprint at first use and recorded when the user
accepts it (--accept-key accepts without asking). With several brokers, the keys of the others are
asked for at start.

Exit status: 0 after logout, Ctrl+C/Ctrl+D or a session end from the broker; 1 when the broker
stops answering during a session (and no other broker takes it); 2 when no broker can be used at
start (unresolvable host, nothing answers, not a chat broker, protocol version mismatch) or the
arguments are wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.utils import is_dumb_terminal

from zmq_chat import __version__
from zmq_chat.client import paint
from zmq_chat.client.app import run_app
from zmq_chat.client.brokers import parse_hosts, spread_keys
from zmq_chat.client.connection import Connection
from zmq_chat.client.errors import ClientError, ConnectError
from zmq_chat.client.failover import BrokerSet
from zmq_chat.client.prompts import Interrupted, Prompter
from zmq_chat.client.sockets import DEFAULT_PORT
from zmq_chat.client.trust import SERVER_KEY_ENV
from zmq_chat.protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. Exits with status 2 (argparse) on bad arguments."""
    parser = argparse.ArgumentParser(prog="chat-client", description="Terminal client of the ZeroMQ chat.")
    parser.add_argument("--host", required=True, action="append",
                        help="broker host name or IP address, HOST or HOST:PORT; repeat it or give a comma-separated "
                        "list for several brokers of one chat (the client fails over between them)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="broker port of every --host without one (default %(default)s)")
    parser.add_argument("--user", help="username to log in as: asks the password at once; an unknown name "
                        "is offered registration")
    parser.add_argument("--server-key", action="append",
                        help=f"the broker's public key (40 Z85 characters, from chat-broker --print-key); one key for "
                        f"every broker, or a comma-separated list (or repeated option) with one per --host; "
                        f"default: ${SERVER_KEY_ENV}, else the key recorded for each broker, else asked at first use")
    parser.add_argument("--key-port", type=int,
                        help="the key endpoint port of every broker, for trust on first use (default each port+2)")
    parser.add_argument("--accept-key", action="store_true",
                        help="at first use, trust and record the broker's key without asking")
    parser.add_argument("--insecure", action="store_true",
                        help="talk to a broker started with --insecure: no encryption, passwords in clear text")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level on stderr, any case (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {PROTOCOL_VERSION})")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1 to 65535")
    if args.key_port is not None and not 1 <= args.key_port <= 65535:
        parser.error("--key-port must be 1 to 65535")
    given = args.server_key or ([os.environ[SERVER_KEY_ENV]] if os.environ.get(SERVER_KEY_ENV) else [])
    try:
        args.brokers = parse_hosts(args.host, args.port)
        args.keys = [] if args.insecure else spread_keys([k.encode("ascii", "replace") for k in given], len(args.brokers))
    except ValueError as exc:
        parser.error(str(exc))
    if args.insecure:
        args.keys = [None] * len(args.brokers)
    return args


def trust_prompt(accept: bool):
    """The first-use question, like SSH's: shows the fingerprint and asks yes/no (accept: yes)."""
    async def ask(address: str, fp: str) -> bool:
        print(f"The broker at {address} is not known yet.\nIts key fingerprint is {fp}.")
        if accept:
            print("Trusting it (--accept-key).")
            return True
        print("Compare it with what the broker's operator sees (chat-broker --print-key).")
        try:
            answer = await Prompter().line("Trust this broker and remember its key? [y/N] ")
        except (Interrupted, EOFError):
            return False
        return answer.strip().lower() in ("y", "yes")
    return ask


async def run(args: argparse.Namespace) -> int:
    """Connect, then run the login dialogue and sessions. Returns the exit status (0, 1 or 2)."""
    if args.insecure:
        print("chat-client: WARNING: --insecure: no encryption; your password and messages cross the network "
              "in clear text", file=sys.stderr)
    brokers = BrokerSet(args.brokers, args.keys, key_port=args.key_port, accept_key=args.accept_key)
    conn = Connection(brokers.first.host, brokers.first.port, insecure=args.insecure, key_port=args.key_port,
                      server_key=brokers.keys[0], trust_prompt=trust_prompt(args.accept_key))
    linger_ok = False
    try:
        try:
            await brokers.connect(conn, say=lambda line: print(f"chat-client: {line}", file=sys.stderr))
        except ConnectError as exc:
            print(f"chat-client: {exc}", file=sys.stderr)
            return 2
        linger_ok = True
        choice = conn.key_choice
        if choice is not None and choice.source == "first use":
            print(f"recorded the broker's key in {conn.known.path}")
        print(f"connected to {conn.address}" + (" (encrypted)" if choice and choice.key else " (NOT encrypted)"))
        if len(brokers) > 1:
            await brokers.learn_keys(conn, say=print)
        # patch_stdout keeps the input line below arriving messages; a dumb terminal cannot redraw
        # it anyway, and there the proxy's background flushing would only reorder the output.
        # raw: the colours of client.paint pass; text from others is already safe (client.view).
        paint.configure()
        with contextlib.nullcontext() if is_dumb_terminal() else patch_stdout(raw=True):
            return await run_app(conn, args.user, brokers)
    finally:
        await conn.close(linger=linger_ok)


class _CurrentStderr:
    """A stream writing to whatever sys.stderr is now, so log lines go through patch_stdout's proxy
    (above the input line) while the prompt runs."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `chat-client` and `python -m client`. Returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=_CurrentStderr(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except ClientError as exc:  # e.g. the event socket cannot be opened: say what, in one line
        print(f"chat-client: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: one line, never a traceback (unless --log-level DEBUG)
        log.debug("internal error", exc_info=True)
        print(f"chat-client: internal error: {exc!r}", file=sys.stderr)
        return 1
