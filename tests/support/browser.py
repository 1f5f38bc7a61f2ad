"""Headless Chromium from Debian's packages (`chromium`, `chromium-driver`; `make test`
installs them), driven by Selenium through that chromedriver: no browser is downloaded.
Screenshots of the main pages are kept after every run, in test-output/screenshots/ (not
committed) or in UI_SCREENSHOTS."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def chromium(
    width: int = 1100, height: int = 800, phone: bool = False, downloads: Path | None = None
) -> Iterator[webdriver.Chrome]:
    """`phone`: Chromium's device emulation at `width` x `height` (a desktop window is never
    narrower than 500 px), with a phone's viewport rules. `downloads`: where files the page
    downloads are saved, without asking."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} missing: run `make test-services`"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    if downloads is not None:
        prefs = {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
        }
        options.add_experimental_option("prefs", prefs)
    if phone:
        metrics = {"width": width, "height": height, "pixelRatio": 2, "mobile": True}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def arrives(browser: WebDriver, url: str) -> None:
    """Wait for a navigation the page started (a form's POST and its redirect) to land."""
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(url))


def submit_token(browser: WebDriver, token: str) -> None:
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form.sign-in button").click()


def signed_in(browser: WebDriver, url: str, token: str) -> None:
    """Through the sign-in form, as a user would, up to the predictions page."""
    browser.get(f"{url}/ui/sign-in")
    submit_token(browser, token)
    arrives(browser, f"{url}/ui/")


def screenshot(browser: WebDriver, name: str) -> None:
    """Save what the browser shows as `name`.png, for people to look at (nothing compares it)."""
    folder = Path(os.environ.get("UI_SCREENSHOTS", ROOT / "test-output" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / f"{name}.png"))
