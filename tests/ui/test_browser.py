"""The console in a real browser (headless Chromium): sign in, see a delivered prediction,
open it, sign out; a wrong token; a page without a session; nothing from another origin.
Screenshots of the main pages go to UI_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.browser import arrives, chromium, signed_in, submit_token
from tests.support.live import LiveReceiver
from tests.support.receiving import READ_TOKEN, deliver, prediction


def origins_loaded(browser: WebDriver) -> set[str]:
    """Every resource the page fetched, as the browser itself recorded it."""
    names = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
    )
    return {"/".join(str(name).split("/")[:3]) for name in names}


def test_sign_in_see_a_prediction_open_it_and_sign_out(
    receiver: LiveReceiver, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    deliver(receiver.url, prediction("pred-ok", "succeeded", output=[[0.1, 0.2]]))
    receiver.clock.now += 1
    deliver(receiver.url, prediction("pred-failed", "failed", error="CUDA out of memory"))
    with chromium() as browser:
        browser.get(f"{receiver.url}/ui/")
        assert browser.current_url == f"{receiver.url}/ui/sign-in"  # no session yet
        submit_token(browser, "wrong")
        error = WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".error"))
        )
        assert error.text == "Wrong token."
        browser.save_screenshot(str(shots / "sign-in.png"))

        submit_token(browser, READ_TOKEN)
        arrives(browser, f"{receiver.url}/ui/")
        links = browser.find_elements(By.CSS_SELECTOR, "#predictions tbody a")
        assert [link.text for link in links] == ["pred-failed", "pred-ok"]
        failed = browser.find_element(By.CSS_SELECTOR, "#predictions .status.failed")
        assert failed.value_of_css_property("color") != failed.value_of_css_property(
            "background-color"
        )
        assert origins_loaded(browser) == {receiver.url}
        browser.save_screenshot(str(shots / "predictions.png"))

        links[0].click()
        arrives(browser, f"{receiver.url}/ui/predictions/pred-failed")
        assert "CUDA out of memory" in browser.find_element(By.CSS_SELECTOR, "main").text
        assert origins_loaded(browser) == {receiver.url}
        browser.save_screenshot(str(shots / "prediction.png"))

        browser.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
        arrives(browser, f"{receiver.url}/ui/sign-in")
        browser.get(f"{receiver.url}/ui/predictions/pred-ok")
        assert browser.current_url == f"{receiver.url}/ui/sign-in"  # this browser is signed out


def test_every_page_fits_a_phone_without_scrolling_sideways(
    receiver: LiveReceiver, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    vectors = [[round(math.sin(i / 12 + k), 3) for i in range(384)] for k in range(3)]
    deliver(receiver.url, prediction("pred-vectors", "succeeded", output=vectors))
    long_error = "CUDA out of memory. Tried to allocate 2.00 GiB; " * 4
    deliver(receiver.url, prediction("pred-long-error", "failed", error=long_error))
    with chromium(width=390, height=844, phone=True) as browser:
        signed_in(browser, receiver.url, READ_TOKEN)
        assert browser.execute_script("return window.innerWidth") == 390
        for path in ("/ui/", "/ui/predictions/pred-vectors", "/ui/predictions/pred-long-error"):
            browser.get(f"{receiver.url}{path}")
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (path, overflow)
        sparks = browser.find_elements(By.CSS_SELECTOR, "svg.spark")
        assert sparks == []  # the error page draws none
        browser.get(f"{receiver.url}/ui/predictions/pred-vectors")
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.spark")) == 3
        browser.save_screenshot(str(shots / "prediction-phone.png"))
