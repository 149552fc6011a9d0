"""Key fingerprints (docs/protocol.md section 1.1, "Keys and fingerprints").

A CURVE public key is 32 bytes; on the wire and in files it is written in Z85 (ZeroMQ RFC 32): 40
printable characters (every ZeroMQ binding has a Z85 codec, e.g. pyzmq's zmq.utils.z85). People
compare a key by its fingerprint, written like OpenSSH's: `SHA256:` followed by the base64
(standard alphabet, no `=` padding) of the SHA-256 digest of the 32 raw key bytes, 43 characters.
Pure: no zmq, no I/O.
"""

from __future__ import annotations

import base64
import hashlib

KEY_BYTES = 32
"""Length of a CURVE (Curve25519) public or secret key, bytes."""
Z85_KEY_CHARS = 40
"""Length of a key written in Z85, characters."""


def fingerprint(raw_public_key: bytes) -> str:
    """`SHA256:<43 base64 characters>` of a 32-byte public key.

    Raises:
        ValueError: the key is not 32 bytes.
    """
    if len(raw_public_key) != KEY_BYTES:
        raise ValueError(f"a public key has {KEY_BYTES} bytes, got {len(raw_public_key)}")
    digest = hashlib.sha256(raw_public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
