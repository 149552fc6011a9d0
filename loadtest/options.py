"""The settings of a load run (`LoadOptions`) and their validation. No I/O.

Also names the accounts a run uses: `user_name(prefix, i)` = "lt<prefix><i>".
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from zmq_chat.protocol.limits import DEFAULT_PORT, USERNAME_PATTERN

DEFAULT_PASSWORD = "loadtest-password"
"""The password of every load-test account (at least the broker's default 8 characters)."""

_PREFIX_RE = re.compile(r"^[A-Za-z0-9]{0,20}$")
_NAME_RE = re.compile(rf"^{USERNAME_PATTERN}$")


class OptionsError(ValueError):
    """A setting is out of range; `str(exc)` is one line naming the option (e.g. "--clients must be ...")."""


def user_name(prefix: str, i: int) -> str:
    """The account name of load client `i` (0-based): "lt" + prefix + decimal i, e.g. "ltA17"."""
    return f"lt{prefix}{i}"


def user_names(prefix: str, count: int, start: int = 0) -> list[str]:
    """Names of clients start .. start+count-1 (see `user_name`)."""
    return [f"lt{prefix}{i}" for i in range(start, start + count)]


@dataclass
class LoadOptions:
    """Everything `run_load` needs. Units: seconds, messages per second, characters.

    Fields:
        host, port: broker ROUTER address (the PUB port comes from the login reply).
        clients: number of simulated users (each a DEALER + SUB pair), >= 1.
        duration: seconds of sending (the measured window), > 0.
        rate: messages per second per client (open loop, paced per process); None = as fast as
            `window` allows (closed loop).
        window: most unanswered send/broadcast requests per client (1..1000).
        broadcast_ratio: share of broadcasts among messages, 0..1 (0 = only private).
        size: message text length in characters (ASCII; at least the ~30-character header).
        processes: load processes (default: one per core), capped at `clients`.
        user_prefix: accounts are "lt<prefix><i>" (letters and digits, up to 20).
        password: password of every account.
        drain: most seconds to wait after sending stops for replies and deliveries.
        login_parallel: logins in flight at once over all processes (the broker hashes each one
            with argon2id; it answers E_OVERLOADED past its own limit, default 256).
        login_timeout: most seconds the whole login phase may take (None: 60 s + 0.1 s per client).
        seed: random seed of the message mix and recipients (None: random).
        server_key: the broker's public key (Z85 bytes) every client trusts; None with insecure.
        insecure: the broker runs --insecure: clients speak NULL (no encryption).
        brokers: several brokers of one chat, (host, port, server_key) each: client i logs in on
            brokers[i % len(brokers)], so messages between clients on different brokers cross
            brokers; empty (the default): the one broker host:port with server_key.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    clients: int = 10
    duration: float = 10.0
    rate: float | None = None
    window: int = 8
    broadcast_ratio: float = 0.1
    size: int = 100
    processes: int = max(1, os.cpu_count() or 1)
    user_prefix: str = ""
    password: str = DEFAULT_PASSWORD
    drain: float = 5.0
    login_parallel: int = 64
    login_timeout: float | None = None
    seed: int | None = None
    server_key: bytes | None = None
    insecure: bool = False
    brokers: list[tuple[str, int, bytes | None]] = field(default_factory=list)

    def targets(self) -> list[tuple[str, int, bytes | None]]:
        """The brokers the clients are spread over: `brokers`, or [(host, port, server_key)]."""
        return list(self.brokers) or [(self.host, self.port, self.server_key)]

    @staticmethod
    def label(host: str, port: int) -> str:
        """How the report names a broker: "host:port"."""
        return f"{host}:{port}"

    def validate(self, require_key: bool = True) -> "LoadOptions":
        """Check every field (the broker key only with `require_key`); returns self.
        Raises OptionsError with a one-line message."""
        for host, port, _ in self.targets():
            if not host:
                raise OptionsError("--host must not be empty")
            if not 1 <= port <= 65535:
                raise OptionsError(f"--port must be 1..65535, got {port}")
        if self.clients < 1:
            raise OptionsError(f"--clients must be at least 1, got {self.clients}")
        if not self.duration > 0:
            raise OptionsError(f"--duration must be greater than 0 seconds, got {self.duration:g}")
        if self.rate is not None and not self.rate > 0:
            raise OptionsError(f"--rate must be greater than 0 messages/s, got {self.rate:g}")
        if not 1 <= self.window <= 1000:
            raise OptionsError(f"--window must be 1..1000, got {self.window}")
        if not 0.0 <= self.broadcast_ratio <= 1.0:
            raise OptionsError(f"--broadcast-ratio must be 0..1, got {self.broadcast_ratio:g}")
        if self.size < 1:
            raise OptionsError(f"--size must be at least 1 character, got {self.size}")
        if self.processes < 1:
            raise OptionsError(f"--processes must be at least 1, got {self.processes}")
        if not _PREFIX_RE.match(self.user_prefix):
            raise OptionsError(f"--user-prefix must be up to 20 letters or digits, got {self.user_prefix!r}")
        last = user_name(self.user_prefix, self.clients - 1)
        if not _NAME_RE.match(last):
            raise OptionsError(f"account names would be too long (e.g. {last!r}; at most 32 characters)")
        if len(self.password) < 1:
            raise OptionsError("--password must not be empty")
        if self.drain < 0:
            raise OptionsError(f"--drain must be 0 or more seconds, got {self.drain:g}")
        if self.login_parallel < 1:
            raise OptionsError(f"--login-parallel must be at least 1, got {self.login_parallel}")
        if self.login_timeout is not None and not self.login_timeout > 0:
            raise OptionsError(f"--login-timeout must be greater than 0, got {self.login_timeout:g}")
        for host, port, key in self.targets():
            if require_key and key is None and not self.insecure:
                raise OptionsError(f"the key of the broker at {self.label(host, port)} is needed: --server-key KEY "
                                   "(chat-broker --print-key), CHAT_SERVER_KEY, a key recorded by chat-client, or --insecure")
        return self

    @property
    def effective_processes(self) -> int:
        """Load processes actually started: min(processes, clients)."""
        return max(1, min(self.processes, self.clients))

    @property
    def effective_login_timeout(self) -> float:
        """Seconds the login phase may take: login_timeout, or 60 + 0.1 per client."""
        return self.login_timeout if self.login_timeout is not None else 60.0 + 0.1 * self.clients

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the options (the password left out)."""
        d = asdict(self)
        d.pop("password", None)
        d["server_key"] = self.server_key.decode() if self.server_key else None
        d["brokers"] = [self.label(host, port) for host, port, _ in self.brokers]
        return d
