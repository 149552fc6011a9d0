"""The protocol version number that `hello`, `login` and `register` carry (docs/protocol.md)."""

PROTOCOL_VERSION = 1
