"""Exceptions of the client's connection layer (the protocol's own are in protocol.errors)."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's connection errors; str(exc) is one line for the user."""


class ConnectError(ClientError):
    """The broker cannot be used: host unresolvable, nothing answered `hello` in time, the peer is not
    a chat broker, or the protocol version differs. The terminal client exits with status 2."""


class RequestTimeout(ClientError):
    """No reply to a request within its timeout. Attributes: type (bytes, request type), timeout (s)."""

    def __init__(self, type_: bytes, timeout: float) -> None:
        super().__init__(f"no reply to '{type_.decode()}' within {timeout:g} s")
        self.type = type_
        self.timeout = timeout


class ConnectionClosed(ClientError):
    """The Connection was closed while a request waited, or is used after close()."""
