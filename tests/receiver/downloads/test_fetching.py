"""Fetching one output file: checked, stored under a safe name, bounded in size and time; what
the allow-list refuses is never fetched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from localcog.polling import poll
from receiver.downloads import LEASE_SECONDS, Downloader
from receiver.fetching import safe_name
from tests.support.downloading import DownloadRig, drain
from tests.support.loopback_http import FileServer
from tests.support.receiving import prediction


def test_files_are_stored_with_checksum_size_and_type(rig: DownloadRig, files: FileServer) -> None:
    npy = b"\x93NUMPY" + bytes(range(256)) * 40
    files.routes["/out/embeddings.npy"] = (200, npy, {"content-type": "application/octet-stream"})
    output = [f"{files.origin}/out/embeddings.npy", "data:text/plain;base64,aGVsbG8="]
    rig.store.record("m1", prediction("d1", "succeeded", output=output), rig.clock())
    drain(rig.downloader())
    stored = rig.store.prediction("d1")["files"]
    assert [(f["n"], f["state"], f["size"]) for f in stored] == [
        (0, "done", len(npy)),
        (1, "done", 5),
    ]
    assert stored[0]["sha256"] == hashlib.sha256(npy).hexdigest()
    assert Path(stored[0]["local"]).read_bytes() == npy
    assert Path(stored[1]["local"]).read_bytes() == b"hello"
    assert stored[1]["content_type"] == "text/plain"
    assert all(Path(f["local"]).is_relative_to(rig.settings.receiver_output_dir) for f in stored)
    assert rig.store.queue_depth() == 0


def test_foreign_hosts_and_redirects_are_never_followed(
    rig: DownloadRig, files: FileServer
) -> None:
    files.routes["/moved"] = (302, b"", {"location": "https://evil.example/x"})
    output = [
        "https://evil.example/steal.npy",
        f"{files.origin}/moved",
        "http://replicate.delivery/plain-http.npy",
    ]
    rig.store.record("m1", prediction("d4", "succeeded", output=output), rig.clock())
    drain(rig.downloader())
    rows = rig.store.prediction("d4")["files"]
    assert rows[0]["state"] == "refused"
    assert rows[2]["state"] == "refused"  # allowed host, but not over https
    assert rows[1]["state"] == "queued"
    assert "HTTP 302" in rows[1]["last_error"]
    assert files.hits["/moved"] == 1


def test_file_names_cannot_escape_the_output_folder(rig: DownloadRig, files: FileServer) -> None:
    files.routes["/x/..%2F..%2Fevil.sh"] = (200, b"#!", {})
    rig.store.record(
        "m1",
        prediction("../../etc", "succeeded", output=f"{files.origin}/x/..%2F..%2Fevil.sh"),
        rig.clock(),
    )
    drain(rig.downloader())
    row = rig.store.file("../../etc", 0)
    assert row["state"] == "done"
    path = Path(row["path"])
    assert path.is_relative_to(rig.settings.receiver_output_dir.resolve())
    assert ".." not in path.relative_to(rig.settings.receiver_output_dir.resolve()).parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        (".hidden", "hidden"),
        ("", "f"),
        ("a b?c", "a_b_c"),
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text, "f") == expected


def test_every_failure_is_an_attempt_and_the_limit_holds(
    rig: DownloadRig, files: FileServer
) -> None:
    """URLs the allow-list passes but the HTTP client fails on, and a content type longer than
    the column, once left jobs `running` for good, retried every lease past the limit (httpx
    raised InvalidURL and IDNAError on the first two; urllib3 sends the first percent-encoded
    and fails to resolve the second)."""
    files.routes["/long-type"] = (200, b"abc", {"content-type": "text/plain; x=" + "y" * 300})
    output = [
        f"{files.origin}/non\x01printable",
        "https://xn--a.replicate.delivery/x",
        f"{files.origin}/long-type",
    ]
    rig.store.record("m1", prediction("stuck", "succeeded", output=output), rig.clock())
    downloader = rig.downloader()
    for _ in range(3):
        drain(downloader)
        rig.clock.now += 400  # past any backoff
    rows = rig.store.prediction("stuck")["files"]
    assert [(r["state"], r["attempts"]) for r in rows] == [("dead", 3), ("dead", 3), ("done", 1)]
    assert rows[0]["last_error"] == f"HTTP 404 from {files.origin}/non\x01printable"
    assert rows[1]["last_error"].startswith("NameResolutionError: ")
    assert rows[2]["content_type"] == "application/octet-stream"  # too long to keep: not trusted
    rig.clock.now += LEASE_SECONDS + 1
    assert not downloader.step()  # nothing left running or due


def test_a_file_over_the_size_cap_is_not_kept(rig: DownloadRig, files: FileServer) -> None:
    files.routes["/huge.npy"] = (200, b"x" * (64 * 1024 + 1), {})
    files.routes["/fits.npy"] = (200, b"x" * (64 * 1024), {})
    output = [f"{files.origin}/huge.npy", f"{files.origin}/fits.npy"]
    rig.store.record("m1", prediction("big", "succeeded", output=output), rig.clock())
    drain(rig.downloader())
    rows = rig.store.prediction("big")["files"]
    assert [(r["state"], r["attempts"]) for r in rows] == [("dead", 1), ("done", 1)]  # no retry
    assert rows[0]["last_error"] == "file over RECEIVER_DOWNLOAD_MAX_BYTES (65536 bytes)"
    assert list(rig.settings.receiver_output_dir.rglob("*huge*")) == []
    assert list(rig.settings.receiver_output_dir.rglob(".partial-*")) == []


@pytest.mark.parametrize("ids", [("a?b", "a#b"), ("x" * 100 + "1", "x" * 100 + "2")])
def test_ids_that_sanitise_alike_keep_their_own_files(
    rig: DownloadRig, files: FileServer, ids: tuple[str, str]
) -> None:
    for i, pid in enumerate(ids):
        files.routes[f"/{i}/out.npy"] = (200, pid.encode(), {})  # the same file name for both
        output = f"{files.origin}/{i}/out.npy"
        rig.store.record(f"m-{i}", prediction(pid, "succeeded", output=output), rig.clock())
    drain(rig.downloader())
    stored = [rig.store.file(pid, 0) for pid in ids]
    assert stored[0]["path"] != stored[1]["path"]
    for pid, row in zip(ids, stored, strict=True):
        content = Path(row["path"]).read_bytes()
        assert content == pid.encode()
        assert row["sha256"] == hashlib.sha256(content).hexdigest()


def test_a_slow_file_holds_one_slot_not_the_queue(rig: DownloadRig, files: FileServer) -> None:
    body = bytes(100)
    files.routes["/slow.npy"] = (200, body, {})
    files.trickle["/slow.npy"] = 0.5  # 50 s in all, far past the 2 s deadline
    fast = [f"/fast-{i}.npy" for i in range(40)]
    for path in fast:
        files.routes[path] = (200, path.encode(), {})
    output = [f"{files.origin}/slow.npy"] + [f"{files.origin}{path}" for path in fast]
    rig.store.record("m1", prediction("mixed", "succeeded", output=output), rig.clock())
    downloader = rig.downloader()

    def fast_ones_done() -> bool | None:
        downloader.step()
        states = [f["state"] for f in rig.store.prediction("mixed")["files"]]
        return True if states[1:] == ["done"] * len(fast) else None

    poll(fast_ones_done, timeout=30, interval=0, what="the fast files")
    assert rig.store.file("mixed", 0)["state"] == "running"  # still on its slot meanwhile
    drain(downloader)
    slow = rig.store.file("mixed", 0)
    assert slow["state"] == "queued"  # to be tried again, after a backoff
    assert slow["last_error"] == "not downloaded within 2 s"
    assert files.sent["/slow.npy"] < len(body)  # cut off at the deadline, not after the body


def test_failed_downloads_give_their_connection_back(rig: DownloadRig, files: FileServer) -> None:
    """With one slot, a 404 and a file over the cap must not keep the only pooled connection:
    the next file from that host would wait for it forever."""
    files.routes["/huge.npy"] = (200, b"x" * (64 * 1024 + 1), {})
    files.routes["/ok.npy"] = (200, b"ok", {})
    output = [f"{files.origin}/{name}" for name in ("missing.npy", "huge.npy", "ok.npy")]
    rig.store.record("m1", prediction("one-slot", "succeeded", output=output), rig.clock())
    settings = rig.settings.model_copy(update={"receiver_download_concurrency": 1})
    drain(Downloader(rig.store, settings, rig.clock))
    states = [f["state"] for f in rig.store.prediction("one-slot")["files"]]
    assert states == ["queued", "dead", "done"]
