"""Pure protocol core of the chat system: wire format, command grammar, validation, error codes.

This package imports no zmq and does no I/O: bytes and values go in, values and bytes come out,
so it can be unit-tested and fuzzed alone. The wire format is specified in docs/protocol.md.
"""

from .errors import ErrorCode, ProtocolError, UsageError
from .version import PROTOCOL_VERSION

__all__ = ["ErrorCode", "ProtocolError", "UsageError", "PROTOCOL_VERSION"]
