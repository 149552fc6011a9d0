"""`chat-client --host <name or IP> [--port 4119] [--user U] [--log-level LEVEL]`.

Exit status: 0 after logout, Ctrl+C/Ctrl+D or a session end from the broker; 1 when the broker
stops answering during a session; 2 when the broker cannot be used at start (unresolvable host,
nothing answers, not a chat broker, protocol version mismatch) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.utils import is_dumb_terminal

from client.app import run_app
from client.connection import Connection
from client.errors import ConnectError
from client.sockets import DEFAULT_PORT

log = logging.getLogger("client")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. Exits with status 2 (argparse) on bad arguments."""
    parser = argparse.ArgumentParser(prog="chat-client", description="Terminal client of the ZeroMQ chat.")
    parser.add_argument("--host", required=True, help="broker host name or IP address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="broker port (default %(default)s)")
    parser.add_argument("--user", help="username to log in or register as")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level on stderr (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1 to 65535")
    return args


async def run(args: argparse.Namespace) -> int:
    """Connect, then run the login dialogue and sessions. Returns the exit status (0, 1 or 2)."""
    conn = Connection(args.host, args.port)
    linger_ok = False
    try:
        try:
            await conn.connect()
        except ConnectError as exc:
            print(f"chat-client: {exc}", file=sys.stderr)
            return 2
        linger_ok = True
        print(f"connected to {conn.address}")
        # patch_stdout keeps the input line below arriving messages; a dumb terminal cannot redraw
        # it anyway, and there the proxy's background flushing would only reorder the output.
        with contextlib.nullcontext() if is_dumb_terminal() else patch_stdout():
            return await run_app(conn, args.user)
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
    except Exception as exc:  # last resort: one line, never a traceback (unless --log-level DEBUG)
        log.debug("internal error", exc_info=True)
        print(f"chat-client: internal error: {exc!r}", file=sys.stderr)
        return 1
