"""Logging for hostd: stderr, one event per line, level first.

Under systemd (``JOURNAL_STREAM`` set) each line starts with the syslog
priority in angle brackets (``<4>``), which journald turns into the entry's
priority and strips; elsewhere the level name leads. journald adds its own
timestamps, so none are printed. A traceback is folded onto its event's line
(newlines shown as `` | ``) so one event is always one journal entry.
"""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# logging level -> syslog priority (sd-daemon.h SD_ERR, SD_WARNING, ...)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class OneLineFormatter(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__(JOURNAL_FORMAT if journal else FORMAT)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line for line in super().format(record).splitlines() if line.strip())
        return f"<{_priority(record.levelno)}>{text}" if self.journal else text


def under_journal(environ=None) -> bool:
    """True when stderr is the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(under_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # the MQTT client library is chatty at DEBUG; keep our own lines readable
    logging.getLogger("aiomqtt").setLevel(max(logging.getLogger().level, logging.INFO))
