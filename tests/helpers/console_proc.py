"""Stopping a ``hypnolum console`` subprocess the way a supervisor does: SIGTERM, then a
kill if it has not exited within the time it is given; its log file is closed after."""
from __future__ import annotations

import subprocess
from typing import IO


def stop(console: subprocess.Popen, log: IO, timeout_s: float = 10) -> None:
    console.terminate()
    try:
        console.wait(timeout_s)
    finally:
        if console.poll() is None:
            console.kill()
        log.close()
