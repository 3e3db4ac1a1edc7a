"""Headless Chromium driven by Selenium, with Chromium's fake microphone
playing a recording from ``samples/`` (it loops the file).

Chromium and chromedriver come from Debian's ``chromium`` and
``chromium-driver`` packages (``.ci/run`` installs them);
``SPEECH_TEST_CHROMIUM`` / ``SPEECH_TEST_CHROMEDRIVER`` point elsewhere.
Without them the browser tests are skipped, except when ``CI`` is set: there
they fail, because CI must run them.

Screenshots go to ``test-output/console/`` (gitignored) for review.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES

SCREENSHOTS = ROOT / "test-output" / "console"
WINDOW = (1280, 860)


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_browser() -> tuple[str, str]:
    chromium = _find("SPEECH_TEST_CHROMIUM", "chromium", "chromium-browser")
    driver = _find("SPEECH_TEST_CHROMEDRIVER", "chromedriver")
    missing = [what for what, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the test extra)")
    if missing:
        reason = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so they must run")
        pytest.skip(reason + "; under CI this fails")
    assert chromium and driver
    return chromium, driver


@pytest.fixture(scope="session")
def browser_paths() -> tuple[str, str]:
    return _require_browser()


def launch(paths: tuple[str, str], *, audio: Path | None = SAMPLES / "hello_robot.wav", mic: str = "allow") -> Any:
    """A headless Chromium whose microphone plays ``audio`` (looped);
    ``mic="deny"`` refuses the microphone permission as a person would."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream" + ("=deny" if mic == "deny" else ""),
        "--autoplay-policy=user-gesture-required",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    if audio is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={audio}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


@pytest.fixture(scope="module")
def chrome(browser_paths: tuple[str, str]) -> Iterator[Any]:
    """One browser for a test module; each test opens its own gateway (its own
    origin, so its own sessionStorage)."""
    driver = launch(browser_paths)
    yield driver
    driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(driver: Any, condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; on time-out,
    fail with the page's status lines and a screenshot."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:  # noqa: BLE001 - an element not there yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            shot = screenshot(driver, "timeout")
            state = driver.execute_script(
                "return [...document.querySelectorAll('.status, #banner')].map(e => e.id + ': ' + e.textContent)"
            )
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}; page: {state}; see {shot}")
        time.sleep(0.1)


def text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def severe_logs(driver: Any) -> list[str]:
    """The browser console's errors since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class LogLines(logging.Handler):
    """Every line the gateway logs (uvicorn's access and error logs, ours).
    Attach after the server started: uvicorn's logging set-up replaces the
    handlers of its loggers."""

    NAMES = ("uvicorn.access", "uvicorn.error", "speech", "")

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def attach(self) -> None:
        for name in self.NAMES:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def gateway_logs() -> Iterator[LogLines]:
    capture = LogLines()
    yield capture
    capture.detach()
