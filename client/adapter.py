"""What the two I/O adapters of client.core.ClientCore share: the asyncio one (client.connection) and
the poller-based one (client.sync). Written once here so that both do it the same way:

    * `hello_request` / `check_hello`: the first exchange and what an acceptable answer is;
    * `SubFollower`: the SUB socket follows the core's session. After an ok `login` the SUB is
      opened, subscribed to `ClientCore.sub_topics()` and reported with `ClientCore.sub_opened()`,
      so the catch-up `history` follows the broker's welcome (or WELCOME_TIMEOUT); when the
      session ends (logout, an `end` push, E_NOT_LOGGED_IN, a `ping` reply with `session: false`)
      the SUB is closed.

No sockets are made here: an adapter supplies `_open_sub` / `_close_sub`.
"""

from __future__ import annotations

from zmq_chat.client.core import ClientCore, Session
from zmq_chat.client.errors import ConnectError
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import ErrorReply, HelloReply, Reply
from zmq_chat.protocol.version import PROTOCOL_VERSION

BROKER_NAME = "chat-broker"
"""The `broker` field of a chat broker's ok hello reply."""


def hello_request(client_name: str) -> m.Hello:
    """The `hello` request of this client version; `client_name` (str) names the program."""
    return m.Hello(req=0, version=PROTOCOL_VERSION, client=client_name)


def check_hello(reply: Reply, address: str) -> HelloReply:
    """Accept the hello reply of a chat broker that speaks this protocol version.

    Args:
        reply: the typed hello reply (protocol.replies.HelloReply, or ErrorReply).
        address: "host:port", for the error message.
    Returns:
        the HelloReply (broker, version, max_message_chars, min_password_chars, curve).
    Raises:
        ConnectError: E_VERSION ("protocol version mismatch: ..."), any other error reply, or an
            ok reply that is not a chat broker's.
    """
    if isinstance(reply, ErrorReply):
        if reply.code == ErrorCode.VERSION:
            raise ConnectError(f"protocol version mismatch: {reply.message} "
                               f"(this client speaks version {PROTOCOL_VERSION})")
        raise ConnectError(f"the broker refused hello: {reply.message} [{reply.code}]")
    if not isinstance(reply, HelloReply) or reply.broker != BROKER_NAME:
        raise ConnectError(f"{address} is not a chat broker")
    return reply


class SubFollower:
    """Mixin of an adapter: keeps its SUB socket in step with `self.core.session`.

    Call `_follow_session()` after feeding the core DEALER input (only a `login`/`logout` reply, an
    `end` push, E_NOT_LOGGED_IN or a `ping` reply with `session: false` change the session) and
    after `core.end_session()`. The adapter implements `_open_sub(pub_port, topics)` (create,
    subscribe, connect, start reading; may raise zmq.ZMQError) and `_close_sub()` (idempotent).
    """

    core: ClientCore
    _sub_session: Session | None = None  # the session the SUB was opened for

    def _follow_session(self) -> None:
        """Open the SUB for a new session (closing one of an earlier session first), or close it
        when the session is over. Cheap when nothing changed (one identity check)."""
        session = self.core.session
        if session is self._sub_session:
            return
        self._close_sub()
        self._sub_session = session
        if session is not None:
            self._open_sub(session.pub_port, self.core.sub_topics())
            self.core.sub_opened()  # the catch-up follows the broker's welcome

    def _open_sub(self, pub_port: int, topics: list[bytes]) -> None:
        raise NotImplementedError

    def _close_sub(self) -> None:
        raise NotImplementedError
