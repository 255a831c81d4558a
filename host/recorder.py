"""The recorder: one BDF+ file per pod per recording, fed in sequence order by the pod's EegStream.

Samples are raw ADS1299 counts; at gain 24 a count is 4.5 V / (2^23 - 1) / 24,
so the header's physical range of +-187500 uV over the digital range
+-8388607 makes each count exactly one digital unit: counts are written as
they came, only clipped to the range (values beyond it would wrap). Records
are one second long and go to disk as soon as they are full (see bdf.py for
why a SIGKILL leaves a valid file). Gaps, scene changes and markers are
BDF+ annotations; the header names the participant only by a pseudonymous
code. Files are created 0600 in a 0700 directory.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bdf import DIGITAL_MAX, DIGITAL_MIN, BdfWriter, Signal

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
        self._record = np.zeros((rate_hz, channels), dtype=np.int32)
        self._fill = 0
        log.info("recording pod %s to %s", pod_id, path)

    def set_participant(self, code: str) -> None:
        self.writer.set_patient(code)

    # -- Sink -------------------------------------------------------------------
    def samples(self, pos: int, counts: np.ndarray, seq: int, ticks_ms: int, t_host: float) -> None:
        self._put(counts)

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        if padded:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason})", lost / self.rate_hz)
            self._put(None, lost)
        else:
            self.writer.annotate(pos / self.rate_hz, f"gap: {lost} samples lost ({reason}), not on the time axis")

    def annotate(self, pos: float, text: str) -> None:
        self.writer.annotate(pos / self.rate_hz, text)

    def close(self) -> None:
        if self._fill or self.writer.annotations_pending:
            pad = self.rate_hz - self._fill  # a whole record of zeros if only annotations wait
            self.writer.annotate(self.samples_written / self.rate_hz, "end of data", pad / self.rate_hz)
            self._put(None, pad)
        self.writer.close()
        log.info("recording %s closed: %d s", self.path, self.writer.records)

    # -- records ------------------------------------------------------------------
    def _put(self, counts: np.ndarray | None, zeros: int = 0) -> None:
        """Append samples (or ``zeros`` rows of padding); write each record once full."""
        n = zeros if counts is None else len(counts)
        done = 0
        rec, per = self._record, self.rate_hz
        while done < n:
            take = min(n - done, per - self._fill)
            dst = rec[self._fill:self._fill + take]
            if counts is None:
                dst[:] = 0
            else:
                np.clip(counts[done:done + take], DIGITAL_MIN, DIGITAL_MAX, out=dst)
            self._fill += take
            done += take
            if self._fill == per:
                self.writer.write_record(rec)
                self._fill = 0
        self.samples_written += n
