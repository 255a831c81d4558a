"""Child processes that cannot outlive the process that started them."""
from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when its parent dies."""

    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass  # not Linux: the parent's own clean-up still applies

    return preexec
