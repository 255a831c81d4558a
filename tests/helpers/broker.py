"""Test access to a private mosquitto (the broker itself is hypnolum.broker)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from hypnolum.broker import PrivateBroker


def start_mosquitto(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Start a broker on a free loopback port; the caller terminates ``proc``."""
    broker = PrivateBroker(Path(tmp_path) / "mosquitto").start()
    return broker.proc, broker.port
