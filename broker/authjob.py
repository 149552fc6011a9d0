"""One argon2id task of the broker (AuthJob) and the shared store's steps that run after it on the
hashing thread (claim_name, fetch_send_ids), so the loop never waits on the store for them.
Plain data and two small functions; the jobs are made by broker.accounts and run by broker.auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from zmq_chat.broker.connections import Conn
from zmq_chat.broker.storage import SendRecord, UserRecord


@dataclass
class AuthJob:
    """One argon2id task. kind "verify": check `password` against `pwhash` (result bool);
    kind "hash": hash `password` for a new account (result: the argon2id string, str).

    With a shared store, `after` runs on the hashing thread once the hashing is done, so the loop
    never waits on the store: a registration carries `record` (the new account, hash "") and
    claims the name (claim_name: `claimed` True, the account is stored; False, another broker's
    registration took it; None, the store failed); a login with the right password fetches the
    user's recent send ids (fetch_send_ids: `sends`, None when the store failed).

    rid (bytes, ROUTER routing id), req (request id), ip (peer address), key (the client's CURVE
    key, Z85), fd and conn (its connection and that connection's record, broker.connections.Conn,
    compared by identity since an fd number is reused) say where the answer goes and what the
    session binds to.
    """

    kind: str
    rid: bytes
    req: int
    user: str
    password: str = field(repr=False)
    pwhash: str = field(default="", repr=False)
    ip: str = ""
    key: str = ""
    fd: int = -1
    result: bool | str | None = None
    conn: Conn | None = field(default=None, repr=False)
    after: Callable[[AuthJob], None] | None = field(default=None, repr=False)
    record: UserRecord | None = None
    claimed: bool | None = None
    sends: list[SendRecord] | None = None


FETCHED_SEND_IDS = 1000
"""A user's newest send ids a login learns from a shared store (a client retries its last few)."""


def claim_name(store: Any, job: AuthJob) -> None:
    """A registration's step on the hashing thread (AuthJob.after): fill in the hash and store the
    account unless the name is taken (store.claim_user of a shared store). Sets job.claimed."""
    if job.record is not None and isinstance(job.result, str):
        job.record.hash = job.result
        job.claimed = store.claim_user(job.record)


def fetch_send_ids(store: Any, since: float, job: AuthJob) -> None:
    """A login's step on the hashing thread (AuthJob.after): with the right password, the user's
    send ids stored at or after `since` (seconds) by any broker (store.sends_of). Sets job.sends."""
    if job.result is True:
        job.sends = store.sends_of(job.user, since)[-FETCHED_SEND_IDS:]
