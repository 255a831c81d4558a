"""Logging for hostd: stderr, one event per line, level first, and bounded.

Under systemd (``JOURNAL_STREAM`` set) each line starts with the syslog
priority in angle brackets (``<4>``), which journald turns into the entry's
priority and strips; elsewhere the level name leads. journald adds its own
timestamps, so none are printed. A traceback is folded onto its event's line
(newlines shown as `` | ``) so one event is always one journal entry.

Lines are rate-limited per kind (:class:`RateLimit`): a kind is one message
template of one logger at one level ("set for pod %s failed: %s"), so a flood
of bad input cannot fill the journal. Each kind may log ``BURST`` lines per
``WINDOW_S``; the rest are counted, and once the window is over one summary
line says how many were suppressed and shows the last of them. With
``--log-level DEBUG`` nothing is suppressed.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

FORMAT = "%(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
BURST = 20  # lines of one kind per window
WINDOW_S = 10.0

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


@dataclass
class _Window:
    start: float
    lines: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None


class RateLimit(logging.Filter):
    """At most ``burst`` lines of each kind per ``window_s``; the rest are counted and
    summed up in one line when the window is over (see the module doc).

    Summaries go to ``emit`` (the handler's ``handle``): when a line of the same kind
    comes after the window, or when :meth:`flush` finds the window over (hostd calls it
    every second, and once more, forced, as it stops)."""

    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.suppressed = 0  # lines suppressed since start, all kinds
        self.emit: Callable[[logging.LogRecord], object] | None = None
        self._windows: dict[tuple[str, int, object], _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rate_summary", False):
            return True
        key = (record.name, record.levelno, record.msg if isinstance(record.msg, str) else type(record.msg))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            ended = window if window is not None and now - window.start >= self.window_s else None
            if window is None or ended is not None:
                window = self._windows[key] = _Window(now)
            window.lines += 1
            passed = window.lines <= self.burst
            if not passed:
                window.suppressed += 1
                window.last = record
                self.suppressed += 1
        if ended is not None:
            self._summarize(ended)
        return passed

    def flush(self, force: bool = False) -> None:
        """Summarize the windows that are over (all of them if ``force``), and forget them."""
        now = self.clock()
        with self._lock:
            over = [k for k, w in self._windows.items() if force or now - w.start >= self.window_s]
            windows = [self._windows.pop(k) for k in over]
        for window in windows:
            self._summarize(window)

    def _summarize(self, window: _Window) -> None:
        last = window.last
        if not window.suppressed or last is None or self.emit is None:
            return
        summary = logging.LogRecord(last.name, last.levelno, last.pathname, last.lineno,
                                    "%d more like this suppressed in %.0f s, the last: %s",
                                    (window.suppressed, self.window_s, last.getMessage()), None)
        summary.rate_summary = True
        self.emit(summary)


_limit: RateLimit | None = None


def rate_limit() -> RateLimit | None:
    """The rate limit that ``setup`` installed, if any."""
    return _limit


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
    global _limit
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(under_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _limit = None
    if root.level > logging.DEBUG:
        _limit = RateLimit()
        _limit.emit = handler.handle
        handler.addFilter(_limit)
    # the MQTT client library is chatty at DEBUG; keep our own lines readable
    logging.getLogger("aiomqtt").setLevel(max(logging.getLogger().level, logging.INFO))
