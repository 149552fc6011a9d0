"""The broker's ready file (`chat-broker --ready-file PATH`): one JSON object, written once every
socket is bound, that tells a supervisor (broker.launch, a script) where the broker listens.

    {"pid": 4242, "version": "0.1.0", "protocol": 1, "bind": "127.0.0.1",
     "port": 4119, "pub_port": 4120, "key_port": 4121, "insecure": false,
     "public_key": "<40 Z85 characters>", "fingerprint": "SHA256:...",
     "data_dir": "/abs/path/chat-data"}

public_key and fingerprint are "" with --insecure. The file appears whole or not at all (written to
a temporary name in the same directory, then renamed), and the broker removes it when it exits
cleanly, so a reader never sees half an object and a file left behind names a dead pid.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReadyInfo:
    """The content of a ready file. Ports are the bound TCP ports (never 0); public_key is the
    broker's CURVE public key in Z85 (40 characters, "" with --insecure); data_dir is absolute."""

    pid: int
    version: str
    protocol: int
    bind: str
    port: int
    pub_port: int
    key_port: int
    insecure: bool
    public_key: str
    fingerprint: str
    data_dir: str

    def to_json(self) -> bytes:
        """The file's bytes: one JSON object with every field, UTF-8, newline-terminated."""
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReadyInfo:
        """Parse a ready file's content. Raises ValueError when it is not a JSON object with every
        field of the right type (extra fields are ignored, so newer brokers stay readable)."""
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - a bad file, not a caller's bad type
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind = {"int": int, "str": str, "bool": bool}[str(f.type)]
            value = obj.get(f.name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"field {f.name!r} is missing or not {kind.__name__}")
            values[f.name] = value
        return cls(**values)


def write_ready_file(path: str | Path, info: ReadyInfo) -> None:
    """Write `info` to `path` atomically (a temporary file in the same directory, then os.replace).
    Raises OSError when the directory is missing or not writable."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(info.to_json())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_ready_file(path: str | Path) -> ReadyInfo | None:
    """The ReadyInfo in `path`, or None when there is no such file yet.
    Raises ValueError when the file exists but is not a ready file (see ReadyInfo.from_json)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return ReadyInfo.from_json(data)


def remove_ready_file(path: str | Path, pid: int) -> None:
    """Remove the ready file at `path` if it still names process `pid` (a newer broker may have
    replaced it). Raises nothing."""
    try:
        info = read_ready_file(path)
        if info is not None and info.pid == pid:
            os.unlink(path)
    except (OSError, ValueError):
        pass
