"""The terminal UI of a logged-in session, and the top-level loop (login -> session -> ...).

Input is read with `PromptSession.prompt_async` while a background task prints what arrives
(private messages, broadcasts, presence); the caller runs everything under `patch_stdout()` so the
input line stays intact. Every command line is parsed with protocol.commands.parse_command before
anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from zmq_chat.client import view
from zmq_chat.client.catchup import WAIT_SECONDS, CatchUpSummary, is_catchup
from zmq_chat.client.completion import ChatCompleter
from zmq_chat.client.connection import Connection
from zmq_chat.client.core import BrokerLost, EpochChanged, EventReceived, EventsMissed, MessageReceived, SessionEnded
from zmq_chat.client.errors import ConnectionClosed, RequestTimeout
from zmq_chat.client.failover import BrokerSet, FailoverOutcome
from zmq_chat.client.lines import ALIASES_HELP, expand_alias
from zmq_chat.client.login import LoginFlow
from zmq_chat.client.paint import say
from zmq_chat.client.prompts import Interrupted, Prompter
from zmq_chat.client.sending import Sender
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.commands import Broadcast, Busy, Command, Credentials, Last, Reg, Send, help_text, parse_command
from zmq_chat.protocol.errors import UsageError
from zmq_chat.protocol.replies import ErrorReply, IdleReply, Reply, StatusReply

T = TypeVar("T")

LOST = "lost connection to the broker"


@dataclass(frozen=True)
class SwitchUser:
    """Session result of `reg <user>`: log out, then log in as `user` with `password`."""

    user: str
    password: str


class _Stop(Exception):
    """Raised inside the session when it must end; `result` is what ChatSession.run returns."""

    def __init__(self, result: int | None) -> None:
        super().__init__(result)
        self.result = result


class ChatSession(Sender):
    """One logged-in session at the terminal.

    Args:
        conn: a Connection with an open session (conn.core.session is set).
        prompter: where command lines and passwords are read.
        brokers: the brokers of the chat (client.failover.BrokerSet); with two or more, a lost
            broker is replaced by the next one that answers (failover) and the session goes on;
            with None or one, a lost broker ends the session (exit status 1).
    """

    def __init__(self, conn: Connection, prompter: Prompter, brokers: BrokerSet | None = None) -> None:
        assert conn.core.session is not None
        self.conn = conn
        self.prompter = prompter
        self.session = conn.core.session
        self.me = self.session.user
        self.brokers = brokers if brokers is not None and len(brokers) > 1 else None
        self.names = prompter.completer if isinstance(prompter.completer, ChatCompleter) else ChatCompleter()
        self.busy = False
        self.busy_text = ""
        self.hidden = False
        self._switches = 0  # failovers done in this session
        self._recovery: asyncio.Task[bool] | None = None  # the failover under way, or the one that failed
        self._held: list[m.Event] = []  # broadcasts that arrived while busy
        self._deferred: list[MessageReceived] | None = None  # messages kept back while `idle` runs
        self._summary: CatchUpSummary | None = CatchUpSummary()  # the login's catch-up, until shown
        self._sent_ids: set[str] = set()
        self._stop: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def run(self) -> int | SwitchUser | None:
        """Run until the session ends.

        Returns:
            an exit status (0: logout, Ctrl+C/Ctrl+D, `end` push; 1: broker lost), a SwitchUser
            (`reg <user>`), or None to go back to the login prompt (`dereg`, session forgotten).
        """
        print(f"logged in as {self.me}; type help for the commands")
        printer = asyncio.create_task(self._print_events())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._finish, 0)
            loop.add_signal_handler(signal.SIGTERM, self._finish, 0)
        try:
            with contextlib.suppress(_Stop, RequestTimeout):
                status = await self._race(self.conn.request(m.Status))
                self.busy = isinstance(status, StatusReply) and status.busy
                await self._race(self._catch_up())
            return await self._loop()
        except _Stop as stop:
            if stop.result == 0 and self.conn.core.session is not None:
                await self.conn.logout()
            return stop.result
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            for task in (printer, self._recovery):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for item in self.conn.drain_events():  # the session's last words, e.g. presence
                self._show_item(item)

    async def _catch_up(self) -> None:
        """The login's catch-up as one summary with who is online now (client.catchup)."""
        try:
            reply = await self.conn.request(m.Who)
            self._note_users(reply)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_SECONDS
            while not self.conn.core.caught_up and loop.time() < deadline:
                await asyncio.sleep(0.05)  # a UI wait for the history reply, bounded
            for item in self.conn.drain_events():
                self._show_item(item)
        finally:
            summary, self._summary = self._summary, None
        assert summary is not None
        summary.show(getattr(reply, "users", None), self.me)

    def _finish(self, result: int | None) -> None:
        if not self._stop.done():
            self._stop.set_result(result)

    async def _race(self, aw: Awaitable[T]) -> T:
        """Await `aw` unless the session is stopped first (then raise _Stop, cancelling `aw`)."""
        task = asyncio.ensure_future(aw)
        racing: set[asyncio.Future[Any]] = {task, self._stop}
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise _Stop(self._stop.result())

    async def _loop(self) -> int | SwitchUser | None:
        while True:
            try:
                line = await self._race(self.prompter.line("> "))
            except (Interrupted, EOFError):
                await self.conn.logout()
                print("logged out")
                return 0
            if not line.strip():
                continue
            try:
                cmd = parse_command(expand_alias(line), self.session.max_message_chars)
            except UsageError as exc:
                say(f"{exc.message}" + (f"\nusage: {exc.usage}" if exc.usage else ""), "error")
                continue
            try:
                result = await self._run(cmd)
            except RequestTimeout:
                say(LOST, "error")
                return 1
            except ConnectionClosed:
                return 1
            except (Interrupted, EOFError):  # Ctrl+C at a password prompt
                print()
                continue
            if result is not _CONTINUE:
                return result

    async def _run(self, cmd: Command) -> Any:
        """Run `cmd` (under _race); when its broker is lost and another one takes the session
        (failover), run it once more there (a send keeps its id: _send_request fails over itself).
        Raises RequestTimeout / ConnectionClosed without failover; _Stop when the failover failed."""
        for attempt in range(2):
            switches = self._switches
            await self._race(self._settled())
            try:
                return await self._race(self._command(cmd))
            except (RequestTimeout, ConnectionClosed):
                if self.brokers is None or attempt or isinstance(cmd, (Broadcast, Send)):
                    raise  # a send already failed over with its id: a rerun would be a new message
                await self._race(self._recover(switches))
        return _CONTINUE  # pragma: no cover - the loop returns or raises

    async def _settled(self) -> None:
        """Wait for a failover under way; raise _Stop(1) when it failed."""
        if self._recovery is not None and not await asyncio.shield(self._recovery):
            raise _Stop(1)

    async def _recover(self, switches: int) -> None:
        """The broker stopped answering: fail over, unless that happened since the caller saw
        `switches` failovers (one failover for everyone who noticed). Raises _Stop(1) when no
        broker took the session (said in one line)."""
        if self._switches == switches and self._recovery is None:
            self._recovery = asyncio.ensure_future(self._fail_over())
        await self._settled()

    async def _fail_over(self) -> bool:
        """Move to the next broker and log in again (client.failover); tell the user in one line,
        then be hidden / busy again as before. Returns False (session over) when it failed."""
        assert self.brokers is not None
        old = self.conn.address
        try:
            outcome = await self.brokers.fail_over(self.conn)
        except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
            outcome = FailoverOutcome("", f"failover failed: {exc!r}")
        if not outcome.address:
            say(f"connection to {old} lost; {outcome.problem}", "error")
            self._finish(1)
            return False
        say(f"connection to {old} lost; now on {outcome.address}", "error")
        assert self.conn.core.session is not None
        self.session = self.conn.core.session
        with contextlib.suppress(RequestTimeout, ConnectionClosed):
            if self.hidden:
                await self.conn.request(m.Hide)
            if self.busy:
                await self.conn.request(m.Busy, text=self.busy_text)
        self._switches += 1
        self._recovery = None
        return True

    async def _command(self, cmd: Command) -> Any:
        """Run one parsed command. Returns _CONTINUE, or what run() should return."""
        word = cmd.word
        if isinstance(cmd, Broadcast):
            await self._send(None, cmd.text)
        elif isinstance(cmd, Send):
            await self._send(list(cmd.to), cmd.text)
        elif isinstance(cmd, Last):
            reply = await self.conn.request(m.Last, minutes=cmd.minutes)
            self._note_users(reply)
            self._show(reply, lambda r: f"in the last {cmd.minutes} min: {view.users_line(r.users, self.me, r.busy)}")
        elif isinstance(cmd, Busy):
            reply = await self.conn.request(m.Busy, text=cmd.text)
            if reply.ok:
                self.busy, self.busy_text = True, cmd.text
            auto = f"; auto-reply: {view.safe(cmd.text)}" if cmd.text else ""
            self._show(reply, lambda r: f"you are busy{auto}; private messages wait until idle")
        elif isinstance(cmd, Reg):
            password = await self.prompter.password(f"password for {cmd.user}: ")
            await self.conn.logout()
            print(f"logged out {self.me}")
            return SwitchUser(cmd.user, password)
        elif isinstance(cmd, Credentials):
            say(f"you are logged in as {self.me}; use dereg first", "error")
        elif word == "who":
            reply = await self.conn.request(m.Who)
            self._note_users(reply)
            self._show(reply, lambda r: f"online: {view.users_line(r.users, self.me, r.busy)}")
        elif word == "idle":
            await self._idle()
        elif word in ("hide", "appear"):
            reply = await self.conn.request(m.Hide if word == "hide" else m.Appear)
            if reply.ok:
                self.hidden = word == "hide"
            self._show(reply, lambda r: "you are hidden" if word == "hide" else "you are visible")
        elif word == "status":
            reply = await self.conn.request(m.Status)
            if isinstance(reply, StatusReply):
                self.busy = reply.busy
            self._show(reply, view.status_line)
        elif word == "help":
            print(help_text() + "\n" + ALIASES_HELP)
        elif word in ("logout", "dereg"):
            await self.conn.logout()
            print("logged out" if word == "logout" else "logged out; back to the login prompt")
            return 0 if word == "logout" else None
        return _CONTINUE

    def _note_users(self, reply: Reply) -> None:
        """Learn the names of a `who` / `last` reply for Tab completion."""
        self.names.note(getattr(reply, "users", None) or [])

    @staticmethod
    def _show(reply: Reply, ok_line: Callable[[Any], str]) -> None:
        """Print `ok_line(reply)` for an ok reply (its typed Struct), the error line otherwise."""
        if isinstance(reply, ErrorReply):
            say(view.error_line(reply), "error")
        else:
            say(ok_line(reply))

    async def _idle(self) -> None:
        """End busy: the header, then the held private messages (pushed right after the reply,
        kept back until the header is out), then the held broadcasts."""
        self._deferred, ok = [], False
        try:
            ok = await self._idle_request()
        finally:
            deferred, self._deferred = self._deferred, None
            for item in deferred:
                self._show_item(item)
        held_events, self._held = (self._held, []) if ok else ([], self._held)
        for event in held_events:
            say(view.event_line(event), view.event_kind(event))

    async def _idle_request(self) -> bool:
        """Ask `idle`; say the header. Returns True when the broker said yes."""
        reply = await self.conn.request(m.Idle)
        if isinstance(reply, ErrorReply):
            say(view.error_line(reply), "error")
            return False
        assert isinstance(reply, IdleReply)  # the ok reply to `idle` (protocol.replies.REPLY_TYPES)
        self.busy = False
        held = reply.held
        print(f"you are available; {held} held private message(s) follow" if held else "you are available")
        return True

    async def _print_events(self) -> None:
        """Print what arrives; end the session on SessionEnded / BrokerLost (fail over instead
        when there are other brokers)."""
        while True:
            item = await self.conn.next_event()
            try:
                if isinstance(item, BrokerLost) and self.brokers is not None:
                    await self._recover(self._switches)
                    continue
                await self._settled()  # the new broker's first words after the notice
            except _Stop:
                return
            self._show_item(item)

    def _show_item(self, item: Any) -> None:
        """Print one event of the connection; SessionEnded / BrokerLost stop the session."""
        if is_catchup(item, self.session.since_ts):
            self.names.note([item.message.sender] if isinstance(item, MessageReceived) else [item.event.user])
            if self._summary is not None:
                self._summary.add(item)
                return
            if isinstance(item, EventReceived) and item.event.kind != "bcast":
                return  # presence of the past: condensed into "online now"
        if isinstance(item, MessageReceived) and self._deferred is not None:
            self._deferred.append(item)
        elif isinstance(item, MessageReceived):
            self.names.note([item.message.sender, *view.group_of(item.message)])
            prefix = view.CATCHUP_PREFIX if item.message.ts < self.session.since_ts else ""
            say(prefix + view.private_line(item.message), view.message_kind(item.message))
        elif isinstance(item, EventReceived):
            self._show_event(item)
        elif isinstance(item, EpochChanged):
            say(view.EPOCH_LOST, "error")
        elif isinstance(item, EventsMissed):
            say(f"(events {item.after + 1} to {item.resumed - 1} are no longer available)", "error")
        elif isinstance(item, SessionEnded):
            print(view.safe(item.message or f"session ended ({item.reason})"))
            self._finish(None if item.reason == "not_logged_in" else 0)
        elif isinstance(item, BrokerLost):
            say(LOST, "error")
            self._finish(1)

    def _show_event(self, item: EventReceived) -> None:
        event = item.event
        self.names.note([event.user])
        if event.user == self.me and event.kind == "presence":
            return  # your own presence
        if event.kind == "bcast" and event.user == self.me and event.cid in self._sent_ids:
            return  # your own broadcast echo, already shown
        if self.busy and event.kind == "bcast" and not item.catchup:
            self._held.append(event)
            return
        say(view.event_line(event, item.catchup), view.event_kind(event))


_CONTINUE = object()


async def run_app(conn: Connection, preset_user: str | None = None, brokers: BrokerSet | None = None) -> int:
    """Login dialogue and sessions until the user quits. `conn` must be connected (hello done);
    `brokers`: the chat's brokers, for failover during a session (ChatSession).

    Returns the exit status: 0 normal end, 1 broker lost. Never raises for broker trouble.
    """
    prompter = Prompter(ChatCompleter())
    flow = LoginFlow(conn, prompter, preset_user)
    switch: SwitchUser | None = None
    while True:
        try:
            if switch is not None:
                logged_in = await flow.login_as(switch.user, switch.password) or await flow.run()
            else:
                logged_in = await flow.run()
        except RequestTimeout:
            print(LOST)
            return 1
        if not logged_in:
            return 0
        result = await ChatSession(conn, prompter, brokers).run()
        if isinstance(result, int):
            return result
        switch = result
