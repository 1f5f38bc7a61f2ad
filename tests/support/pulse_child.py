"""A child process for `ChildWorker` tests: its first stdin line names a file, and every later
line is appended to that file as it comes; it exits when stdin closes."""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    record = Path(sys.stdin.buffer.readline().decode().strip())
    with record.open("ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(line)


if __name__ == "__main__":
    main()
