"""The console scripts of the distribution (pyproject.toml [project.scripts]).

The broker needs only the base dependencies; the client and the load tester need their extras
(`zmq-chat[client]`, `zmq-chat[loadtest]`). A script whose extra is missing says which one to install
and exits with status 2, instead of failing with an ImportError traceback.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRAS = {
    "client": ("prompt_toolkit",),
    "loadtest": ("prompt_toolkit", "rich", "hdrh"),
    "web": ("aiohttp",),
}
"""Extra name -> the top-level modules it provides."""


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` (a key of EXTRAS) that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def _require(program: str, extra: str) -> None:
    missing = missing_modules(extra)
    if missing:
        print(f"{program}: needs {', '.join(missing)}; install it with: pip install 'zmq-chat[{extra}]'",
              file=sys.stderr)
        raise SystemExit(2)


def broker() -> int:
    """`chat-broker`."""
    from zmq_chat.broker.cli import main

    return main()


def client() -> int:
    """`chat-client` (needs the `client` extra)."""
    _require("chat-client", "client")
    from zmq_chat.client.cli import main

    return main()


def loadtest() -> int:
    """`chat-loadtest` (needs the `loadtest` extra)."""
    _require("chat-loadtest", "loadtest")
    from zmq_chat.loadtest.cli import main

    return main()


def web() -> int:
    """`chat-web` (needs the `web` extra)."""
    _require("chat-web", "web")
    from zmq_chat.web.cli import main

    return main()
