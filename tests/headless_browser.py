"""A headless Chromium driven by selenium, for the interactive map's tests, benchmark and
screenshot. Uses the browser and chromedriver on PATH (Debian: ``apt install chromium
chromium-driver``; ``scripts/setup.sh`` installs them as root), or the paths in
``TRAINMAP_CHROME`` and ``TRAINMAP_CHROMEDRIVER``; never downloads one.

The browser gets a proxy at a closed local port, so any attempt of a page to reach the
network fails and shows up in the browser log (``driver.get_log("browser")``).
"""

from __future__ import annotations

import os
import shutil

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
DRIVERS = ("chromedriver",)


def _which(env: str, names: tuple[str, ...]) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.path.exists(os.environ[env]) else None
    return next((p for p in map(shutil.which, names) if p), None)


def find_browser() -> tuple[str | None, str | None, str]:
    """``(browser, chromedriver, reason)``; ``reason`` says what is missing ('' when both
    were found)."""
    browser = _which("TRAINMAP_CHROME", BROWSERS)
    driver = _which("TRAINMAP_CHROMEDRIVER", DRIVERS)
    missing = []
    if browser is None:
        missing.append("no Chromium/Chrome (apt install chromium, or set TRAINMAP_CHROME)")
    if driver is None:
        missing.append("no chromedriver (apt install chromium-driver, or set TRAINMAP_CHROMEDRIVER)")
    return browser, driver, "; ".join(missing)


def headless_chrome(width: int = 1400, height: int = 1000):
    """A headless Chrome WebDriver with the browser log enabled and the network cut off.
    Raises ``RuntimeError`` with the reason when no browser or driver is found."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver, reason = find_browser()
    if reason:
        raise RuntimeError(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
