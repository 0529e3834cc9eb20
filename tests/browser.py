"""Debian's Chromium, driven through Selenium, for the tests that look at pages.

The browser runs headless with everything that would reach an outside network turned
off (background networking, component updates, sync, QUIC), in a new empty profile, at
a chosen window size. Every request the page makes is read back from Chromium's
performance log (:meth:`Browser.requested_urls`), so a test can prove a page loads
nothing from outside the stack. Screenshots go to ``var/screenshots/`` (git ignores
``var/``) so that a person can look at what the tests saw.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import in_ci  # the repository root's conftest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
DESKTOP = (1366, 900)
PHONE = (390, 844)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--force-device-scale-factor=1")


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = f"browser missing: {', '.join(missing)} (run `make system-packages` as root)"
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


class Browser:
    """One headless Chromium window."""

    def __init__(self, driver: Any):
        self.driver = driver

    def size(self, width_height: tuple[int, int]) -> None:
        self.driver.set_window_size(*width_height)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[Any], Any], timeout: float = 30,
             message: str = "") -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            condition, message)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def requested_urls(self) -> list[str]:
        """Every URL that went to a network (http, https, ws, wss) since the last call,
        from Chromium's network log; the browser's own ``chrome://`` and ``data:`` URLs
        are not requests to anyone."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                if url.split(":", 1)[0] in ("http", "https", "ws", "wss"):
                    urls.append(url)
        return urls

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry.get("level") == "SEVERE"]


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP) -> Iterator[Browser]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chancery-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(60)
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
