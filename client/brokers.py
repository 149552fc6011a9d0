"""Several brokers of one chat: the list a user gives (`--host a:4119,b:4119`, repeatable), the key
each is trusted with, and the order in which a client fails over. Pure: no sockets, no clocks.

    brokers = parse_hosts(["a:4119,b", "c:5000"], default_port=4119)
    # [BrokerAddress("a", 4119), BrokerAddress("b", 4119), BrokerAddress("c", 5000)]
    keys = spread_keys([b"<40 Z85>"], len(brokers))          # one key for all, or one per broker
    for index, wait in failover_plan(len(brokers), current=0):
        ...  # sleep `wait` seconds, then try brokers[index]: 1, 2, 0, (backoff) 1, 2, 0, ...
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

BACKOFF_FIRST = 0.5
"""Seconds to wait after the first round in which no broker took the session."""
BACKOFF_MAX = 8.0
"""Most seconds to wait between two rounds (the doubling stops here, as for E_OVERLOADED)."""


@dataclass(frozen=True)
class BrokerAddress:
    """One broker's ROUTER endpoint as the user wrote it: host (DNS name or IP literal, without
    brackets) and port (1..65535). `address` is "host:port", the known-brokers key (client.trust)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """ "host:port" (lower case host), as messages and the known-brokers file name a broker."""
        return f"{self.host.lower()}:{self.port}"


def _parse_port(text: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port in '{item}': a port is 1 to 65535")
    return int(text)


def parse_host(item: str, default_port: int) -> BrokerAddress:
    """One HOST or HOST:PORT ("chat.example.org", "10.0.0.2:4119", "[::1]:4119", "::1").

    A bare IPv6 literal (two or more colons, no brackets) takes `default_port`.
    Raises ValueError (one line naming the item) for an empty host or a bad port.
    """
    text = item.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad host '{item}': write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
        port = _parse_port(rest[1:], item) if rest else default_port
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _parse_port(port_text, item)
    else:
        host, port = text, default_port
    if not host:
        raise ValueError(f"bad host '{item}': the host name is empty")
    return BrokerAddress(host, port)


def parse_hosts(values: Iterable[str], default_port: int) -> list[BrokerAddress]:
    """The brokers of repeated `--host` values, each a comma-separated list of HOST or HOST:PORT.

    Args:
        values: the --host values in command-line order.
        default_port: the port of items without one (--port).
    Returns:
        the brokers in order, each once (a repeat of an earlier "host:port" is dropped).
    Raises:
        ValueError: an empty list, an empty item ("a,,b"), or a bad item (see parse_host).
    """
    out: list[BrokerAddress] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise ValueError(f"empty host in '{value}'")
            broker = parse_host(item, default_port)
            if broker.address not in {b.address for b in out}:
                out.append(broker)
    if not out:
        raise ValueError("no broker host given")
    return out


def spread_keys(keys: list[bytes], count: int) -> list[bytes | None]:
    """The key each of `count` brokers is trusted with, from the given --server-key values (each
    may be a comma-separated list): none given -> None each (the known-brokers file or first use
    decide); one -> that key for every broker; `count` of them -> one per broker, in --host order.
    Raises ValueError for any other number of keys. The keys are not checked here (client.trust)."""
    flat = [k.strip() for value in keys for k in value.split(b",")]
    if not flat:
        return [None] * count
    if any(not k for k in flat):
        raise ValueError("empty broker key in --server-key")
    if len(flat) == 1:
        return [flat[0]] * count
    if len(flat) != count:
        raise ValueError(f"--server-key gives {len(flat)} keys for {count} brokers: give one key for all, "
                         "or one per broker in --host order")
    return list(flat)


def failover_plan(count: int, current: int, *, jitter: Callable[[], float] = random.random,
                  first: float = BACKOFF_FIRST, most: float = BACKOFF_MAX) -> Iterator[tuple[int, float]]:
    """The order in which to try brokers after losing broker `current` (an index below `count`):
    round robin from the next one, the lost one last in each round; no wait inside a round, and
    between rounds a doubling wait (first, 2*first, ... up to `most` seconds, times 0.8..1.2 from
    `jitter()` in [0, 1)). Endless: the caller stops at its own deadline.

    Yields:
        (broker index, seconds to wait before trying it).
    Raises:
        ValueError: count < 1 or current not in 0..count-1.
    """
    if count < 1 or not 0 <= current < count:
        raise ValueError(f"no broker {current} among {count}")
    delay = 0.0
    for round_no in itertools.count():
        for step in range(count):
            wait = delay * (0.8 + 0.4 * jitter()) if step == 0 and round_no else 0.0
            yield (current + 1 + step) % count, wait
        delay = min(most, max(first, delay * 2))
