"""Lab Streaming Layer: one EEG outlet per pod (microvolts, float32), plus a marker outlet.

Samples are pushed in sequence order after the stream has filled its holes,
so a replayed second arrives late but in place: each sample's LSL time stamp
is derived from its position in the stream (first sample's LSL time + n /
rate), not from when it reached hostd.
"""
from __future__ import annotations

import logging

import numpy as np
import pylsl

from ..protocol import codec
from .state import SCALE_UV

log = logging.getLogger(__name__)


class LslOutlet:
    def __init__(self, pod_id: str, channels: int, rate_hz: int, prefix: str = "hypnolum"):
        self.rate_hz = rate_hz
        self.channels = channels
        info = pylsl.StreamInfo(f"{prefix} {pod_id}", "EEG", channels, rate_hz, pylsl.cf_float32, f"{prefix}-{pod_id}")
        chans = info.desc().append_child("channels")
        for i in range(channels):
            ch = chans.append_child("channel")
            ch.append_child_value("label", f"EEG {i + 1}")
            ch.append_child_value("unit", "microvolts")
            ch.append_child_value("type", "EEG")
        info.desc().append_child("acquisition").append_child_value("manufacturer", "hypnolum")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        minfo = pylsl.StreamInfo(f"{prefix} {pod_id} markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                 f"{prefix}-{pod_id}-markers")
        self.markers = pylsl.StreamOutlet(minfo)
        self._t0: float | None = None  # LSL time of stream position 0
        log.info("LSL outlet %r (%d channels at %d Hz)", info.name(), channels, rate_hz)

    def _time(self, pos: float) -> float:
        if self._t0 is None:
            self._t0 = pylsl.local_clock() - pos / self.rate_hz
        return self._t0 + pos / self.rate_hz

    # -- Sink -------------------------------------------------------------------
    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None:
        uv = codec.eeg_counts({"samples": raw, "channels": self.channels}).astype(np.float32) * np.float32(SCALE_UV)
        # pylsl stamps the last sample and back-dates the others by the nominal rate
        self.outlet.push_chunk(uv, self._time(pos + n - 1))

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        self.markers.push_sample([f"gap: {lost} samples lost ({reason})"], self._time(pos))

    def annotate(self, pos: float, text: str) -> None:
        self.markers.push_sample([text], self._time(pos))

    def close(self) -> None:
        self.outlet = self.markers = None
