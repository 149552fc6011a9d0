"""zmq-chat: a ZeroMQ-brokered chat system.

The project's folders `protocol/`, `broker/`, `client/` and `loadtest/` are installed as
`zmq_chat.protocol`, `zmq_chat.broker`, `zmq_chat.client` and `zmq_chat.loadtest` (`zmq_chat/<name>`
is a symbolic link to the folder; see pyproject.toml), so installing the project never shadows another
distribution's top-level `client`, `broker` or `protocol`.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("zmq-chat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
