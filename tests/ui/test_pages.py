"""The console over HTTP: sign-in, the session cookie and CSRF, pages that redirect without a
session, what the pages show, and that nothing they load comes from another origin."""

from __future__ import annotations

import math
import re

import httpx
import pytest
from sqlalchemy import update

from receiver.tables import files
from receiver.ui.session import COOKIE, LIFETIME_SECONDS
from receiver.wrong_tokens import MAX_FAILURES, WINDOW_SECONDS
from tests.support.console import csrf_of, page, session_cookie, sign_in
from tests.support.live import LiveReceiver
from tests.support.receiving import READ_TOKEN, deliver, prediction, read


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/?status=failed",
        "/ui/predictions/p1",
        "/ui/predictions/p1/files/0",
        "/ui/jobs/",
        "/ui/jobs/job_0123456789abcdef",
        "/ui/files?state=dead",
        "/ui/refusals",
    ],
)
def test_a_page_without_a_session_redirects_to_sign_in(receiver: LiveReceiver, path: str) -> None:
    response = httpx.get(f"{receiver.url}{path}")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in"


def test_a_form_without_a_session_changes_nothing(receiver: LiveReceiver) -> None:
    for path in ("/ui/sign-out", "/ui/jobs/job_0123456789abcdef/cancel"):
        response = httpx.post(f"{receiver.url}{path}", data={"csrf": "x"})
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/sign-in"


@pytest.mark.parametrize(
    "cookie",
    # '"\\262.x"' is read as "².x": a digit to str.isdigit, not to int()
    ['"\\262.x"', '"9999999999.\\351"', "9" * 5000 + ".x", "", ".", "abc", "1.2.3"],
)
def test_a_junk_cookie_is_no_session_and_no_error(receiver: LiveReceiver, cookie: str) -> None:
    response = page(receiver.url, "/ui/", cookie)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in"


def test_a_wrong_token_is_refused_and_signs_nobody_in(receiver: LiveReceiver) -> None:
    refused = sign_in(receiver.url, token="wrong")
    assert refused.status_code == 403
    assert "Wrong token." in refused.text
    assert "set-cookie" not in refused.headers


def test_too_many_wrong_tokens_hold_off_even_the_right_one(receiver: LiveReceiver) -> None:
    """Else a guesser would learn the token from the answer; the hold lasts until the first
    wrong token is five minutes old, and each outcome is counted in /metrics."""
    for _ in range(MAX_FAILURES):
        assert sign_in(receiver.url, token="guess").status_code == 403
    receiver.clock.now += 60
    held = sign_in(receiver.url)
    assert held.status_code == 429
    assert held.headers["retry-after"] == str(int(WINDOW_SECONDS) - 60)
    assert "Too many wrong tokens" in held.text
    assert "set-cookie" not in held.headers
    receiver.clock.now += WINDOW_SECONDS - 60
    assert sign_in(receiver.url).status_code == 303
    counted = httpx.get(f"{receiver.url}/metrics").text
    assert 'receiver_token_checks_total{outcome="wrong",where="console"} 5.0' in counted
    assert 'receiver_token_checks_total{outcome="limited",where="console"} 1.0' in counted
    assert 'receiver_token_checks_total{outcome="ok",where="console"} 1.0' in counted


def test_the_console_and_the_read_api_share_one_count_of_wrong_tokens(
    receiver: LiveReceiver,
) -> None:
    """Else the read API would be the way around the console's limit."""
    bearer = {"authorization": "Bearer guess"}
    for _ in range(MAX_FAILURES - 1):
        assert httpx.get(f"{receiver.url}/predictions", headers=bearer).status_code == 403
    assert sign_in(receiver.url, token="guess").status_code == 403
    held = read(receiver.url, "/predictions")  # the right token, from the same client
    assert held.status_code == 429
    assert held.json()["error"].startswith("too many wrong tokens")
    assert int(held.headers["retry-after"]) == WINDOW_SECONDS
    assert sign_in(receiver.url).status_code == 429


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # a sibling subdomain is another site's page too
        {"origin": "https://attacker.example"},
        {"origin": "null"},
    ],
)
def test_a_sign_in_posted_from_another_site_is_refused_and_not_counted(
    receiver: LiveReceiver, headers: dict[str, str]
) -> None:
    """Another site's page could post wrong tokens from the operator's browser and so hold
    off the operator's address: such posts are refused before the token is looked at."""
    for _ in range(MAX_FAILURES + 1):
        refused = httpx.post(f"{receiver.url}/ui/sign-in", data={"token": "guess"}, headers=headers)
        assert refused.status_code == 403
        assert "Sign in from this site" in refused.text
    assert sign_in(receiver.url).status_code == 303
    own = {"sec-fetch-site": "same-origin", "origin": receiver.url}
    signed_in = httpx.post(f"{receiver.url}/ui/sign-in", data={"token": READ_TOKEN}, headers=own)
    assert signed_in.status_code == 303
    own_origin = httpx.post(
        f"{receiver.url}/ui/sign-in", data={"token": READ_TOKEN}, headers={"origin": receiver.url}
    )
    assert own_origin.status_code == 303


