"""The console's jobs pages: progress, chunks, failures and cancel over HTTP, and a running
job followed to its end in headless Chromium."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
from selenium.webdriver.common.by import By

from localcog.polling import poll
from receiver.downloads import Downloader
from receiver.ui.session import COOKIE
from tests.support.browser import chromium, screenshot, signed_in
from tests.support.console import csrf_of, page, session_cookie
from tests.support.downloading import drain
from tests.support.jobs import JobRig, created, end, job, submit, uploaded_npy
from tests.support.receiving import READ_TOKEN


def test_a_job_page_shows_its_chunks_and_failures_and_cancels_with_csrf(rig: JobRig) -> None:
    job_id = submit(rig, texts=6, chunk_size=2)
    rig.runner.step()
    first = created(rig)[0]
    rig.clock.now += 1
    for _ in range(3):  # chunk 0 fails for good after its attempts
        end(rig, created(rig)[-1], "failed", "CUDA out of memory")
        rig.runner.step()
        rig.clock.now += 200
        rig.runner.step()
    assert first["id"] != created(rig)[-1]["id"]
    cookie = session_cookie(rig.url)
    listed = page(rig.url, "/ui/jobs/", cookie)
    assert listed.status_code == 200
    assert f'href="/ui/jobs/{job_id}"' in listed.text
    shown = page(rig.url, f"/ui/jobs/{job_id}", cookie)
    assert shown.status_code == 200
    assert '<progress id="progress" max="6" value="2">' in shown.text
    assert "prediction failed: CUDA out of memory (after 3 attempts)" in shown.text
    [failed] = job(rig, job_id)["failed_chunks"]
    texts = f"<td>{failed['first'] + 1} to {failed['first'] + failed['count']}</td>"
    assert texts in shown.text  # the failed chunk's place in the input
    cancel_url = f"{rig.url}/ui/jobs/{job_id}/cancel"
    headers = {"cookie": f"{COOKIE}={cookie}"}
    assert httpx.post(cancel_url, headers=headers).status_code == 403
    assert job(rig, job_id)["state"] == "running"
    results = page(rig.url, f"/ui/jobs/{job_id}/results.parquet", cookie)
    assert results.status_code == 409  # still running
    canceled = httpx.post(cancel_url, headers=headers, data={"csrf": csrf_of(shown.text)})
    assert canceled.status_code == 303
    assert job(rig, job_id)["state"] == "canceled"
    after = page(rig.url, f"/ui/jobs/{job_id}", cookie)
    assert "Cancel this job" not in after.text
    missing = page(rig.url, "/ui/jobs/job_0123456789abcdef", cookie)
    assert missing.status_code == 404
    assert "No job <code>job_0123456789abcdef</code>" in missing.text
    assert page(rig.url, "/ui/jobs/nonsense", cookie).status_code == 404


def test_a_running_job_is_followed_to_completion_in_a_browser(rig: JobRig, tmp_path: Path) -> None:
    job_id = submit(rig, texts=4, chunk_size=2)
    rig.runner.step()
    downloads = Downloader(rig.store, rig.settings, rig.clock)
    saved = tmp_path / "saved"
    with chromium(downloads=saved) as browser:
        signed_in(browser, rig.url, READ_TOKEN)
        browser.get(f"{rig.url}/ui/jobs/{job_id}")
        progress = browser.find_element(By.ID, "progress")
        assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("0", "4")
        assert browser.find_elements(By.CSS_SELECTOR, "form.cancel button")
        for prediction in created(rig):
            end(rig, {**prediction, "output": uploaded_npy(rig, 2)}, "succeeded", None)
            drain(downloads)
            rig.runner.step()
            browser.refresh()  # what the page's own refresh does every 5 s
            done = browser.find_element(By.ID, "done").text
            assert done in ("2 of 4", "4 of 4")
        assert browser.find_element(By.ID, "progress").get_attribute("value") == "4"
        assert "completed" in browser.find_element(By.CSS_SELECTOR, "main").text
        screenshot(browser, "job")
        assert not browser.find_elements(By.CSS_SELECTOR, "form.cancel button")
        link = browser.find_element(By.ID, "results").get_attribute("href")
        cookie = browser.get_cookie(COOKIE)

        browser.get(f"{rig.url}/ui/jobs/")
        assert browser.find_element(By.LINK_TEXT, job_id)
        screenshot(browser, "jobs")

        first = created(rig)[0]["id"]  # a chunk's prediction: its npy file, downloaded
        browser.get(f"{rig.url}/ui/predictions/{first}")
        browser.find_element(By.LINK_TEXT, "download").click()
        npy = poll(
            lambda: next((p for p in saved.glob("*.npy") if p.stat().st_size > 0), None),
            timeout=10,
            interval=0.05,
            what="the browser saved the file",
        )
    assert np.array_equal(np.load(npy), np.ones((2, 384), dtype=np.float32))
    assert link == f"{rig.url}/ui/jobs/{job_id}/results.parquet"
    assert cookie is not None
    download = httpx.get(link, headers={"cookie": f"{COOKIE}={cookie['value']}"})
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(download.content))
    assert table.column("id").to_pylist() == ["t0", "t1", "t2", "t3"]  # input order
    assert np.array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
        np.ones((4, 384), dtype=np.float32),
    )
