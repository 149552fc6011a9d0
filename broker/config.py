"""Broker settings: one frozen dataclass, filled from the command line by broker.cli."""

from __future__ import annotations

import os
from dataclasses import dataclass

from zmq_chat.protocol.limits import DEFAULT_PORT


@dataclass(frozen=True)
class Config:
    """Every broker setting, with its unit. Defaults are the issue #2 defaults.

    Ports 0 mean "an ephemeral port" (the chosen ports are logged at start).
    """

    port: int = DEFAULT_PORT  # ROUTER port (4119)
    pub_port: int | None = None  # PUB port; None = port + 1 (or ephemeral when port is 0)
    bind: str = "*"  # interface to bind, e.g. 127.0.0.1
    data_dir: str = "./chat-data"
    store: str = ""  # redis://HOST:PORT/DB: a store shared by several brokers; "" = SQLite under data_dir
    weak_durability: bool = False  # accept a Redis without appendonly yes + appendfsync always (warned each start)
    backplane_ttl: float = 10.0  # seconds after its last heartbeat a broker of a shared store counts as dead
    store_outage: float = 60.0  # seconds a commit waits for an unreachable shared store before the broker stops
    sync: str = "full"  # SQLite synchronous: full = fsync before every ack; normal = survives a broker crash only
    stage_times: str = ""  # path of a JSON file of per-stage latencies written at exit ("" = not recorded)
    min_password_chars: int = 8
    max_login_attempts: int = 3  # wrong passwords per (account, IP) before a block
    block_seconds: float = 60.0
    max_message_chars: int = 1000
    history: int = 1000  # events kept in the log and offered to a catch-up
    heartbeat_timeout: float = 15.0  # seconds of silence that end a session
    idle_timeout: float = 30 * 60.0  # seconds without a command that end a session
    max_clients: int = 10000  # logged-in sessions
    hash_workers: int = max(1, (os.cpu_count() or 1) - 1)  # argon2id processes: one core left to chat (broker/auth.py)
    hash_nice: int | str = "idle"  # their priority: "idle" (SCHED_IDLE) or a nice increment 0..19
    max_pending_auth: int = 256  # logins/registrations waiting for argon2id before E_OVERLOADED
    mail_window: int = 1000  # unacknowledged private messages in flight per session
    linger_ms: int = 2000  # how long close() may flush on shutdown
    sends_keep_seconds: float = 3600.0  # how long a send id is remembered for retries
    # -- security (issue #7) --
    insecure: bool = False  # NULL mechanism instead of CURVE: clear text, no key binding
    key_port: int | None = None  # key endpoint port; None = port + 2 (or ephemeral when port is 0)
    allow_readable_store: bool = False  # start even when others can read the data dir
    max_conns_per_ip: int = 64  # TCP connections one IP may hold (ROUTER + PUB + key endpoint)
    conn_rate: float = 10.0  # new connections one IP may make per second (4 s worth at once)
    login_timeout: float = 60.0  # seconds a connection may stay without a session and silent
    key_timeout: float = 10.0  # seconds a key-endpoint connection may stay silent
    pending_limit: int = 4 * 1024 * 1024  # wire bytes a ROUTER connection may have buffered beyond its last message
    small_pending_limit: int = 64 * 1024  # the same for a PUB or key-endpoint connection (tiny messages)
    rss_scan_step: int = 32 * 1024 * 1024  # RSS growth (bytes) that triggers a scan of all connections
    max_frames: int = 16  # frames in one request beyond which its connection is cut
    reply_bytes: int = 256 * 1024  # largest history/who/last reply, bytes (history pages at it)
    backlog_limit: int = 256 * 1024  # unsent bytes to a peer beyond which large replies are refused
    pub_heartbeat: float = 2.0  # seconds between PUB heartbeats carrying the newest seq
    rate_limit: float = 20.0  # requests per second one connection may make (acks are free)
    rate_burst: int = 100  # requests one connection may make at once above the rate
    mailbox_quota: int = 10_000  # messages one recipient's mailbox may hold
    max_registrations_per_ip: int = 10  # accounts one IP may create per hour
    max_failed_logins_per_ip: int = 20  # wrong passwords/unknown names one IP may send per 10 minutes
    account_verify_interval: float = 1.0  # seconds between verifications of an account under attack
    max_queued_auth_per_ip: int = 8  # logins/registrations of one IP waiting for argon2id
    router_rcvhwm: int = 256  # complete requests queued from one DEALER
    pub_sndhwm: int = 1000  # events queued to one SUB; a slower one is dropped to gap repair

    @property
    def effective_pub_port(self) -> int:
        """The PUB port to bind: --pub-port, else port+1, else 0 (ephemeral) when port is 0."""
        if self.pub_port is not None:
            return self.pub_port
        return self.port + 1 if self.port else 0

    @property
    def effective_key_port(self) -> int:
        """The key endpoint port to bind: --key-port, else port+2, else 0 when port is 0."""
        if self.key_port is not None:
            return self.key_port
        return self.port + 2 if self.port else 0

    @property
    def max_msg_bytes(self) -> int:
        """ZMQ_MAXMSGSIZE of the ROUTER, bytes: 64 KiB, or more when --max-message-chars needs it
        (6 bytes per character covers JSON escapes, plus 16 KiB for the other fields)."""
        return max(64 * 1024, 6 * self.max_message_chars + 16 * 1024)

    @property
    def router_sndhwm(self) -> int:
        """Messages queued to one DEALER before sends to it fail with EAGAIN: the mail window plus
        room for replies, so a peer that never reads holds about (window + 100) x 4 KiB."""
        return self.mail_window + 100
