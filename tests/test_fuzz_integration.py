"""Integration fuzzer: random and mutated input on every port of a real broker, while a canary pair
of clients keeps chatting, and proof that the broker keeps serving and returns to its baseline.

One broker subprocess (tests/harness.py, CURVE, --login-timeout 2) is attacked in seeded rounds:

  a. CURVE DEALERs (harness Peers, anonymous or logged in as a throwaway user) send random frame
     lists (one at a time, or pipelined): real request words or random bytes in frame 0, bodies of
     random bytes, JSON objects of the right fields with hostile values, or valid bodies with a few
     byte mutations. Each request gets exactly one well-formed reply (docs/protocol.md sections 6
     and 8: status ok or error, a known code other than E_INTERNAL, E_FRAMES exactly for a wrong
     frame count, E_UNKNOWN_TYPE for an unknown word, `req` echoed as section 6 says); only a
     request of more than 16 frames or with a frame over 64 KiB may instead get its connection cut.
  b. raw ZMTP peers (tests/zmtp.py) on the ROUTER: garbage greetings, garbage after the greeting,
     NULL, forged vouches, stolen routing ids, random frame flags, huge frame headers, and valid
     CURVE requests (which must be answered). Every such connection must end up closed.
  c. the same on the PUB (keys without a session are refused; an admitted key gets its welcome,
     bad subscriptions are cut) and on the key endpoint (a [b"key", b"{}"] request is answered).
  d. plain TCP connections that send nothing or a few bytes and close.

After every round the canary pair exchanges a private message and a broadcast. At the end every
fuzz socket is closed and the broker must come back to its baseline of file descriptors and RSS,
hold no file descriptor of a TCP connection that has ended (named by the round that opened it), be
alive, and have logged no traceback and no internal error. Findings are collected and reported
together, each with the seed, the round and the frames that caused it.

The seed is fixed (override with FUZZ_SEED=n to explore) and printed in every assertion message.
Every wait polls with a deadline.

The pieces: tests/fuzz_gen.py draws the requests, tests/fuzz_harness.py holds the canaries, the
reply checks and the DEALER rounds (a), tests/fuzz_raw.py the rounds of raw peers and plain TCP (b-d),
tests/proc_net.py reads the broker's file descriptors and sockets from /proc; this module runs it all.
"""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest
import zmq

from tests.fuzz_gen import Gen
from tests.fuzz_harness import SEED, Canary, Stats
from tests.fuzz_raw import KEY_CLOSE_WITHIN, Fuzzer
from tests.harness import Broker, Peer, ok, rss
from tests.proc_net import dead_sockets, fds

ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "100"))
"""Fuzz rounds (each followed by a canary exchange): about 25 s in all on 2 cores, 10 of them
waiting for the key endpoint to cut its silent connections."""
MIB = 1024 * 1024
RSS_SLACK = 64 * MIB
FD_SLACK = 4


def poll_until(done, timeout: float, keepalive) -> bool:
    """Poll `done()` until it is true or `timeout` seconds passed, calling `keepalive()` every 2 s
    meanwhile (the canaries' sessions end after 15 s without a request). Returns done()."""
    deadline = time.monotonic() + timeout
    next_keepalive = time.monotonic() + 2.0
    while not done():
        now = time.monotonic()
        if now > deadline:
            return bool(done())
        if now >= next_keepalive:
            keepalive()
            next_keepalive = now + 2.0
        time.sleep(0.05)
    return True


# -- the test ---------------------------------------------------------------------------------------------

def start(ctx: zmq.Context, broker: Broker, rng: random.Random, made: list[Peer]) -> tuple[Canary, Fuzzer]:
    """Log the canaries and the key holder in, register the fuzz target and the throwaway users, and
    build the fuzzer on `rng`; every Peer opened is appended to `made`, for the caller to close."""
    tag = "%06x" % rng.getrandbits(24)

    def peer() -> Peer:
        p = Peer(ctx, broker)
        made.append(p)
        return p

    alice, bob, keyholder = peer(), peer(), peer()
    for p, name in ((alice, f"alice{tag}"), (bob, f"bob{tag}"), (keyholder, f"keys{tag}")):
        ok(p.register(name))
        ok(p.login(name, subscribe=p is not keyholder))
    target, target_pw = f"fz{tag}", "fuzz target password"
    throwaway_pw = "throwaway " + uuid.uuid4().hex
    setup = peer()
    ok(setup.register(target, target_pw))
    throwaways = [f"thr{tag}{i}" for i in range(2)]
    for name in throwaways:
        ok(setup.register(name, throwaway_pw))
    setup.close()
    canary = Canary(broker, alice, bob, keyholder)
    names = [alice.user, bob.user, target, "nobody" + tag]
    passwords = [target_pw, "short", "p" * 1025, "\u00e9" * 600, "x" * 4097, "12345678", "correct horse x"]
    return canary, Fuzzer(canary, ctx, Gen(rng, names, passwords), throwaways, throwaway_pw)


