"""Broker settings: one frozen dataclass, filled from the command line by broker.cli."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Every broker setting, with its unit. Defaults are the issue #2 defaults.

    Ports 0 mean "an ephemeral port" (the chosen ports are logged at start).
    """

    port: int = 4119  # ROUTER port
    pub_port: int | None = None  # PUB port; None = port + 1 (or ephemeral when port is 0)
    bind: str = "*"  # interface to bind, e.g. 127.0.0.1
    data_dir: str = "./chat-data"
    sync: str = "full"  # SQLite synchronous: full = fsync before every ack; normal = survives a broker crash only
    min_password_chars: int = 8
    max_login_attempts: int = 3  # wrong passwords per (account, IP) before a block
    block_seconds: float = 60.0
    max_message_chars: int = 1000
    history: int = 1000  # events kept in the log and offered to a catch-up
    heartbeat_timeout: float = 15.0  # seconds of silence that end a session
    idle_timeout: float = 30 * 60.0  # seconds without a command that end a session
    max_clients: int = 10000  # logged-in sessions
    hash_workers: int = max(1, os.cpu_count() or 1)  # threads running argon2id
    hash_nice: int = 10  # nice increment of the argon2id threads (0..19): the message loop goes first
    max_pending_auth: int = 256  # logins/registrations waiting for argon2id before E_OVERLOADED
    mail_window: int = 1000  # unacknowledged private messages in flight per session
    max_msg_bytes: int = 256 * 1024  # ZMQ_MAXMSGSIZE on the ROUTER
    hwm: int = 100_000  # send/receive high-water marks, messages
    linger_ms: int = 2000  # how long close() may flush on shutdown
    sends_keep_seconds: float = 3600.0  # how long a send id is remembered for retries

    @property
    def effective_pub_port(self) -> int:
        """The PUB port to bind: --pub-port, else port+1, else 0 (ephemeral) when port is 0."""
        if self.pub_port is not None:
            return self.pub_port
        return self.port + 1 if self.port else 0
