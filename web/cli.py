"""`chat-web --broker HOST[:PORT] [--server-key KEY] [--key-port P] [--accept-key] [--insecure]
[--listen 127.0.0.1] [--port 8080] [--tls-cert FILE --tls-key FILE] [--insecure-http]
[--resume-seconds 60] [--log-level LEVEL]`: serve the chat page and print the URL to open.

The broker's key is chosen once at start, as chat-client does (zmq_chat.client.trust): --server-key
or CHAT_SERVER_KEY, else the key recorded in the known-brokers file, else the key endpoint's key
when --accept-key (or a yes on the terminal) trusts it; every browser session then uses that key.

Binds 127.0.0.1 by default. Another address needs --tls-cert/--tls-key (https), or --insecure-http,
which warns at every start: passwords and messages would cross the network in clear text.

Exit status: 0 after SIGINT/SIGTERM; 2 when the arguments are wrong or the broker cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import ssl
import sys

from aiohttp import web

from zmq_chat import __version__
from zmq_chat.client.brokers import parse_host
from zmq_chat.client.connection import Connection
from zmq_chat.client.errors import ConnectError
from zmq_chat.client.sockets import DEFAULT_PORT
from zmq_chat.client.trust import SERVER_KEY_ENV
from zmq_chat.web.server import make_app
from zmq_chat.web.session import Settings

log = logging.getLogger(__name__)

INSECURE_HTTP_WARNING = ("chat-web: WARNING: --insecure-http: serving other hosts over plain http; passwords and "
                         "messages cross the network in clear text (use --tls-cert and --tls-key)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. Exits with status 2 (argparse) on bad arguments."""
    p = argparse.ArgumentParser(prog="chat-web", description="The chat page in a browser: a web server that is a "
                                "client of the ZeroMQ chat broker.")
    p.add_argument("--broker", required=True, help="the broker, HOST or HOST:PORT (default port %d)" % DEFAULT_PORT)
    p.add_argument("--server-key", help=f"the broker's public key (40 Z85 characters, chat-broker --print-key); "
                   f"default ${SERVER_KEY_ENV}, else the key recorded in the known-brokers file")
    p.add_argument("--key-port", type=int, help="the broker's key endpoint port, for first use (default port+2)")
    p.add_argument("--accept-key", action="store_true", help="at first use, trust and record the broker's key")
    p.add_argument("--insecure", action="store_true", help="talk to a broker started with --insecure (no encryption)")
    p.add_argument("--listen", default="127.0.0.1", help="address to serve the page on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to serve the page on; 0 picks a free one "
                   "(default %(default)s)")
    p.add_argument("--tls-cert", help="certificate file (PEM): serve https")
    p.add_argument("--tls-key", help="private key file (PEM) of --tls-cert")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve another address than loopback over plain http (warns at every start)")
    p.add_argument("--resume-seconds", type=float, default=60.0,
                   help="seconds a browser session waits for its page to reconnect (default %(default)s)")
    p.add_argument("--max-sessions", type=int, default=100, help="browser sessions at once (default %(default)s)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level on stderr, any case (default %(default)s); never messages or passwords")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = p.parse_args(argv)
    try:
        args.address = parse_host(args.broker, DEFAULT_PORT)
    except ValueError as exc:
        p.error(str(exc))
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0 to 65535")
    if not loopback(args.listen) and not args.tls_cert and not args.insecure_http:
        p.error(f"--listen {args.listen} serves other hosts: give --tls-cert and --tls-key, "
                "or --insecure-http to send passwords in clear text")
    return args


def loopback(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or "localhost"."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def pin_key(args: argparse.Namespace) -> Connection:
    """Connect once (hello) to choose and check the broker key (recorded at first use); returns the
    closed connection, whose key_choice and known say which key. Raises ConnectError."""
    async def ask(address: str, fp: str) -> bool:
        print(f"The broker at {address} is not known yet. Its key fingerprint is {fp}.")
        if args.accept_key:
            print("Trusting it (--accept-key).")
            return True
        if not sys.stdin.isatty():
            return False
        answer = await asyncio.get_running_loop().run_in_executor(None, input, "Trust it and remember its key? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    key = args.server_key.encode("ascii", "replace") if args.server_key else None
    probe = Connection(args.address.host, args.address.port, client_name="chat-web", server_key=key,
                       insecure=args.insecure, key_port=args.key_port, trust_prompt=ask)
    try:
        await probe.connect()
    finally:
        await probe.close(linger=False)
    return probe


async def serve(args: argparse.Namespace) -> int:
    """Check the broker, serve the page until SIGINT/SIGTERM. Returns the exit status."""
    if args.insecure:
        print("chat-web: WARNING: --insecure: no encryption to the broker", file=sys.stderr)
    if args.insecure_http and not args.tls_cert:
        print(INSECURE_HTTP_WARNING, file=sys.stderr)
    try:
        probe = await pin_key(args)
    except ConnectError as exc:
        print(f"chat-web: {exc}", file=sys.stderr)
        return 2
    choice = probe.key_choice
    settings = Settings(host=args.address.host, port=args.address.port, server_key=choice.key if choice else None,
                        insecure=args.insecure, key_port=args.key_port, known=probe.known,
                        resume_seconds=args.resume_seconds, max_sessions=args.max_sessions,
                        loopback_only=loopback(args.listen))
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"chat-web: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 2
    runner = web.AppRunner(make_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        print(f"chat-web: cannot listen on {args.listen}:{args.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 2
    port = runner.addresses[0][1]
    host = f"[{args.listen}]" if ":" in args.listen else args.listen
    print(f"chat-web: broker {args.address.address}" + (" (encrypted)" if settings.server_key else " (NOT encrypted)"))
    print(f"chat-web: open {'https' if tls else 'http'}://{host}:{port}/ in a browser", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `chat-web` and `python -m zmq_chat.web`. Returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)
    return asyncio.run(serve(args))
