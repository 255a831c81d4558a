"""Step 4: the flash log, one JSON object per line and per board attempt.

Appended under an exclusive lock, so parallel boards and concurrent tool
runs at one bench never interleave half lines. Fields: ``time`` (UTC, ISO
8601), ``port``, ``mac``, ``chip``, ``pod_id``, ``image`` and
``image_sha256`` (null when the image step was skipped), ``app_hash`` (the
build hash HELLO must carry, 0x-hex), ``app_sha256``, ``app_format``,
``fingerprint``, ``result`` (``ok`` or ``failed``), ``step`` and ``error``
when failed, ``seconds``.
"""
from __future__ import annotations

import fcntl
import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