def run_rounds(fuzzer: Fuzzer, canary: Canary) -> None:
    """ROUNDS rounds, each of a kind drawn by weight and followed by a canary exchange."""
    rounds = {"dealer": fuzzer.round_dealer, "router": fuzzer.round_raw_router, "pub": fuzzer.round_raw_pub,
              "key": fuzzer.round_raw_key, "tcp": fuzzer.round_tcp}
    for n in range(ROUNDS):
        kind = fuzzer.rng.choices(list(rounds), weights=[40, 22, 16, 12, 10])[0]
        fuzzer.where = f"round {n}"
        fuzzer.trace = []
        fuzzer.stats.rounds[kind] += 1
        t0 = time.monotonic()
        rounds[kind]()
        fuzzer.stats.seconds[kind] = fuzzer.stats.seconds.get(kind, 0.0) + time.monotonic() - t0
        fuzzer.reap()
        canary.exchange(f"round {n} ({fuzzer.where})")


def settle(fuzzer: Fuzzer, canary: Canary, pid: int, base_fds: int, base_rss: int) -> tuple[int, int]:
    """Wait for the broker to close every raw peer it must, close the other fuzz sockets, and add a
    finding when the broker is not back within 20 s to its baseline of file descriptors and RSS
    (bytes), or still holds the socket of a connection that ended. Returns (fds, RSS) after it."""
    fuzzer.where = "end"

    def all_closed() -> bool:
        fuzzer.reap()  # each pending peer is judged at its own deadline
        return not fuzzer.pending
    poll_until(all_closed, KEY_CLOSE_WITHIN + 5, canary.keepalive)
    fuzzer.close_all()
    canary.exchange("after")

    def at_baseline() -> bool:
        return fds(pid) <= base_fds + FD_SLACK and rss(pid) <= base_rss + RSS_SLACK
    if not poll_until(at_baseline, 20, canary.keepalive):
        now_fds, now_rss = fds(pid), rss(pid)
        fuzzer.findings.append(
            f"[seed {SEED}] the broker did not return to its baseline within 20 s: "
            f"fds {now_fds} (baseline {base_fds}, allowed +{FD_SLACK}), "
            f"RSS {now_rss / MIB:.1f} MiB (baseline {base_rss / MIB:.1f} MiB, allowed +{RSS_SLACK // MIB})")
    now_fds, now_rss = fds(pid), rss(pid)
    if not poll_until(lambda: not dead_sockets(pid), 5, canary.keepalive):
        leaks = sorted((fuzzer.broker_sockets.get(inode, "a connection the fuzzer did not map"), inode)
                       for inode in dead_sockets(pid))
        for where, inode in leaks:
            head, _, wrote = where.partition("\n")
            fuzzer.findings.append(f"[seed {SEED}] {head}: the broker still holds the file descriptor of this "
                                   f"connection (socket inode {inode}), which ended on both sides\n{wrote}")
    return now_fds, now_rss


def check_broker_health(fuzzer: Fuzzer, broker: Broker) -> None:
    """Add a finding for a broker that has died or logged a traceback or an internal error."""
    log = broker.log_text()
    if broker.proc.poll() is not None:
        fuzzer.findings.append(f"[seed {SEED}] the broker died: exit status {broker.proc.returncode}")
    for bad in ("Traceback", "internal error"):
        if bad in log:
            at = log.index(bad)
            fuzzer.findings.append(f"[seed {SEED}] the broker logged {bad!r}:\n{log[max(0, at - 500):at + 2500]}")


def report(stats: Stats, base: tuple[int, int], now: tuple[int, int], started: float, fuzz_done: float) -> None:
    """Print what the fuzzer did, the broker's (fds, RSS bytes) at the baseline and at the end, and
    the seconds spent (monotonic `started` and `fuzz_done`)."""
    seconds = {k: round(v, 1) for k, v in stats.seconds.items()}
    t = stats.tally
    print(f"\nfuzz seed={SEED} rounds={dict(stats.rounds)} seconds={seconds} requests={t['requests']} "
          f"replies={dict(stats.replies)} allowed cuts={t['allowed cuts']} raw peers={t['raw peers']} "
          f"(closed by the broker: {t['raw closed']}) key answers={t['key answers']} welcomes={t['welcomes']} "
          f"tcp={t['tcp']}\nfds {base[0]} -> {now[0]}, RSS {base[1] / MIB:.1f} -> {now[1] / MIB:.1f} MiB; "
          f"fuzzing {fuzz_done - started:.1f} s, total {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(120)
def test_fuzz_every_port_while_the_canaries_chat(tmp_path, ctx):
    started = time.monotonic()
    rng = random.Random(SEED)
    broker = Broker(tmp_path / "data", "--login-timeout", "2")
    made: list[Peer] = []
    fuzzer = None
    try:
        canary, fuzzer = start(ctx, broker, rng, made)
        canary.exchange("baseline")
        pid = broker.proc.pid
        base = fds(pid), rss(pid)
        run_rounds(fuzzer, canary)
        fuzz_done = time.monotonic()
        now = settle(fuzzer, canary, pid, *base)
        canary.exchange("final")
        check_broker_health(fuzzer, broker)
        report(fuzzer.stats, base, now, started, fuzz_done)
        assert not fuzzer.findings, f"[seed {SEED}] {len(fuzzer.findings)} findings:\n" + "\n".join(fuzzer.findings)
    finally:
        if fuzzer is not None:
            fuzzer.close_all()
        for p in made:
            p.close()
        broker.stop()
