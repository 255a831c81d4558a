"""The annotation journal of a recording: every annotation on disk before it is queued for
the records, so a killed hostd loses none; and the completion of a killed recording's file
with what its journal still held, in records of zeros inside ``end of data``."""
from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path

from .bdf import BdfError, BdfWriter, tal_item
from .recording_files import RecorderError, inside, open_private, replace_private

log = logging.getLogger("hypnolum.host.recorder")

_COMPACT_BYTES = 1 << 20  # a journal this long is rewritten with only what is still queued
KILLED_NOTE = "hostd was killed: the annotations from here on were queued then"


class Journal:
    """The annotations queued for one recording, on disk before they are queued.

    Lines of JSON: ``{"file": name}`` first, then ``{"n", "onset", "duration", "text"}`` for each
    annotation and ``{"done": n}`` once records carried every annotation up to ``n``. Cut back to
    its first line whenever the queue is empty."""

    def __init__(self, path: Path, file_name: str):
        self.path = path
        self._head = (json.dumps({"file": file_name}) + "\n").encode()
        self.error: OSError | None = None  # the last write failed: what is queued may not be in it
        self._fd = open_private(path, os.O_TRUNC | os.O_APPEND)
        self._size = 0
        self._append(self._head)

    def _append(self, data: bytes) -> None:
        os.write(self._fd, data)  # O_APPEND: the line goes at the end in one write
        self._size += len(data)

    @staticmethod
    def line(n: int, onset: float, duration: float | None, text: str) -> bytes:
        return (json.dumps({"n": n, "onset": onset, "duration": duration, "text": text}) + "\n").encode()

    def add(self, n: int, onset: float, duration: float | None, text: str) -> None:
        try:
            self._append(self.line(n, onset, duration, text))
        except OSError as exc:
            self.error = exc
            raise

    def done(self, n: int, queued: deque[tuple[int, float, float | None, str]]) -> None:
        """Records carried every annotation up to ``n``; ``queued`` is what still waits."""
        try:
            if not queued:
                os.ftruncate(self._fd, len(self._head))
                self._size = len(self._head)
            elif self._size > _COMPACT_BYTES or self.error is not None:
                self.rewrite(queued)
            else:
                self._append((json.dumps({"done": n}) + "\n").encode())
        except OSError as exc:
            self.error = exc

    def rewrite(self, queued: deque[tuple[int, float, float | None, str]]) -> None:
        """The journal anew, with only what is still queued (raises OSError)."""
        data = self._head + b"".join(self.line(*item) for item in queued)
        replace_private(self.path, data)
        os.close(self._fd)
        self._fd = open_private(self.path, os.O_APPEND)
        self._size = len(data)
        self.error = None

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)

    @staticmethod
    def leftover(path: Path) -> tuple[str, list[tuple[float, float | None, str]]] | None:
        """(recording file name, annotations not yet in it) from a journal a killed recorder left."""
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return None
        items: dict[int, tuple[float, float | None, str]] = {}
        name, done = "", 0
        for k, raw in enumerate(lines):
            try:
                d = json.loads(raw)
                if k == 0:
                    name = str(d["file"])
                elif "done" in d:
                    done = max(done, int(d["done"]))
                else:
                    dur = d["duration"]
                    items[int(d["n"])] = (float(d["onset"]), None if dur is None else float(dur), str(d["text"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s line %d: skipped: %s", path, k + 1, exc)
        return name, [items[n] for n in sorted(items) if n > done]


def finish_killed(directory: Path, journal: Path) -> None:
    """Write into the file of a recorder that was killed the annotations its journal holds beyond
    that file's last record, in records of zeros inside an ``end of data`` annotation. A journal
    that cannot be read, or whose file cannot be completed, is kept aside (and the error logged)."""
    try:
        left = Journal.leftover(journal)
    except OSError as exc:
        _keep_aside(journal, f"cannot read {journal}: {exc}")
        return
    if left is None:
        return
    name, items = left
    if items:
        try:
            _write_after_end(inside(directory, name), items)
        except (OSError, BdfError, RecorderError) as exc:
            _keep_aside(journal, f"{len(items)} annotations queued for {name} when hostd was killed cannot be "
                                 f"written there ({exc})")
            return
        log.warning("%s: %d annotations queued when hostd was killed written after its last record", name,
                    len(items))
    journal.unlink(missing_ok=True)


def _write_after_end(path: Path, items: list[tuple[float, float | None, str]]) -> None:
    writer = BdfWriter.append_to(path)
    try:
        for onset, duration, text in items:
            try:
                writer.annotate(onset, text, duration)
            except BdfError as exc:
                log.error("%s: an annotation in the journal cannot be written: %s", path.name, exc)
        end = writer.records * writer.duration_s
        writer.annotate(end, KILLED_NOTE)
        extra = end_of_data(writer, end, 0.0, partial=False)
        for _ in range(extra):
            writer.write_padding()
    finally:
        writer.close()


def _keep_aside(journal: Path, why: str) -> None:
    """Move a journal that cannot be written into its file out of the way (never overwrite it)."""
    keep = journal.with_name(f"{journal.name}.{time.time():.0f}.unwritten")
    try:
        os.replace(journal, keep)
    except OSError as exc:
        raise RecorderError(f"{why}; cannot move {journal} aside either: {exc}") from exc
    log.error("%s: the journal is kept as %s", why, keep)


def end_of_data(writer: BdfWriter, onset: float, pad_s: float, *, partial: bool) -> int:
    """Queue ``end of data`` at ``onset`` over all the padding still to come: ``pad_s`` (the rest of
    a ``partial`` last record) plus whole records of zeros until every queued annotation is out.
    Returns how many whole records of zeros to write after the partial one."""
    extra = 0
    while True:
        item = tal_item(onset, "end of data", pad_s + extra * writer.duration_s)
        need = writer.records_to_drain(item) - (1 if partial else 0)
        if need <= extra:
            break
        extra = need
    writer.annotate(onset, "end of data", pad_s + extra * writer.duration_s)
    return extra
