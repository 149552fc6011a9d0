"""chat-web's server side without a browser: aiohttp's test client speaks to the page's WebSocket
(web/server.py) while a real broker (tests/harness.py) runs on 127.0.0.1. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable

import pytest

pytest.importorskip("aiohttp", reason="chat-web needs the web extra (aiohttp)")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from tests.harness import Broker  # noqa: E402
from zmq_chat.web import server  # noqa: E402
from zmq_chat.web.cli import loopback, parse_args  # noqa: E402
from zmq_chat.web.session import Settings  # noqa: E402

pytestmark = pytest.mark.timeout(60)
PASSWORD = "secret123"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("web-broker"))
    try:
        yield b
    finally:
        b.stop()


def settings_for(broker: Broker, **kw: Any) -> Settings:
    return Settings(host="127.0.0.1", port=broker.port, server_key=broker.server_key, **kw)


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Page:
    """One page's WebSocket: what it received (items) and helpers to wait for an item."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.items: list[dict] = []
        self.ws: Any = None
        self.token: str | None = None
        self.epoch: str | None = None
        self.after = 0

    async def open(self) -> dict:
        self.ws = await self.client.ws_connect("/ws")
        await self.ws.send_json({"t": "hello", "token": self.token, "epoch": self.epoch, "after": self.after})
        hello = await self.wait(lambda i: i["t"] == "hello")
        self.token, self.epoch = hello["token"], hello["epoch"]
        return hello

    async def wait(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        for item in self.items:
            if pred(item):
                self.items.remove(item)
                return item
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _deadline(timeout):
            while True:
                item = await self.ws.receive_json()
                self.after = max(self.after, item.get("n", 0))
                if item["t"] == "hello":
                    self.epoch = item["epoch"]
                if pred(item):
                    return item
                self.items.append(item)

    async def login(self, user: str, new: bool = True) -> dict:
        await self.ws.send_json({"t": "login", "user": user, "password": PASSWORD, "new": new})
        return await self.wait(lambda i: i["t"] in ("login_failed",) or i["t"] == "hello" and i["user"] == user)


class _deadline:  # Python 3.10: asyncio.timeout is 3.11+
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.handle = loop.call_later(self.timeout, task.cancel)

    async def __aexit__(self, *exc: Any) -> None:
        self.handle.cancel()


def run(broker: Broker, body: Callable[[TestClient], Any], **kw: Any) -> None:
    async def main() -> None:
        app = server.make_app(settings_for(broker, **kw))
        async with TestClient(TestServer(app)) as client:
            await body(client)
    asyncio.run(main())


def test_page_headers_forbid_inline_script_and_the_page_has_none(broker):
    async def body(client: TestClient) -> None:
        resp = await client.get("/")
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        html = await resp.text()
        assert '<script src="/static/app.js" defer></script>' in html
        assert html.count("<script") == 1 and " on" not in html.replace(" one", "")
        js = await client.get("/static/app.js")
        assert js.status == 200 and "innerHTML" not in await js.text()
        assert js.headers["Content-Security-Policy"] == csp
        assert (await client.get("/static/../server.py")).status in (403, 404)
        assert (await client.get("/ws", headers={"Origin": "http://evil.example"})).status == 403
    run(broker, body)


def test_login_send_ack_after_the_page_has_it_and_resume_after_a_drop(broker):
    alice, bob = name("alice"), name("bob")

    async def body(client: TestClient) -> None:
        a, b = Page(client), Page(client)
        assert (await a.open())["user"] == ""
        await b.open()
        assert (await a.login(alice))["t"] == "hello"
        assert (await b.login(bob))["t"] == "hello"
        await a.ws.send_json({"t": "send", "to": [bob], "text": "<b>hi</b>", "cid": "c1"})
        mine = await a.wait(lambda i: i["t"] == "mine")
        assert mine["got"] == [bob] and mine["error"] == ""
        got = await b.wait(lambda i: i["t"] == "msg")
        assert (got["from"], got["text"], got["away"]) == (alice, "<b>hi</b>", False)
        # the page is reloaded before saying it rendered the message: the reloaded page (after 0,
        # same session token) gets the transcript again, the message included, and it is not acked yet
        await b.ws.close()
        b.after = 0
        await b.open()
        again = await b.wait(lambda i: i["t"] == "msg")
        assert again["id"] == got["id"]
        await b.ws.send_json({"t": "got", "ids": [got["id"]]})
        # the same send id again (a page resending after a reconnect) is stored once
        await a.ws.send_json({"t": "send", "to": [bob], "text": "<b>hi</b>", "cid": "c1"})
        await a.wait(lambda i: i["t"] == "mine")
        await a.ws.send_json({"t": "send", "to": None, "text": "to all", "cid": "c2"})
        bcast = await b.wait(lambda i: i["t"] == "bcast")
        assert (bcast["user"], bcast["text"]) == (alice, "to all")
        await b.ws.send_json({"t": "cmd", "name": "logout"})
        ended = await b.wait(lambda i: i["t"] == "ended")
        assert ended["reason"] == "logout"
        presence = await a.wait(lambda i: i["t"] == "presence" and i["event"] == "logout")
        assert presence["user"] == bob
        # acked after the page had it: not shown again at the next login
        b2 = Page(client)
        await b2.open()
        await b2.login(bob, new=False)
        await b2.ws.send_json({"t": "cmd", "name": "status"})
        await b2.wait(lambda i: i["t"] == "status")
        assert not [i for i in b2.items if i["t"] == "msg"]
    run(broker, body)


def test_commands_busy_idle_hide_last_and_a_wrong_password(broker):
    carol, dave = name("carol"), name("dave")

    async def body(client: TestClient) -> None:
        c, d = Page(client), Page(client)
        await c.open()
        await d.open()
        await c.login(carol)
        bad = Page(client)
        await bad.open()
        await bad.ws.send_json({"t": "login", "user": carol, "password": "wrong-one", "new": False})
        assert (await bad.wait(lambda i: i["t"] == "login_failed"))["text"] == "wrong user name or password"
        await d.login(dave)
        await c.ws.send_json({"t": "cmd", "name": "busy", "text": "in a meeting"})
        state = await c.wait(lambda i: i["t"] == "state" and i["me"]["busy"])
        assert state["me"] == {"busy": True, "busy_text": "in a meeting", "hidden": False}
        await d.ws.send_json({"t": "send", "to": [carol], "text": "ping", "cid": "d1"})
        mine = await d.wait(lambda i: i["t"] == "mine")
        assert mine["busy"] == [{"user": carol, "text": "in a meeting"}]
        await d.wait(lambda i: i["t"] == "state" and i["busy"] == {carol: "in a meeting"})  # (its presence said "busy" first)
        await c.ws.send_json({"t": "cmd", "name": "idle"})
        c.items.clear()
        held = await c.wait(lambda i: i["t"] == "msg")
        assert held["text"] == "ping"
        # the notice comes before the held messages it announces
        assert [i["text"] for i in c.items if i["t"] == "notice"] == ["you are available; 1 held message(s) follow"]
        await c.ws.send_json({"t": "cmd", "name": "hide"})
        assert (await c.wait(lambda i: i["t"] == "state" and i["me"]["hidden"]))["me"]["hidden"] is True
        d.items.clear()
        await d.ws.send_json({"t": "cmd", "name": "who"})
        assert carol not in (await d.wait(lambda i: i["t"] == "state"))["online"]
        await d.ws.send_json({"t": "cmd", "name": "last", "minutes": 5})
        assert dave in (await d.wait(lambda i: i["t"] == "last"))["users"]
    run(broker, body)


def test_a_broker_shutdown_is_said_plainly(tmp_path):
    b = Broker(tmp_path / "data")
    erin = name("erin")

    async def body(client: TestClient) -> None:
        page = Page(client)
        await page.open()
        await page.login(erin)
        await asyncio.get_running_loop().run_in_executor(None, b.stop)
        ended = await page.wait(lambda i: i["t"] == "ended", timeout=20)
        assert ended["reason"] == "shutdown" and "shutting down" in ended["text"]
    try:
        run(b, body)
    finally:
        b.stop()


def test_cli_refuses_other_hosts_without_tls_or_insecure_http(capsys):
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost") and not loopback("0.0.0.0")
    with pytest.raises(SystemExit):
        parse_args(["--broker", "127.0.0.1:4119", "--listen", "0.0.0.0"])
    assert "--insecure-http" in capsys.readouterr().err
    args = parse_args(["--broker", "127.0.0.1:4119", "--listen", "0.0.0.0", "--insecure-http"])
    assert args.insecure_http and args.address.port == 4119


def test_a_page_under_another_host_name_cannot_open_the_websocket_of_a_loopback_server(broker):
    async def body(client: TestClient) -> None:  # (a DNS-rebinding site names its own domain)
        rebound = await client.get("/ws", headers={"Host": "evil.example:8080", "Origin": "http://evil.example:8080"})
        assert rebound.status == 403
        page = Page(client)
        assert (await page.open())["user"] == ""  # 127.0.0.1 is fine
    run(broker, body)


def test_a_browser_session_that_does_not_log_in_is_closed(broker):
    async def body(client: TestClient) -> None:
        page = Page(client)
        await page.open()
        async with asyncio.timeout(10) if hasattr(asyncio, "timeout") else _deadline(10):
            while not page.ws.closed:
                await page.ws.receive()  # the server closes it after login_seconds
        assert not client.server.app[server.SESSIONS]
    run(broker, body, login_seconds=0.2)
