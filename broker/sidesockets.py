"""The loop's drains of its side sockets: the key endpoint, the ZAP handler and the socket
monitors (broker.loop runs them when poll says they are readable). Each reads with NOBLOCK until
EAGAIN (the key endpoint at most 100 requests per call) and hands what it read to the core."""

from __future__ import annotations

import logging
from typing import cast

import zmq
import zmq.utils.z85
from zmq.utils.monitor import parse_monitor_message

from zmq_chat.broker import netio
from zmq_chat.broker.connections import wire_size
from zmq_chat.broker.core import BrokerCore
from zmq_chat.broker.zap import ZapFormatError, encode_reply, parse_request

log = logging.getLogger(__name__)

NOBLOCK = int(zmq.NOBLOCK)
SRCFD = int(zmq.SRCFD)


def origin(frame: zmq.Frame, curve: bool) -> tuple[int, str]:
    """(source fd, CURVE key in Z85) of a received frame; (-1, "") for messages libzmq made
    itself (e.g. the XPUB's unsubscriptions when a subscriber leaves)."""
    try:
        fd = frame.get(SRCFD)
        return fd, cast(str, frame.get("User-Id")) if curve else ""  # a metadata property: always str
    except zmq.ZMQError:
        return -1, ""


def drain_key(sock: zmq.Socket, core: BrokerCore, key_reply: bytes) -> None:
    """Answer every key request `[b"key", body]` on the ROUTER `sock` with `[b"key", key_reply]`
    (JSON {version, curve, public_key, fingerprint, port}: docs/protocol.md 1.1); anything else
    gets no answer. Frames are read one by one and at most 3 kept; a request of more gets its
    connection cut."""
    recv = sock.recv
    for _ in range(100):
        try:
            head = recv(NOBLOCK, copy=False)
        except zmq.Again:
            return
        fd, _ = origin(head, False)
        first, size, count, frame = b"", 0, 0, head
        while frame.more:
            frame = recv(NOBLOCK, copy=False)
            count += 1
            size += wire_size(len(frame.buffer), False)
            if count == 1:
                first = frame.bytes
        core.on_key_request(fd, size)
        if count > 3:
            core.on_too_many_frames(fd)
        elif first == b"key":
            try:
                sock.send_multipart([head.bytes, b"key", key_reply], NOBLOCK)
            except zmq.ZMQError:
                pass  # past its high-water mark or gone: it asks again


def drain_zap(zap: zmq.Socket, core: BrokerCore) -> None:
    """Answer every ZAP request (RFC 27 frames) on the ROUTER `zap` (inproc://zeromq.zap.01) with the core's
    decision; a malformed request is logged and dropped."""
    while True:
        try:
            frames = zap.recv_multipart(NOBLOCK)
        except zmq.Again:
            return
        try:
            request = parse_request(frames)
        except ZapFormatError as exc:
            log.error("malformed ZAP request: %s", exc)
            continue
        key = zmq.utils.z85.encode(request.client_key).decode() if request.client_key else ""
        status, text, user_id = core.authorize(request.domain, request.address, request.mechanism, key)
        zap.send_multipart(encode_reply(request, status, text, user_id))


def drain_monitors(monitors: dict[str, zmq.Socket], core: BrokerCore) -> None:
    """Feed the accepted and disconnected events of each socket monitor ({kind: monitor PAIR}) to
    the core, with the connection's fd and peer address."""
    for kind, mon in monitors.items():
        while True:
            try:
                frames = mon.recv_multipart(NOBLOCK)
            except zmq.Again:
                break
            event = parse_monitor_message(frames)
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                peer = netio.peer_of(fd) or ("", 0)
                core.on_accepted(fd, kind, peer[0], peer[1])
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                core.on_disconnected(fd, kind)
