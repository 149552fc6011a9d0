"""An in-process BrokerCore with a fake clock and the in-memory store (or any broker.storage.Store): requests go in
as frames, replies, pushes, PUB messages, argon2id jobs and cuts come out (no sockets, no threads).
argon2id jobs are finished by `run_jobs` with the real hashing at minimum cost limits."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import nacl.pwhash

from zmq_chat.broker.accounts import AuthJob
from zmq_chat.broker.config import Config
from zmq_chat.broker.connections import ROUTER
from zmq_chat.broker.core import BrokerCore, Output
from zmq_chat.broker.memstore import MemoryStore
from zmq_chat.broker.storage import Store
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.version import PROTOCOL_VERSION

PASSWORD = "correct horse"


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_hash(password: str) -> str:
    return nacl.pwhash.argon2id.str(password.encode(), opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
                                    memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN).decode()


class CoreRig:
    """A BrokerCore plus helpers. Each client is (rid, fd, key); `connect` registers its
    connection as the monitor would."""

    def __init__(self, tmp: Path, store: Store | None = None, **config: Any) -> None:
        self.clock = FakeClock()
        self.behind: set[int] = set()
        self.store: Any = MemoryStore() if store is None else store
        self.config = Config(**{"data_dir": str(tmp), "max_registrations_per_ip": 10**6, **config})  # tests register a lot
        self.core = BrokerCore(self.config, self.store, 4120, clock=self.clock,
                               peer_behind=lambda fd: fd in self.behind)
        self._fds = itertools.count(100)
        self._reqs = itertools.count(1)
        self.out = Output()

    def restart(self, reopen: Any = None) -> None:
        """A new core on the same store, as after a broker restart (sessions and output are gone).
        With `reopen` (a function returning a Store), the old store is closed after the shutdown
        is committed and the new core runs on `reopen()` (e.g. the same SQLite file opened again)."""
        self.core.shutdown()
        self.take()
        if reopen is not None:
            self.store.close()
            self.store = reopen()
        self.core = BrokerCore(self.config, self.store, 4120, clock=self.clock,
                               peer_behind=lambda fd: fd in self.behind)
        self.out = Output()

    def connect(self, ip: str = "10.0.0.1", kind: str = ROUTER) -> tuple[bytes, int, str]:
        """A new client connection: (routing id, fd, key)."""
        fd = next(self._fds)
        self.core.on_accepted(fd, kind, ip, 40000 + fd)
        return f"rid{fd}".encode(), fd, f"key{fd:037d}"

    def send(self, client: tuple[bytes, int, str], kind: str, **fields: Any) -> int:
        """Feed one request; returns its req."""
        rid, fd, key = client
        req = next(self._reqs)
        cls = wire.REQUEST_TYPES[kind.encode()]
        if kind in ("hello", "login", "register"):
            fields.setdefault("version", PROTOCOL_VERSION)
        frames = wire.encode_request(cls(req=req, **fields))
        self.core.on_request(rid, frames, fd, key, sum(len(f) for f in frames))
        return req

    def take(self, keep_jobs: bool = True) -> Output:
        """Everything the core produced since the last take, after committing its writes (as the
        loop does); also added to `self.out` (its jobs only with keep_jobs)."""
        out = self.core.drain()
        self.store.commit(out.writes)
        for attr in ("router", "pub", "cuts", *(("jobs",) if keep_jobs else ())):
            getattr(self.out, attr).extend(getattr(out, attr))
        return out

    def replies(self, client: tuple[bytes, int, str]) -> list[dict]:
        """Reply bodies queued for `client` since the last take."""
        out = self.take()
        return [json.loads(body) for rid, kind, body, _ in out.router if rid == client[0] and kind == wire.REPLY]

    def call(self, client: tuple[bytes, int, str], kind: str, **fields: Any) -> dict:
        """Send a request, finish its argon2id job if any, return its reply."""
        req = self.send(client, kind, **fields)
        self.run_jobs(self.take(keep_jobs=False).jobs)
        bodies = [json.loads(b) for rid, kind_, b, _ in self.out.router if rid == client[0] and kind_ == wire.REPLY]
        return next(b for b in reversed(bodies) if b["req"] == req)

    def run_jobs(self, jobs: list[AuthJob]) -> None:
        """Do the argon2id work of `jobs` (cheap limits) and hand the results back."""
        for job in jobs:
            if job.kind == "hash":
                job.result = fast_hash(job.password)
            else:
                job.result = _verifies(job)
            self.core.on_auth_result(job)
        out = self.take(keep_jobs=False)
        if out.jobs:
            self.run_jobs(out.jobs)

    def pushes(self, client: tuple[bytes, int, str]) -> list[m.PrivateMessage]:
        """`msg` pushes to `client` so far."""
        return [wire.decode_push([k, b])[1] for rid, k, b, _ in self.out.router if rid == client[0] and k == wire.MSG]

    def raw(self, client: tuple[bytes, int, str], frames: list[bytes]) -> list[dict]:
        """Feed `frames` as one request from `client` (no encoding: malformed input too); returns
        the reply bodies queued for `client` by it."""
        rid, fd, key = client
        self.core.on_request(rid, frames, fd, key, sum(len(f) for f in frames))
        return self.replies(client)

    def ends(self, client: tuple[bytes, int, str]) -> list[m.End]:
        """`end` pushes to `client` so far."""
        return [wire.decode_push([k, b])[1] for rid, k, b, _ in self.out.router if rid == client[0] and k == wire.END]

    def events(self, kind: str | None = None) -> list[m.Event]:
        """PUB events (bcast and presence; of `kind` only when given) published so far."""
        topics = (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE)
        found = [wire.decode_event([t, b]) for t, b in self.out.pub if t in topics]
        return [e for e in found if kind is None or e.kind == kind]

    def user(self, name: str, ip: str = "10.0.0.1") -> tuple[bytes, int, str]:
        """A registered, logged-in client."""
        c = self.connect(ip)
        assert self.call(c, "register", user=name, password=PASSWORD)["status"] == "ok"
        assert self.call(c, "login", user=name, password=PASSWORD)["status"] == "ok"
        return c


def _verifies(job: AuthJob) -> bool:
    try:
        return nacl.pwhash.verify(job.pwhash.encode(), job.password.encode())
    except Exception:
        return False
