"""The pre-login dialogue: with --user the password at once (an unknown name is offered "create
it? [y/N]"), else "new user? [y/N]"; registration with a confirmed hidden password, login with
retries after a wrong password; also the typed commands `login <user> <password>`,
`newuser <user> <password>` and `reg <user>`.
"""

from __future__ import annotations

from zmq_chat.client import view
from zmq_chat.client.connection import Connection
from zmq_chat.client.lines import expand_alias
from zmq_chat.client.paint import say
from zmq_chat.client.prompts import Interrupted, Prompter
from zmq_chat.protocol.commands import Credentials, Reg, Simple, parse_command
from zmq_chat.protocol.errors import ErrorCode, ProtocolError, UsageError
from zmq_chat.protocol.replies import UNSET, ErrorReply, HelloReply
from zmq_chat.protocol.validation import DEFAULT_MIN_PASSWORD_CHARS, validate_password, validate_username

PRE_LOGIN_HELP = """\
  y                          create a new account, then log in
  n (or Enter)               log in to an existing account
  login <user> <password>    log in
  newuser <user> <password>  create an account and log in
  reg <user>                 log in as <user> (asks for the password)
  logout                     quit"""


class LoginFlow:
    """Runs the dialogue until a session exists or the user quits.

    Args:
        conn: a connected Connection (hello done).
        prompter: where lines and passwords are read.
        preset_user: --user: used as the username the first time one is needed.
    """

    def __init__(self, conn: Connection, prompter: Prompter, preset_user: str | None = None) -> None:
        self.conn = conn
        self.prompter = prompter
        self.preset_user = preset_user
        hello = conn.hello  # the ok hello reply (protocol.replies.HelloReply) after connect()
        self.min_password = hello.min_password_chars if isinstance(hello, HelloReply) else DEFAULT_MIN_PASSWORD_CHARS

    async def run(self) -> bool:
        """Ask until logged in. Returns True with a session open, False when the user quits
        (Ctrl+C, Ctrl+D or `logout`). Raises RequestTimeout when the broker stops answering.

        With --user the password is asked at once (an unknown name is offered registration);
        otherwise, or after that fails, the "new user? [y/N]" question."""
        if self.preset_user:
            try:
                if await self._existing_user():
                    return True
            except (Interrupted, EOFError):
                print()
        while True:
            try:
                answer = (await self.prompter.line("new user? [y/N] ", remember=False)).strip()
            except (Interrupted, EOFError):
                return False
            try:
                done = await self._answer(answer)
            except (Interrupted, EOFError):
                print()
                continue
            if done is not None:
                return done

    async def login_as(self, user: str, password: str) -> bool:
        """Log in as `user`; print the outcome. Returns True when the session is open."""
        return await self._login(user, password) is None

    async def _login(self, user: str, password: str) -> ErrorReply | None:
        """Log in as `user`. Returns None when the session is open, else the error reply (printed)."""
        reply = await self.conn.login(user, password)
        if not isinstance(reply, ErrorReply):
            return None
        self._show_login_error(reply)
        return reply

    async def _answer(self, answer: str) -> bool | None:
        """Handle one answer to the top question: True logged in, False quit, None ask again."""
        low = answer.lower()
        if low in ("y", "yes"):
            return await self._new_user() or None
        if low in ("", "n", "no"):
            return await self._existing_user() or None
        try:
            cmd = parse_command(expand_alias(answer))
        except UsageError as exc:
            say(f"{exc.message}" + (f" (usage: {exc.usage})" if exc.usage else ""), "error")
            return None
        if isinstance(cmd, Credentials) and cmd.word == "login":
            return await self.login_as(cmd.user, cmd.password) or None
        if isinstance(cmd, Credentials):
            return await self._register_and_login(cmd.user, cmd.password) or None
        if isinstance(cmd, Reg):
            password = await self.prompter.password(f"password for {cmd.user}: ")
            return await self.login_as(cmd.user, password) or None
        if isinstance(cmd, Simple) and cmd.word == "logout":
            return False
        if isinstance(cmd, Simple) and cmd.word == "help":
            print(PRE_LOGIN_HELP)
            return None
        print("log in first: answer y or n, or type help")
        return None

    async def _ask_user(self) -> str | None:
        if self.preset_user:
            user, self.preset_user = self.preset_user, None
        else:
            user = (await self.prompter.line("username: ", remember=False)).strip()
        try:
            validate_username(user)
        except ProtocolError as exc:
            print(f"'{user}': {exc.message}")
            return None
        return user

    async def _existing_user(self) -> bool:
        """Log in as the user asked for; the password is asked again after a wrong one."""
        user = await self._ask_user()
        while user is not None:
            password = await self.prompter.password("password: ")
            reply = await self.conn.login(user, password)
            if not isinstance(reply, ErrorReply):
                return True
            if reply.code == ErrorCode.UNKNOWN_USER:
                return await self._offer_register(user, password)
            self._show_login_error(reply)
            if reply.code != ErrorCode.BAD_CREDENTIALS:
                break
        return False

    async def _offer_register(self, user: str, password: str) -> bool:
        """`user` has no account: offer to create it with the password just typed (confirmed, or
        a new one when the broker would refuse it), then log in. Returns True when logged in."""
        answer = await self.prompter.line(f"no account named {user}; create it? [y/N] ", remember=False)
        if answer.strip().lower() not in ("y", "yes"):
            return False
        try:
            validate_password(password, self.min_password)
        except ProtocolError as exc:
            print(exc.message)
            return await self._register_and_login(user, await self._new_password())
        if await self.prompter.password("confirm password: ") != password:
            print("the passwords do not match; try again")
            password = await self._new_password()
        return await self._register_and_login(user, password)

    async def _new_user(self) -> bool:
        """Register the user asked for with a new, confirmed password, then log in."""
        user = await self._ask_user()
        return user is not None and await self._register_and_login(user, await self._new_password())

    async def _new_password(self) -> str:
        """Ask for a password the broker accepts until it is typed twice the same."""
        while True:
            password = await self.prompter.password(f"password (at least {self.min_password} characters): ")
            try:
                validate_password(password, self.min_password)
            except ProtocolError as exc:
                print(exc.message)
                continue
            if await self.prompter.password("confirm password: ") == password:
                return password
            print("the passwords do not match; try again")

    async def _register_and_login(self, user: str, password: str) -> bool:
        try:
            validate_password(password, self.min_password)
        except ProtocolError as exc:
            print(exc.message)
            return False
        reply = await self.conn.register(user, password)
        if isinstance(reply, ErrorReply):
            say(view.error_line(reply), "error")
            return False
        print(f"account {user} created")
        return await self.login_as(user, password)

    @staticmethod
    def _show_login_error(reply: ErrorReply) -> None:
        line = view.error_line(reply)
        retry = reply.retry_after
        if reply.code == ErrorCode.BLOCKED and retry is not UNSET:
            if f"{retry:.0f} s" not in line:  # the broker's message usually says it already
                line += f" (retry after {retry:.0f} s)"
        say(line, "error")

