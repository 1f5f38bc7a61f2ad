"""The weights folder: filled offline or online, verified, refused when wrong."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from embedder.weights import WeightsError, fill, read_manifest, verify
from localcog import REPO
from tests.support.embeddings import WEIGHTS


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty weights folder holding only the committed manifest."""
    shutil.copy(WEIGHTS / "manifest.json", tmp_path / "manifest.json")
    return tmp_path


def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class ServedFolder:
    """Weights files served over HTTP: `url` serves what lies in `folder`."""

    url: str
    folder: Path


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[ServedFolder]:
    root = tmp_path / "www"
    (root / "files").mkdir(parents=True)
    for wf in read_manifest(WEIGHTS):
        shutil.copy(WEIGHTS / wf.name, root / "files" / wf.name)
    for url in serve(root):
        yield ServedFolder(url=url, folder=root / "files")


def test_repository_weights_match_manifest() -> None:
    verify(WEIGHTS)


def test_fill_from_installed_package(folder: Path) -> None:
    assert sorted(fill(folder)) == ["config.json", "model.safetensors", "tokenizer.json"]
    verify(folder)
    assert fill(folder) == []  # already correct: nothing copied again


def test_fill_from_url_over_http(folder: Path, file_server: ServedFolder) -> None:
    assert len(fill(folder, file_server.url)) == 3
    verify(folder)


def test_fill_from_url_refuses_a_tampered_file(folder: Path, file_server: ServedFolder) -> None:
    (file_server.folder / "config.json").write_text('{"model_type": "bert", "evil": true}')
    with pytest.raises(WeightsError, match=r"config\.json .* does not match"):
        fill(folder, file_server.url)
    assert not (folder / "config.json").exists()
    assert not list(folder.glob(".*.partial"))


def test_missing_file_is_named_with_the_fix(folder: Path) -> None:
    fill(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors is missing: run `make weights`"):
        verify(folder)


def test_corrupt_file_is_refused(folder: Path) -> None:
    fill(folder)
    data = bytearray((folder / "tokenizer.json").read_bytes())
    data[1000] ^= 0xFF  # same size, different content
    (folder / "tokenizer.json").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"tokenizer\.json fails its sha256 check"):
        verify(folder)


def test_truncated_file_is_refused(folder: Path) -> None:
    fill(folder)
    with (folder / "model.safetensors").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(WeightsError, match=r"model\.safetensors has the wrong size"):
        verify(folder)


def test_cli_failure_is_one_readable_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedder.weights", "verify", "--dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("weights: ")
    assert "manifest.json" in lines[0]


def test_missing_manifest_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"manifest\.json is missing: run `make weights`"):
        verify(tmp_path)


def test_missing_file_at_the_url_names_the_url(folder: Path, file_server: ServedFolder) -> None:
    (file_server.folder / "config.json").unlink()
    with pytest.raises(
        WeightsError,
        match=rf"cannot fetch {file_server.url}/config\.json: HTTP 404 .*WEIGHTS_URL",
    ):
        fill(folder, file_server.url)


def test_cli_unreachable_url_is_one_line_naming_it(folder: Path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on any more
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/nothing"
    result = subprocess.run(
        [sys.executable, "-m", "embedder.weights", "fill", "--dir", str(folder), "--url", url],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"weights: cannot fetch {url}/")
    assert "Connection refused" in lines[0]
    assert "check WEIGHTS_URL" in lines[0]
