"""Child processes that do not outlive the process that started them.

The local stack's servers run as children: the Cog server in a process group of its own (so a
terminal's ^C reaches it only through us, and we stop its worker with it), the receiver in ours.
If we are killed outright (SIGKILL, a closed terminal), nothing of ours runs to stop them; the
kernel can, when asked before they start (Linux's PR_SET_PDEATHSIG, kept across exec).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

_TRAMPOLINE = """
import ctypes, os, signal, sys
parent, command = int(sys.argv[1]), sys.argv[2:]
prctl = getattr(ctypes.CDLL(None), "prctl", None)  # Linux only; elsewhere, no such guard
if prctl is not None:
    prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        sys.exit(1)
os.execv(command[0], command)
"""


def dying_with_parent(command: Sequence[str]) -> list[str]:
    """`command`, started so that it gets SIGTERM when this process dies."""
    return [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), *command]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum: int, frame: FrameType | None) -> None:
    for other in STOP_SIGNALS:  # a second ^C must not cut the cleanup short
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C, `kill` and a closed terminal all raise KeyboardInterrupt, once: whatever `with`
    blocks are open then stop what they started, and further signals wait for them."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