def test_a_sign_in_without_a_token_is_no_guess(receiver: LiveReceiver) -> None:
    """An empty field or another encoding (JSON, multipart) is refused, and not counted."""
    for _ in range(MAX_FAILURES + 1):
        assert sign_in(receiver.url, token="").status_code == 400
        as_json = httpx.post(f"{receiver.url}/ui/sign-in", json={"token": READ_TOKEN})
        assert as_json.status_code == 400
        assert "Give the read token." in as_json.text
    assert sign_in(receiver.url).status_code == 303


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/ui/?status=<lost>", 400, "status must be one of: starting"),
        ("/ui/?search=" + "<x>" * 100, 422, "search: String should have at most 255 characters"),
        ("/ui/files?state=<gone>", 422, "state: Input should be"),
        ("/ui/predictions/p/files/x", 422, "n: Input should be a valid integer"),
        ("/ui/nothing-here", 404, "Not Found"),
        ("/ui", 404, "Not Found"),
    ],
)
def test_a_refused_console_request_is_a_page_that_does_not_echo_the_input(
    receiver: LiveReceiver, path: str, status: int, reason: str
) -> None:
    shown = page(receiver.url, path, session_cookie(receiver.url))
    assert shown.status_code == status
    assert shown.headers["content-type"].startswith("text/html")
    assert shown.headers["content-security-policy"].startswith("default-src 'none'")
    assert reason in shown.text
    for sent in ("<x>", "&lt;x&gt;", "gone", "lost"):
        assert sent not in shown.text


def test_refused_forms_are_pages_too(receiver: LiveReceiver) -> None:
    cookie = session_cookie(receiver.url)
    headers = {"cookie": f"{COOKIE}={cookie}"}
    no_csrf = httpx.post(f"{receiver.url}/ui/sign-out", headers=headers, data={"csrf": "x"})
    assert no_csrf.status_code == 403
    assert "CSRF token is missing or wrong" in no_csrf.text
    huge = httpx.post(f"{receiver.url}/ui/sign-in", data={"token": "t" * 10_000})
    assert huge.status_code == 413
    assert huge.headers["content-type"].startswith("text/html")
    assert "form over 4096 bytes" in huge.text


def test_sign_in_sets_a_cookie_scripts_and_other_sites_cannot_use(receiver: LiveReceiver) -> None:
    signed_in = sign_in(receiver.url)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/ui/"
    flags = [part.strip().lower() for part in signed_in.headers["set-cookie"].split(";")]
    assert {"secure", "httponly", "samesite=strict", "path=/ui"} <= set(flags)
    assert "token" not in signed_in.headers["location"]


def test_a_forged_or_expired_session_is_refused(receiver: LiveReceiver) -> None:
    cookie = session_cookie(receiver.url)
    expires, _, mac = cookie.partition(".")
    forged = f"{int(expires) + 10**6}.{mac}"
    assert page(receiver.url, "/ui/", forged).status_code == 303
    assert page(receiver.url, "/ui/", cookie).status_code == 200
    receiver.clock.now += LIFETIME_SECONDS + 1
    assert page(receiver.url, "/ui/", cookie).status_code == 303


