"""The broker's long-term CURVE key pair and the privacy of its data directory.

Files in `--data-dir` (ZeroMQ certificate format, ZPL, as written by pyzmq's zmq.auth):
    broker.key          the public key (Z85), may be shared
    broker.key_secret   the public and the secret key, mode 0600; never logged
Both are created at first start. The data directory is 0700 and every file the broker writes is
0600 (the broker runs with umask 077); `check_private` refuses a directory or store file that
group or others can read, unless the operator passes --allow-readable-store.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth
import zmq.utils.z85

from zmq_chat.protocol.keys import fingerprint

KEY_NAME = "broker"
PUBLIC_FILE = KEY_NAME + ".key"
SECRET_FILE = KEY_NAME + ".key_secret"
PRIVATE_FILES = ("chat.sqlite3", "chat.sqlite3-wal", "chat.sqlite3-shm", SECRET_FILE)
"""Files of the data directory that must not be readable by group or others."""


class KeyFileError(Exception):
    """The key files cannot be created or read, or the data directory is readable by others.
    str(exc) is one line for the operator, with how to fix it."""


@dataclass(frozen=True)
class BrokerKeys:
    """The broker's CURVE key pair. public/secret: Z85 text as bytes (40 characters each)."""

    public: bytes
    secret: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` of the public key (protocol.keys.fingerprint)."""
        return fingerprint(zmq.utils.z85.decode(self.public))


def private_umask() -> None:
    """Make every file and directory this process creates from now on private (umask 077)."""
    os.umask(0o077)


def make_data_dir(data_dir: str | Path) -> Path:
    """Create the data directory with mode 0700 if missing. Raises KeyFileError when it cannot."""
    path = Path(data_dir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create the data directory {path}: {exc.strerror}") from None
    return path


def load_or_create(data_dir: str | Path) -> tuple[BrokerKeys, bool]:
    """The key pair in `data_dir`, created (0600 secret file) when missing.

    Returns (keys, created). Raises KeyFileError when the files cannot be written or read, or when
    only one of the two files exists.
    """
    path = make_data_dir(data_dir)
    public_file, secret_file = path / PUBLIC_FILE, path / SECRET_FILE
    created = False
    if not secret_file.exists():
        if public_file.exists():
            raise KeyFileError(f"{public_file} exists without {secret_file}: restore the secret key file, "
                            f"or remove {public_file} to make a new key pair (clients will see a new fingerprint)")
        old = os.umask(0o077)
        try:
            zmq.auth.create_certificates(str(path), KEY_NAME)
            os.chmod(secret_file, 0o600)
        except OSError as exc:
            raise KeyFileError(f"cannot write the key pair in {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        created = True
    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the broker key {secret_file}: {exc}") from None
    if not secret or len(public) != 40 or len(secret) != 40:
        raise KeyFileError(f"{secret_file} does not hold a CURVE key pair (public-key and secret-key in Z85)")
    return BrokerKeys(public, secret), created


def read_public_key(data_dir: str | Path) -> bytes:
    """The broker's public key (Z85 bytes) from `data_dir`/broker.key, for tools and tests.
    Raises KeyFileError when it is missing or unreadable."""
    try:
        public, _ = zmq.auth.load_certificate(str(Path(data_dir) / PUBLIC_FILE))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the broker public key in {data_dir}: {exc}") from None
    return public


def readable_by_others(data_dir: str | Path) -> list[str]:
    """Paths (data dir and PRIVATE_FILES that exist) whose mode lets group or others read them."""
    path = Path(data_dir)
    found = []
    for p in [path, *(path / name for name in PRIVATE_FILES)]:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(f"{p} ({stat.filemode(mode)})")
    return found


def check_private(data_dir: str | Path) -> None:
    """Raise KeyFileError when the data dir or a store/key file is accessible to group or others."""
    exposed = readable_by_others(data_dir)
    if exposed:
        raise KeyFileError(
            "the store is readable by other users: " + ", ".join(exposed)
            + f"; fix with: chmod 700 {data_dir} && chmod 600 {data_dir}/chat.sqlite3* {data_dir}/{SECRET_FILE}"
            " (or start with --allow-readable-store)"
        )
