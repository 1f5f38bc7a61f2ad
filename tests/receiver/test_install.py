"""`pip install .` works from a clean copy of the repository, and what it installs runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from localcog import REPO
from tests.support.commands import CLEAN_ENV, repository_files


def requirement_lines(name: str) -> set[str]:
    lines = (REPO / name).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the files git would commit (a clone, plus uncommitted work), so
    nothing ignored (the venv, weights, build leftovers) helps, and this tree gets no build/."""
    source = tmp_path / "clone"
    listed = repository_files()
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    return wheel


def test_pip_install_gives_the_pinned_requirements_and_a_receiver_that_migrates(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith("/METADATA"))
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
        archive.extractall(tmp_path / "site")
    base = {r for r in requires if ";" not in r}
    extra = {r.split(";")[0].strip() for r in requires if 'extra == "receiver"' in r}
    assert base == requirement_lines("requirements.txt")
    assert extra == requirement_lines("requirements-receiver.txt")

    # The installed receiver (migrations included) creates its store from nothing.
    database = tmp_path / "store.db"
    migrated = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, receiver.db as db; assert db.__file__.startswith(sys.argv[1]); "
            "db.migrate(db.make_engine(sys.argv[2]))",
            str(tmp_path / "site"),
            f"sqlite:///{database}",
        ],
        cwd=tmp_path,
        env={**CLEAN_ENV, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert database.stat().st_size > 0