def test_the_list_shows_each_prediction_with_its_status_and_counts(receiver: LiveReceiver) -> None:
    deliver(
        receiver.url, prediction("p-ok", "succeeded", output="https://replicate.delivery/o.npy")
    )
    receiver.clock.now += 1
    deliver(receiver.url, prediction("p-bad", "failed", error="CUDA out of memory"))
    cookie = session_cookie(receiver.url)
    shown = page(receiver.url, "/ui/", cookie)
    assert shown.status_code == 200
    rows = re.findall(r'<a href="/ui/predictions/([^"]+)">', shown.text)
    assert rows == ["p-bad", "p-ok"]  # newest first
    assert '<span class="status failed">failed</span>' in shown.text
    failed_only = page(receiver.url, "/ui/?status=failed", cookie)
    assert re.findall(r'<a href="/ui/predictions/([^"]+)">', failed_only.text) == ["p-bad"]
    searched = page(receiver.url, "/ui/?search=p-o", cookie)
    assert re.findall(r'<a href="/ui/predictions/([^"]+)">', searched.text) == ["p-ok"]
    assert page(receiver.url, "/ui/?status=lost", cookie).status_code == 400
    assert page(receiver.url, "/ui/?search=%00", cookie).status_code == 400


def test_an_error_that_is_not_a_string_is_shown_as_json(receiver: LiveReceiver) -> None:
    deliver(receiver.url, prediction("p-odd-error", "failed", error={"nested": "obj"}))
    shown = page(receiver.url, "/ui/predictions/p-odd-error", session_cookie(receiver.url))
    assert '<p class="error">{&#34;nested&#34;:&#34;obj&#34;}</p>' in shown.text


def test_what_a_sender_wrote_is_shown_as_text_and_ids_stay_one_path_segment(
    receiver: LiveReceiver,
) -> None:
    body = prediction("p?x#y", "failed", error="<script>alert(1)</script>", logs="<b>x</b>")
    deliver(receiver.url, body)
    cookie = session_cookie(receiver.url)
    listed = page(receiver.url, "/ui/", cookie).text
    assert 'href="/ui/predictions/p%3Fx%23y"' in listed
    shown = page(receiver.url, "/ui/predictions/p%3Fx%23y", cookie)
    assert shown.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    assert "<script>" not in shown.text
    assert "&lt;b&gt;x&lt;/b&gt;" in shown.text


def test_a_page_refreshes_itself_while_a_prediction_runs_and_stops_after(
    receiver: LiveReceiver,
) -> None:
    deliver(receiver.url, prediction("p-run", "processing"))
    cookie = session_cookie(receiver.url)
    refresh = '<meta http-equiv="refresh" content="5">'
    assert refresh in page(receiver.url, "/ui/", cookie).text
    assert refresh in page(receiver.url, "/ui/predictions/p-run", cookie).text
    receiver.clock.now += 1
    deliver(receiver.url, prediction("p-run", "succeeded"))
    assert refresh not in page(receiver.url, "/ui/", cookie).text
    assert refresh not in page(receiver.url, "/ui/predictions/p-run", cookie).text


def test_a_prediction_page_shows_its_deliveries_and_files(receiver: LiveReceiver) -> None:
    body = prediction("p-one", "succeeded", output="https://replicate.delivery/a/out.npy")
    deliver(receiver.url, body, msg_id="msg_first")
    cookie = session_cookie(receiver.url)
    shown = page(receiver.url, "/ui/predictions/p-one", cookie)
    assert shown.status_code == 200
    assert "msg_first" in shown.text
    assert '<span class="file queued">queued</span>' in shown.text  # not downloaded yet
    missing = page(receiver.url, "/ui/predictions/nothing", cookie)
    assert missing.status_code == 404
    assert "No prediction <code>nothing</code>" in missing.text
    assert page(receiver.url, "/ui/predictions/p-one/files/0", cookie).status_code == 409


