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

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bdf import BdfWriter, Signal

log = logging.getLogger(__name__)

PHYSICAL_MAX_UV = 187500  # full scale at gain 24 (4.5 V / 24)


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
        self._put(raw)

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        if padded:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason})", lost / self.rate_hz)
            self._put(bytes(lost * self._row))
        else:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason}), not on the time axis")

    def annotate(self, pos: float, text: str) -> None:
        self.writer.annotate(pos / self.rate_hz, text)

    def close(self) -> None:
        fill = len(self._buf) // self._row
        if fill or self.writer.annotations_pending:
            pad = self.rate_hz - fill  # a whole record of zeros if only annotations wait
            self.writer.annotate(self.samples_written / self.rate_hz, "end of data", pad / self.rate_hz)
            self._put(bytes(pad * self._row))
        self.writer.close()
        log.info("recording %s closed: %d s", self.path, self.writer.records)

    # -- records ------------------------------------------------------------------
    def _put(self, raw: bytes) -> None:
        """Append wire-format samples; convert and write each record once full."""
        buf = self._buf
        buf += raw
        self.samples_written += len(raw) // self._row
        size = self._record_bytes
        while len(buf) >= size:
            self.writer.write_record_bytes(self._to_bdf(buf[:size]))
            del buf[:size]

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
