"""ZAP (ZeroMQ RFC 27) request and reply frames: pure parsing and encoding, no sockets.

libzmq sends a ZAP request for every new connection of a socket that has a ZAP domain, on the
inproc endpoint `inproc://zeromq.zap.01`; the broker's loop binds a ROUTER there and answers each
request with the core's decision (broker.core.BrokerCore.authorize). As the ROUTER sees them:

    request  [envelope..., b"", b"1.0", request_id, domain, address, identity, mechanism, *credentials]
    reply    [envelope..., b"", b"1.0", request_id, status_code, status_text, user_id, metadata]

credentials: none for NULL, the client's 32-byte long-term public key for CURVE. status_code:
b"200" admits, b"400" refuses (libzmq closes the connection), b"500" is an internal error.
user_id comes back on every message of an admitted connection as the `User-Id` property.
"""

from __future__ import annotations

from dataclasses import dataclass

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"

DOMAIN_ROUTER = "chat"
DOMAIN_PUB = "chat.pub"
DOMAIN_KEY = "chat.key"
"""ZAP domains of the broker's ROUTER, PUB (XPUB) and key endpoint sockets."""


class ZapFormatError(ValueError):
    """The frames are not a ZAP 1.0 request (a bug in libzmq or something else on inproc)."""


@dataclass(frozen=True)
class ZapRequest:
    """One ZAP request. envelope: the routing frames before the empty delimiter (echoed in the
    reply); address: the peer's IP address (str); mechanism: "NULL", "PLAIN" or "CURVE";
    client_key: the 32-byte CURVE public key (b"" for other mechanisms)."""

    envelope: tuple[bytes, ...]
    request_id: bytes
    domain: str
    address: str
    mechanism: str
    client_key: bytes = b""


def parse_request(frames: list[bytes]) -> ZapRequest:
    """Parse the frames a ROUTER bound to ZAP_ENDPOINT receives.

    Raises:
        ZapFormatError: no empty delimiter, fewer than 6 frames after it, another version, or a
            CURVE request without a 32-byte key.
    """
    try:
        split = frames.index(b"")
    except ValueError:
        raise ZapFormatError("no empty delimiter frame") from None
    body = frames[split + 1:]
    if len(body) < 6:
        raise ZapFormatError(f"a ZAP request has at least 6 frames, got {len(body)}")
    version, request_id, domain, address, _identity, mechanism, *credentials = body
    if version != ZAP_VERSION:
        raise ZapFormatError(f"ZAP version {version[:8]!r} is not 1.0")
    mech = mechanism.decode("ascii", "replace")
    key = b""
    if mech == "CURVE":
        if len(credentials) != 1 or len(credentials[0]) != 32:
            raise ZapFormatError("a CURVE ZAP request carries one 32-byte public key")
        key = credentials[0]
    return ZapRequest(tuple(frames[:split]), request_id, domain.decode("utf-8", "replace"),
                      address.decode("utf-8", "replace"), mech, key)


def encode_reply(request: ZapRequest, status: int, text: str, user_id: str = "") -> list[bytes]:
    """The reply frames (envelope included) for `request`: status 200, 400 or 500, a short
    status text (ASCII, for libzmq's logs), and the user id for the `User-Id` property."""
    return [*request.envelope, b"", ZAP_VERSION, request.request_id, str(status).encode("ascii"),
            text.encode("ascii", "replace"), user_id.encode("utf-8"), b""]