def test_the_list_shows_replicates_predict_time_not_arrival_times(receiver: LiveReceiver) -> None:
    """The receiver saw p-timed for 100 s (queueing, webhook delays); the model ran 0.42 s."""
    deliver(receiver.url, prediction("p-timed", "starting"))
    receiver.clock.now += 100
    ended = prediction("p-timed", "succeeded", metrics={"predict_time": 0.42})
    deliver(receiver.url, ended)
    deliver(receiver.url, prediction("p-untimed", "failed"))
    deliver(receiver.url, prediction("p-seen", "starting"))
    receiver.clock.now += 3
    deliver(receiver.url, prediction("p-seen", "failed"))
    deliver(receiver.url, prediction("p-running", "processing"))
    shown = page(receiver.url, "/ui/", session_cookie(receiver.url)).text
    assert "<th>Predict time</th>" in shown
    assert row_cells(shown, "p-timed")[3] == "0.42 s"
    assert row_cells(shown, "p-seen")[3] == "~3.0 s"  # no metrics: as the receiver saw it
    assert row_cells(shown, "p-untimed")[3] == "—"  # one delivery: no span either
    assert row_cells(shown, "p-running")[3] == "running"
    timed = page(receiver.url, "/ui/predictions/p-timed", session_cookie(receiver.url)).text
    assert "<dt>Predict time</dt><dd>0.420 s</dd>" in timed
    assert "<dt>Created</dt><dd>2026-11-23T08:00:00.000Z</dd>" in timed


