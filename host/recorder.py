"""The recorder: one BDF+ file per pod per recording, fed in sequence order by the pod's EegStream.

Samples are raw ADS1299 counts; at gain 24 a count is 4.5 V / (2^23 - 1) / 24,
so the header's physical range of +-187500 uV over the digital range
+-8388607 makes each count exactly one digital unit: counts are written as
they came (only reordered to BDF's layout, a whole record at a time), and
the one wire value outside the range, -8388608, is clipped to -8388607. Records
are one second long and go to disk as soon as they are full (see bdf.py for
why a SIGKILL leaves a valid file). Gaps, scene changes and markers are
BDF+ annotations; the header names the participant only by a pseudonymous
code.

Annotations are durable. Each one is appended to the recording's journal
(``.<pod_id>.annotations``) before it joins the queue for the records; each
record carries what its annotation signal holds (``annotation_bytes``) and
the rest spills into the next records. A recording that ends with some still
queued gets records of zeros, all inside its ``end of data`` annotation,
until every one is written. If hostd is killed, the next recorder for the pod
writes what the journal holds beyond the old file's last record into that
file the same way. The queue is bounded: a marker or scene change that would
take it past ``max_pending_s`` seconds of annotation signal is refused
(:class:`AnnotationRefused`), counted and logged at a limited rate; the
stream's own annotations (gaps, stream starts) may use ``RESERVE_S`` seconds
more, and past that are counted and logged as lost.

After each record, and when it closes, the recorder notes in
``.<pod_id>.resume.json`` the pod's boot id and the sequence number its file
has reached. The next recorder for the pod, after a stop or a kill, starts
there: the pod's ring replays what came between, and what it no longer holds
becomes a counted, annotated gap.

Every file the recorder makes is 0600 and every directory 0700, whatever the
umask; a path built from a pod id must name a file directly in the
recording directory.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .annotation_journal import Journal, end_of_data, finish_killed
from .bdf import BdfError, BdfWriter, Signal, tal_item
from .config import PARTICIPANT_PATTERN
from .recording_files import RecorderError, inside, private_dir, replace_private

log = logging.getLogger(__name__)

PHYSICAL_MAX_UV = 187500  # full scale at gain 24 (4.5 V / 24)
ANNOTATION_BYTES = 1200  # annotation signal per 1 s record: ~12 scene changes or ~40 short markers
MAX_PENDING_S = 60  # markers and scene changes may queue up to this many records' worth of annotation signal
RESERVE_S = 10  # the stream's own annotations (gaps, stream starts) may use this many more
LOG_INTERVAL_S = 30.0  # refused or lost annotations: one log line per kind at most this often


class AnnotationRefused(Exception):
    """An annotation that was not queued for the recording (the message says why)."""


# -- resume notes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResumeNote:
    """Where a pod's last recording ended: the next one starts at ``next_seq`` if the pod still
    runs boot ``boot_id``."""
    boot_id: int
    next_seq: int
    t_end: float | None = None  # host time of the sample before next_seq (estimated from batch arrivals)
    closed: bool = False  # closed in order (hostd stopped); False: hostd was killed
    file: str = ""


def resume_path(directory: Path, pod_id: str) -> Path:
    """Where a recorder notes, after each record, the pod sequence number its file has reached."""
    return inside(Path(directory), f".{pod_id}.resume.json")


def read_resume(directory: Path, pod_id: str) -> ResumeNote | None:
    """The note the pod's last recorder left (stopped or killed), else None."""
    path = resume_path(directory, pod_id)
    try:
        d = json.loads(path.read_text())
        t_end = d.get("t_end")
        return ResumeNote(int(d["boot_id"]), int(d["next_seq"]) & 0xFFFFFFFF,
                          float(t_end) if isinstance(t_end, int | float) and math.isfinite(t_end) else None,
                          d.get("closed") is True, str(d.get("file", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("pod %s: ignoring %s: %s", pod_id, path, exc)
        return None


# -- the annotation journal ---------------------------------------------------------------------
class _Throttle:
    """Per kind: the first event is reported at once, later ones at most every ``interval_s``."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def due(self, kind: str) -> int:
        """Count one event; how many to report now (0: not yet)."""
        self._since[kind] += 1
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < self.interval_s:
            return 0
        self._last[kind] = now
        return self._since.pop(kind)


def _kind(text: str) -> str:
    """An annotation's kind for counting: what comes before its colon ("marker", "scene", "gap"...)."""
    return text.split(":", 1)[0][:24]


def _check_code(code: str) -> str:
    if not isinstance(code, str) or not re.fullmatch(PARTICIPANT_PATTERN, code):
        raise RecorderError(f"participant code {code!r} does not match {PARTICIPANT_PATTERN}")
    return code


class Recorder:
    """One recording: an EegStream sink writing the pod's samples and annotations to a BDF+ file."""

    def __init__(self, directory: Path, pod_id: str, channels: int, rate_hz: int, *, participant: str = "X",
                 equipment: str = "hypnolum", start: datetime | None = None,
                 annotation_bytes: int = ANNOTATION_BYTES, max_pending_s: float = MAX_PENDING_S):
        self.rate_hz = rate_hz
        self.channels = channels
        self.pod_id = pod_id
        start = start or datetime.now(UTC)
        _check_code(participant)
        directory = private_dir(directory)
        self._resume = resume_path(directory, pod_id)
        journal = inside(directory, f".{pod_id}.annotations")
        stem = f"{pod_id}_{start:%Y%m%dT%H%M%SZ}"
        path = inside(directory, f"{stem}.bdf")
        finish_killed(directory, journal)
        n = 1
        while path.exists():
            path = inside(directory, f"{stem}-{n}.bdf")
            n += 1
        signals = [Signal(f"EEG {i + 1}", -PHYSICAL_MAX_UV, PHYSICAL_MAX_UV, unit="uV", transducer="ADS1299 electrode",
                          prefilter="none") for i in range(channels)]
        self.writer = BdfWriter(path, signals, rate_hz, start=start.replace(tzinfo=None), patient=participant,
                                equipment=equipment, annotation_bytes=annotation_bytes)
        self.path = path
        self.boot_id: int | None = None  # set by the hub: the pod boot whose sequence the file follows
        try:
            self.journal = Journal(journal, path.name)
        except OSError:
            self.writer.close()
            raise
        self.max_pending = int(max_pending_s * annotation_bytes)  # bytes of queued annotations
        self.reserve = RESERVE_S * annotation_bytes
        self.refused: Counter[str] = Counter()  # markers, scene changes... not queued (queue full), by kind
        self.lost: Counter[str] = Counter()  # the stream's own annotations not queued, by kind
        self._throttle = _Throttle(LOG_INTERVAL_S)
        self._queued: deque[tuple[int, float, float | None, str]] = deque()  # (n, onset, duration, text), as journaled
        self._ann_n = 0  # annotations queued so far
        self._segs: deque[list[int]] = deque()  # [first seq, rows] of the buffered rows, in order
        self._seq_end: int | None = None  # sequence number after the last sample (or gap) handed in
        self._t_last: float | None = None  # host time of the last batch handed in
        self.samples_written = 0  # padding included
        self.clipped = 0
        self._row = 3 * channels
        self._record_bytes = rate_hz * self._row
        self._buf = bytearray()
        self._closed = False
        log.info("recording pod %s to %s", pod_id, path)

    def set_participant(self, code: str) -> None:
        self.writer.set_patient(_check_code(code))

    # -- annotations --------------------------------------------------------------
    def admit(self, text: str) -> None:
        """Raise AnnotationRefused (counted, logged at a limited rate) unless an annotation ``text``
        (a marker, a scene change) can be queued now; if it can, ``annotate`` queues it."""
        reason = self.refusal(text)
        if reason is None:
            return
        kind = _kind(text)
        self.refused[kind] += 1
        n = self._throttle.due(f"refused {kind}")
        if n:
            log.warning("recording %s: %d %s annotation(s) refused: %s", self.path.name, n, kind, reason)
        raise AnnotationRefused(f"recording {self.path.name}: {reason}")

    def refusal(self, text: str) -> str | None:
        """Why an annotation ``text`` cannot be queued now (None: it can); nothing is counted."""
        if self._closed:
            return "closed"
        size = len(tal_item(0.0, text)) + 12  # the onset's digits
        if size > self.writer.max_item_bytes:
            return f"annotation of {size} bytes, longer than a record's annotation signal holds"
        if self.writer.pending_bytes + size > self.max_pending:
            return (f"{self.writer.annotations_pending} annotations ({self.writer.pending_bytes} bytes) wait for "
                    f"the next records, the most it queues is {self.max_pending} bytes: try again later")
        if self.journal.error is not None:
            try:
                self.journal.rewrite(self._queued)
            except OSError as exc:
                return f"cannot write the annotation journal {self.journal.path}: {exc}"
        return None

    @property
    def journal_ok(self) -> bool:
        """Whether everything queued is also in the journal (else a kill would lose it)."""
        return self.journal.error is None

    def _queue(self, onset: float, text: str, duration: float | None = None, *, limit: int | None = None) -> None:
        """Journal and queue one annotation; one that would take the queue past ``limit`` bytes, or
        that no record can hold, is counted and logged as lost."""
        if self._closed:
            self._lose(text, "the recording is closed")
            return
        try:
            size = len(tal_item(onset, text, duration))
            if size > self.writer.max_item_bytes:
                raise BdfError(f"{size} bytes, longer than a record's annotation signal holds")
        except BdfError as exc:
            self._lose(text, str(exc))
            return
        if limit is not None and self.writer.pending_bytes + size > limit:
            self._lose(text, f"{self.writer.annotations_pending} annotations ({self.writer.pending_bytes} bytes) "
                             "already wait for the next records")
            return
        self._ann_n += 1
        item = (self._ann_n, onset, duration, text)
        try:
            self.journal.add(*item)
        except OSError as exc:
            log.error("recording %s: cannot write the annotation journal %s: %s", self.path.name,
                      self.journal.path, exc)
        self.writer.annotate(onset, text, duration)
        self._queued.append(item)

    def _lose(self, text: str, reason: str) -> None:
        kind = _kind(text)
        self.lost[kind] += 1
        n = self._throttle.due(f"lost {kind}")
        if n:
            log.error("recording %s: %d %s annotation(s) not written: %s", self.path.name, n, kind, reason)

    def _carried(self, k: int) -> None:
        """A record carried the ``k`` oldest queued annotations."""
        if not k:
            return
        for _ in range(k):
            n = self._queued.popleft()[0]
        self.journal.done(n, self._queued)

    # -- Sink -------------------------------------------------------------------
    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None:
        self._t_last = t_host
        self._put(raw, seq)

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        limit = self.max_pending + self.reserve
        if padded:
            self._queue(pos / self.rate_hz, f"gap: {lost} samples lost ({reason})", lost / self.rate_hz, limit=limit)
            self._put(bytes(lost * self._row), self._seq_end)
        else:
            self._queue(pos / self.rate_hz, f"gap: {lost} samples lost ({reason}), not on the time axis", limit=limit)
            if self._seq_end is not None:
                self._seq_end = (self._seq_end + lost) & 0xFFFFFFFF

    def annotate(self, pos: float, text: str) -> None:
        self._queue(pos / self.rate_hz, text, limit=self.max_pending + self.reserve)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        fill = len(self._buf) // self._row
        if fill or self.writer.annotations_pending:
            pad = self.rate_hz - fill if fill else 0
            extra = end_of_data(self.writer, self.samples_written / self.rate_hz, pad / self.rate_hz,
                                 partial=bool(fill))
            self._ann_n += 1  # "end of data" stays out of the journal, which goes with the close
            self._queued.append((self._ann_n, 0.0, None, ""))
            if fill:
                self._put(bytes(pad * self._row), None)
            for _ in range(extra):
                self._carried(self.writer.write_padding())
        if self._seq_end is not None and self.boot_id is not None:
            self._note_resume(self._seq_end, self._t_last, closed=True)
        self.writer.close()
        self.journal.close()
        log.info("recording %s closed: %d s%s", self.path.name, self.writer.records, self._summary())

    def _summary(self) -> str:
        parts = [f"{sum(c.values())} annotations {what} ({dict(c)})" for what, c in
                 (("refused", self.refused), ("lost", self.lost)) if c]
        return "; " + ", ".join(parts) if parts else ""

    # -- records ------------------------------------------------------------------
    def _put(self, raw: bytes, seq: int | None) -> None:
        """Append wire-format samples (the first one pod sample ``seq``; None: padding off the
        sequence); convert and write each record once full."""
        buf = self._buf
        buf += raw
        rows = len(raw) // self._row
        self.samples_written += rows
        segs = self._segs
        if segs and (seq is None and segs[-1][0] is None
                     or seq is not None and segs[-1][0] is not None and (segs[-1][0] + segs[-1][1]) & 0xFFFFFFFF == seq):
            segs[-1][1] += rows
        else:
            segs.append([seq, rows])
        if seq is not None:
            self._seq_end = (seq + rows) & 0xFFFFFFFF
        size = self._record_bytes
        wrote = None
        while len(buf) >= size:
            self._carried(self.writer.write_record_bytes(self._to_bdf(buf[:size])))
            del buf[:size]
            left = self.rate_hz
            while left:
                seg = segs[0]
                take = min(left, seg[1])
                left -= take
                seg[1] -= take
                if seg[0] is not None:
                    seg[0] = (seg[0] + take) & 0xFFFFFFFF
                    wrote = seg[0]
                if not seg[1] and len(segs) > 1:
                    segs.popleft()
        if wrote is not None:
            t_end = None if self._t_last is None else self._t_last - len(buf) // self._row / self.rate_hz
            if self.boot_id is not None and not self._closed:
                self._note_resume(wrote, t_end)

    def _note_resume(self, next_seq: int, t_end: float | None, closed: bool = False) -> None:
        """The file holds the pod's samples up to ``next_seq``: the next recorder for this pod (after
        a stop or a kill) asks the pod for the rest (what its ring still holds) and counts what it
        cannot get."""
        note = {"boot_id": self.boot_id, "next_seq": next_seq, "t_end": t_end, "closed": closed,
                "file": self.path.name}
        try:
            replace_private(self._resume, json.dumps(note).encode())
        except OSError as exc:
            log.warning("cannot note the recording position in %s: %s", self._resume, exc)

    def _to_bdf(self, record: bytes) -> bytes:
        """Wire order (sample-major, 24-bit big-endian) -> BDF order (signal-major, 24-bit little-endian).

        The only wire value outside the digital range is -8388608 (0x800000): clipped to
        -8388607, since the range is kept symmetric for an exact scale."""
        be = np.frombuffer(record, dtype=np.uint8).reshape(self.rate_hz, self.channels, 3)
        le = be[:, :, ::-1].transpose(1, 0, 2).copy()
        low = (le[:, :, 2] == 0x80) & (le[:, :, 1] == 0) & (le[:, :, 0] == 0)
        if low.any():
            le[low] = (1, 0, 0x80)
            self.clipped += int(low.sum())
        return le.tobytes()
