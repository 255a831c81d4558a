"""The recorder: one BDF+ file per pod per recording, fed in sequence order by the pod's EegStream.

Samples are raw ADS1299 counts; at gain 24 a count is 4.5 V / (2^23 - 1) / 24,
so the header's physical range of +-187500 uV over the digital range
+-8388607 makes each count exactly one digital unit: counts are written as
they came (only reordered to BDF's layout, a whole record at a time), and
the one wire value outside the range, -8388608, is clipped to -8388607. Records
are one second long and go to disk as soon as they are full (see bdf.py for
why a SIGKILL leaves a valid file). Gaps, scene changes and markers are
BDF+ annotations; the header names the participant only by a pseudonymous
code. Files are created 0600 in a 0700 directory.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bdf import BdfWriter, Signal

log = logging.getLogger(__name__)

PHYSICAL_MAX_UV = 187500  # full scale at gain 24 (4.5 V / 24)


def resume_path(directory: Path, pod_id: str) -> Path:
    """Where a recorder notes, after each record, the pod sequence number its file has reached."""
    return Path(directory) / f".{pod_id}.resume.json"


def read_resume(directory: Path, pod_id: str) -> tuple[int, int] | None:
    """(boot_id, next_seq) left by a recorder that did not close (hostd was killed), else None."""
    try:
        d = json.loads(resume_path(directory, pod_id).read_text())
        return int(d["boot_id"]), int(d["next_seq"]) & 0xFFFFFFFF
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("pod %s: ignoring %s: %s", pod_id, resume_path(directory, pod_id), exc)
        return None


class Recorder:
    def __init__(self, directory: Path, pod_id: str, channels: int, rate_hz: int, *, participant: str = "X",
                 equipment: str = "hypnolum", start: datetime | None = None):
        self.rate_hz = rate_hz
        self.channels = channels
        start = start or datetime.now(timezone.utc)
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = f"{pod_id}_{start:%Y%m%dT%H%M%SZ}"
        path = directory / f"{stem}.bdf"
        n = 1
        while path.exists():
            path = directory / f"{stem}-{n}.bdf"
            n += 1
        signals = [Signal(f"EEG {i + 1}", -PHYSICAL_MAX_UV, PHYSICAL_MAX_UV, unit="uV", transducer="ADS1299 electrode",
                          prefilter="none") for i in range(channels)]
        self.writer = BdfWriter(path, signals, rate_hz, start=start.replace(tzinfo=None), patient=participant,
                                equipment=equipment)
        self.path = path
        self.boot_id: int | None = None  # set by the hub: the pod boot whose sequence the file follows
        self._resume = resume_path(directory, pod_id)
        self._segs: deque[list[int]] = deque()  # [first seq, rows] of the buffered rows, in order
        self._seq_end: int | None = None  # sequence number after the last sample (or gap) handed in
        self.samples_written = 0  # padding included
        self.clipped = 0
        self._row = 3 * channels
        self._record_bytes = rate_hz * self._row
        self._buf = bytearray()
        log.info("recording pod %s to %s", pod_id, path)

    def set_participant(self, code: str) -> None:
        self.writer.set_patient(code)

    # -- Sink -------------------------------------------------------------------
    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None:
        self._put(raw, seq)

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        if padded:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason})", lost / self.rate_hz)
            self._put(bytes(lost * self._row), self._seq_end)
        else:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason}), not on the time axis")
            if self._seq_end is not None:
                self._seq_end = (self._seq_end + lost) & 0xFFFFFFFF

    def annotate(self, pos: float, text: str) -> None:
        self.writer.annotate(pos / self.rate_hz, text)

    def close(self) -> None:
        fill = len(self._buf) // self._row
        if fill or self.writer.annotations_pending:
            pad = self.rate_hz - fill  # a whole record of zeros if only annotations wait
            self.writer.annotate(self.samples_written / self.rate_hz, "end of data", pad / self.rate_hz)
            self._put(bytes(pad * self._row), None)
        self.writer.close()
        try:
            self._resume.unlink()  # closed in order: nothing to resume
        except FileNotFoundError:
            pass
        log.info("recording %s closed: %d s", self.path, self.writer.records)

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
            self.writer.write_record_bytes(self._to_bdf(buf[:size]))
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
        if wrote is not None and self.boot_id is not None:
            self._note_resume(wrote)

    def _note_resume(self, next_seq: int) -> None:
        """The file holds the pod's samples up to ``next_seq``: if hostd is killed now, the next
        hostd asks the pod for the rest (what its ring still holds) and counts what it cannot get."""
        tmp = self._resume.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"boot_id": self.boot_id, "next_seq": next_seq, "file": self.path.name}))
            os.replace(tmp, self._resume)
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