def row_cells(html: str, prediction_id: str) -> list[str]:
    """The text of each cell of one prediction's row in the list."""
    row = re.search(rf'<tr>\s*<td><a href="/ui/predictions/{prediction_id}">.*?</tr>', html, re.S)
    assert row, f"no row for {prediction_id}"
    cells = re.findall(r"<td>(.*?)</td>", row.group(0), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def test_the_timeline_marks_duplicates_and_late_deliveries(receiver: LiveReceiver) -> None:
    """Each delivery once, in arrival order: applied, or not applied because its prediction had
    already ended; replays of a webhook-id counted on it, with the time of the last."""
    clock = receiver.clock
    clock.now = 1_763_884_800.0  # 2025-11-23T08:00:00Z
    deliver(receiver.url, prediction("p-t", "starting"), msg_id="msg_start", timestamp=clock.now)
    clock.now += 1
    done = prediction("p-t", "succeeded", output=[[0.5]])
    deliver(receiver.url, done, msg_id="msg_done", timestamp=clock.now)
    clock.now += 1
    late = prediction("p-t", "processing")
    deliver(receiver.url, late, msg_id="msg_late", timestamp=clock.now)
    for _ in range(2):
        clock.now += 1
        deliver(receiver.url, done, msg_id="msg_done", timestamp=clock.now)
    shown = page(receiver.url, "/ui/predictions/p-t", session_cookie(receiver.url)).text
    items = re.findall(r"<li>(.*?)</li>", shown.split('<ol class="timeline">')[1], re.S)
    lines = [" ".join(re.sub(r"<[^>]+>", "", item).split()) for item in items]
    assert lines == [
        "starting 2025-11-23T08:00:00.000+00:00 · webhook · msg_start · applied",
        "succeeded 2025-11-23T08:00:01.000+00:00 · webhook · msg_done · applied"
        " · 2 duplicates, the last at 2025-11-23T08:00:04.000+00:00",
        "processing 2025-11-23T08:00:02.000+00:00 · webhook · msg_late"
        " · not applied: came after the end",
    ]


def test_the_timeline_tells_a_repeated_poll_from_a_duplicate(receiver: LiveReceiver) -> None:
    """The reconciler asks Replicate about a silent prediction at each pass; the same state
    again is stored under the same id, and is no retry by a sender."""
    body = prediction("p-polled", "processing")
    for at in (1_763_884_800.0, 1_763_884_830.0, 1_763_884_860.0):
        receiver.store.record("reconcile:processing:p-polled", body, at, source="reconcile")
    shown = page(receiver.url, "/ui/predictions/p-polled", session_cookie(receiver.url)).text
    assert "asked again 2 times, the last at 2025-11-23T08:01:00.000+00:00" in shown
    assert "duplicate" not in shown


def test_sign_out_needs_the_pages_csrf_token(receiver: LiveReceiver) -> None:
    cookie = session_cookie(receiver.url)
    csrf = csrf_of(page(receiver.url, "/ui/", cookie).text)
    headers = {"cookie": f"{COOKIE}={cookie}"}
    url = f"{receiver.url}/ui/sign-out"
    assert httpx.post(url, headers=headers).status_code == 403
    altered = csrf[:-1] + ("A" if csrf[-1] != "A" else "B")
    assert httpx.post(url, headers=headers, data={"csrf": altered}).status_code == 403
    signed_out = httpx.post(url, headers=headers, data={"csrf": csrf})
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/ui/sign-in"
    assert f'{COOKIE}=""' in signed_out.headers["set-cookie"]


def test_pages_load_nothing_from_another_origin(receiver: LiveReceiver) -> None:
    deliver(receiver.url, prediction("p-any", "processing"))
    cookie = session_cookie(receiver.url)
    for path in ("/ui/sign-in", "/ui/", "/ui/predictions/p-any"):
        shown = page(receiver.url, path, cookie)
        assert shown.status_code == 200
        assert "default-src 'none'" in shown.headers["content-security-policy"]
        for link in re.findall(r'(?:src|href|action)="([^"]*)"', shown.text):
            assert link.startswith("/"), (path, link)  # a path on this receiver
            assert not link.startswith("//"), (path, link)


def test_every_page_says_how_the_receiver_is_and_links_to_what_is_wrong(
    receiver: LiveReceiver,
) -> None:
    deliver(receiver.url, prediction("p-file", "succeeded", output="https://replicate.delivery/x"))
    with receiver.store.engine.begin() as conn:  # arranged: its download gave up
        conn.execute(update(files).values(state="dead", attempts=8, last_error="404 Not Found"))
    forged_body = prediction("p-forged", "succeeded")
    forged = deliver(receiver.url, forged_body, msg_id="msg_forged", key=b"not the key")
    assert forged.status_code == 401
    assert deliver(receiver.url, b"not json", msg_id="msg_garbled").status_code == 400
    cookie = session_cookie(receiver.url)
    for path in ("/ui/", "/ui/predictions/p-file", "/ui/jobs/"):
        health = health_line(page(receiver.url, path, cookie).text)
        assert "store ok" in health
        assert "writer ok" in health
        assert '<li class="bad"><a href="/ui/files?state=dead">dead-lettered files 1</a>' in health
        assert "download queue 0" in health
        refused = '<a href="/ui/refusals">signatures refused in the last hour 1</a>'
        assert refused in health  # the 400 was signed: not a signature refused
    refusals = page(receiver.url, "/ui/refusals", cookie).text
    rows = re.findall(r"<tr>(.*?)</tr>", refusals.split("<tbody>")[1], re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert [row[1:4] for row in cells] == [  # newest first
        ["400", "body is not JSON", "<code>msg_garbled</code>"],
        ["401", "signature verification failed: signature_mismatch", "<code>msg_forged</code>"],
    ]
    dead = page(receiver.url, "/ui/files?state=dead", cookie)
    assert '<a href="/ui/predictions/p-file">p-file</a>' in dead.text
    assert "404 Not Found" in dead.text
    assert page(receiver.url, "/ui/files?state=lost", cookie).status_code == 422
    receiver.clock.now += 3601
    later = health_line(page(receiver.url, "/ui/", cookie).text)
    assert "signatures refused in the last hour 0" in later
    assert "None in the last hour." in page(receiver.url, "/ui/refusals", cookie).text
    assert "health" not in sign_in(receiver.url, token="wrong").text  # nothing before sign-in


def health_line(html: str) -> str:
    found = re.search(r'<ul class="health" id="health">(.*?)</ul>', html, re.S)
    assert found, "the page has no health line"
    return found[1]


def test_a_predictions_vectors_are_drawn_not_listed(receiver: LiveReceiver) -> None:
    vectors = [[round(math.sin(i / 10 + k), 3) for i in range(384)] for k in range(9)]
    deliver(receiver.url, prediction("p-vec", "succeeded", output=vectors))
    deliver(
        receiver.url, prediction("p-npy", "succeeded", output="https://replicate.delivery/o.npy")
    )
    deliver(receiver.url, prediction("p-odd", "succeeded", output=[[1, "x"], [2]]))
    cookie = session_cookie(receiver.url)
    shown = page(receiver.url, "/ui/predictions/p-vec", cookie).text
    assert "9 vectors of 384 dimensions, the first 8 drawn" in shown
    assert shown.count('<svg class="spark"') == 8
    assert f">{vectors[0][5]}" not in shown  # no numbers listed
    assert '<svg class="spark"' not in page(receiver.url, "/ui/predictions/p-npy", cookie).text
    odd = page(receiver.url, "/ui/predictions/p-odd", cookie)
    assert odd.status_code == 200
    assert "An output this page does not draw" in odd.text
