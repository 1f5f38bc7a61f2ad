"""The console in a real browser (headless Chromium): sign in, see a delivered prediction,
open it, sign out; a wrong token; a page without a session; nothing from another origin.
Screenshots of the main pages are kept (tests/support/browser.py says where)."""

from __future__ import annotations

import math

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.browser import arrives, chromium, screenshot, signed_in, submit_token
from tests.support.live import LiveReceiver
from tests.support.receiving import READ_TOKEN, SECRET, deliver, prediction
from tests.support.standin import standin_deployment


def origins_loaded(browser: WebDriver) -> set[str]:
    """Every resource the page fetched, as the browser itself recorded it."""
    names = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
    )
    return {"/".join(str(name).split("/")[:3]) for name in names}


def status_of(browser: WebDriver, prediction_id: str) -> str:
    """The status the predictions page shows for one prediction ("" if it is not listed)."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")
    for row in rows:
        if row.find_element(By.CSS_SELECTOR, "a").text == prediction_id:
            return str(row.find_element(By.CSS_SELECTOR, ".status").text)
    return ""


def test_sign_in_see_a_prediction_arrive_open_it_and_sign_out(receiver: LiveReceiver) -> None:
    """A prediction on the stand-in, whose signed webhooks reach the receiver, shows up; the
    page then refreshes itself until it ends."""
    deliver(receiver.url, prediction("pred-failed", "failed", error="CUDA out of memory"))
    webhook = f"{receiver.url}/webhooks/replicate"
    with standin_deployment(SECRET) as deployment, chromium() as browser:
        browser.get(f"{receiver.url}/ui/")
        assert browser.current_url == f"{receiver.url}/ui/sign-in"  # no session yet
        submit_token(browser, "wrong")
        error = WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".error"))
        )
        assert error.text == "Wrong token."
        screenshot(browser, "sign-in")

        submit_token(browser, READ_TOKEN)
        arrives(browser, f"{receiver.url}/ui/")
        assert status_of(browser, "pred-failed") == "failed"
        failed = browser.find_element(By.CSS_SELECTOR, "#predictions .status.failed")
        assert failed.value_of_css_property("color") != failed.value_of_css_property(
            "background-color"
        )

        arrived = deployment.predict(webhook, ["a cat", "a kitten"])
        deployment.report(arrived, {"status": "processing"})
        deployment.wait_delivered(arrived, {"start"})
        browser.refresh()  # nothing was running: the page did not refresh itself
        assert status_of(browser, arrived) == "processing"
        vectors = [[round(math.sin(i / 12 + k), 3) for i in range(384)] for k in range(2)]
        ended = {"status": "succeeded", "output": vectors, "metrics": {"predict_time": 0.05}}
        receiver.clock.now += 1  # the receiver's clock, which stamps each arrival
        deployment.report(arrived, ended)
        deployment.wait_delivered(arrived, {"completed"})
        WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda shown: status_of(shown, arrived) == "succeeded"  # its own 5 s refresh
        )
        assert origins_loaded(browser) == {receiver.url}
        screenshot(browser, "predictions")

        browser.find_element(By.LINK_TEXT, arrived).click()
        arrives(browser, f"{receiver.url}/ui/predictions/{arrived}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.spark")) == 2
        timeline = browser.find_elements(By.CSS_SELECTOR, ".timeline li")
        assert [item.text.split()[0] for item in timeline] == ["processing", "succeeded"]
        assert all(item.text.endswith("applied") for item in timeline)
        assert origins_loaded(browser) == {receiver.url}
        screenshot(browser, "prediction")

        browser.get(f"{receiver.url}/ui/predictions/pred-failed")
        assert "CUDA out of memory" in browser.find_element(By.CSS_SELECTOR, "main").text
        browser.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
        arrives(browser, f"{receiver.url}/ui/sign-in")
        browser.get(f"{receiver.url}/ui/predictions/{arrived}")
        assert browser.current_url == f"{receiver.url}/ui/sign-in"  # this browser is signed out


def test_every_page_fits_a_phone_without_scrolling_sideways(receiver: LiveReceiver) -> None:
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
        screenshot(browser, "prediction-phone")
