"""chat-web in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by Selenium through
/usr/bin/chromedriver) runs two browser sessions and one terminal chat-client (pexpect) against a
real broker: private, group and broadcast messages, presence, an offline message at the next login,
and the escape case. Screenshots go to test-artifacts/web/ (git-ignored). Every wait has a deadline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="the browser tests need selenium (the test extra)")
pytest.importorskip("aiohttp", reason="chat-web needs the web extra (aiohttp)")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

from tests.harness import Broker  # noqa: E402
from tests.pty_client import client_factory  # noqa: E402

pytestmark = pytest.mark.timeout(120)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
PASSWORD = "secret123"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def chat_web(broker, tmp_path) -> Iterator[str]:
    """A chat-web subprocess on a free port of 127.0.0.1; yields the URL it prints."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zmq_chat.web", "--broker", f"127.0.0.1:{broker.port}",
                             f"--server-key={broker.server_key.decode()}", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        assert proc.stdout is not None
        for _ in range(20):  # a few start lines at most, each read blocks until printed (or EOF)
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"open (http://127\.0\.0\.1:\d+/) in a browser", line)
            if found:
                url = found.group(1)
                break
        assert url, "chat-web printed no URL"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def browsers(tmp_path) -> Iterator[Callable[[str], Any]]:
    """make(name) -> a headless Chromium with its own fresh profile; all quit at the end."""
    made: list[Any] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS.parent / ".gitignore").write_text("*\n")

    def make(name: str, size: tuple[int, int] = (1100, 800)) -> Any:
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / ('profile-' + name)}",
                     f"--window-size={size[0]},{size[1]}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
        made.append(driver)
        return driver

    try:
        yield make
    finally:
        for driver in made:
            driver.quit()


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(driver: Any, what: str, predicate: Callable[[Any], Any], timeout: float = 15) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate)
    except Exception:
        shot(driver, f"failed-{what}")
        raise


def texts(driver: Any, conv: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f'#logs ol[data-conv="{conv}"] .text')]


def register(driver: Any, url: str, user: str, new: bool = True) -> None:
    driver.get(url)
    wait(driver, "login-form", lambda d: d.find_element(By.ID, "login-user").is_displayed())
    driver.find_element(By.ID, "login-user").send_keys(user)
    driver.find_element(By.ID, "login-pass").send_keys(PASSWORD)
    driver.find_element(By.ID, "register-btn" if new else "login-btn").click()
    wait(driver, f"login-{user}", lambda d: d.find_element(By.ID, "me").text == user)


def say(driver: Any, conv: str, text: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="{conv}"]').click()
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def test_two_browsers_and_a_terminal_chat(broker, chat_web, browsers, tmp_path):
    alice, bob, carol = name("alice"), name("bob"), name("carol")
    with client_factory(tmp_path / "config") as terminal:
        c = terminal(["--host", f"127.0.0.1:{broker.port}", f"--server-key={broker.server_key.decode()}"])
        c.expect(r"new user\?")
        c.sendline(f"newuser {carol} {PASSWORD}")
        c.expect_exact(f"logged in as {carol}")
        a, b = browsers("alice"), browsers("bob", size=(390, 844))  # bob on a phone-sized screen
        register(a, chat_web, alice)
        register(b, chat_web, bob)
        # presence: alice sees bob come online, live
        wait(a, "presence", lambda d: d.find_elements(By.CSS_SELECTOR, f'#online li[data-user="{bob}"]'))
        # private: alice opens bob from the online list and presses Enter
        a.find_element(By.CSS_SELECTOR, f'#online li[data-user="{bob}"]').click()
        say(a, f"@{bob}", "hello bob")
        b.find_element(By.ID, "menu-btn").click()
        badge = wait(b, "unread", lambda d: d.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="@{alice}"] .badge'))
        assert badge.text == "1"
        shot(b, "phone-unread")
        b.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="@{alice}"]').click()
        wait(b, "private", lambda d: texts(d, f"@{alice}") == ["hello bob"])
        # group: alice writes to bob and carol; bob gets it in a group conversation, carol in the terminal
        a.find_element(By.ID, "new-conv-names").send_keys(f"{bob} {carol}" + Keys.ENTER)
        group = "g:" + ",".join(sorted([bob, carol]))
        say(a, group, "team meeting")
        c.expect_exact("team meeting")
        b.find_element(By.ID, "menu-btn").click()
        bob_group = "g:" + ",".join(sorted([alice, carol]))
        wait(b, "group", lambda d: d.find_elements(By.CSS_SELECTOR, f'#convs li[data-conv="{bob_group}"]'))
        b.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="{bob_group}"]').click()
        wait(b, "group-text", lambda d: texts(d, bob_group) == ["team meeting"])
        # broadcast from the terminal reaches both rooms; the escape case shows as characters
        c.sendline("broadcast hi all")
        c.sendline(f"send {alice} {XSS}")
        for driver in (a, b):
            wait(driver, "broadcast", lambda d: "hi all" in d.execute_script(
                "return document.querySelector('#logs ol[data-conv=room]').textContent"))
        wait(a, "escape", lambda d: d.find_elements(By.CSS_SELECTOR, f'#convs li[data-conv="@{carol}"]'))
        a.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="@{carol}"]').click()
        wait(a, "escape-text", lambda d: texts(d, f"@{carol}") == [XSS])
        assert not a.find_elements(By.CSS_SELECTOR, "#logs img")
        with pytest.raises(NoAlertPresentException):
            a.switch_to.alert.text  # noqa: B018 - no alert was opened
        shot(a, "desktop-escape")
        # offline: bob logs out, carol writes, bob logs in again and sees it after the divider
        b.find_element(By.ID, "logout-btn").click()
        wait(b, "logged-out", lambda d: d.find_element(By.ID, "login-user").is_displayed())
        wait(a, "presence-out", lambda d: not d.find_elements(By.CSS_SELECTOR, f'#online li[data-user="{bob}"]'))
        c.sendline(f"send {bob} while you were out")
        c.expect_exact("while you were out")
        b.find_element(By.ID, "login-user").clear()
        register(b, chat_web, bob, new=False)
        b.find_element(By.ID, "menu-btn").click()
        wait(b, "offline", lambda d: d.find_elements(By.CSS_SELECTOR, f'#convs li[data-conv="@{carol}"]'))
        b.find_element(By.CSS_SELECTOR, f'#convs li[data-conv="@{carol}"]').click()
        lines = f'#logs ol[data-conv="@{carol}"] li'
        wait(b, "offline-text", lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, lines)][:1]
             == ["while you were away"] and texts(d, f"@{carol}") == ["while you were out"])
        shot(b, "phone-offline")
        c.sendline("logout")
