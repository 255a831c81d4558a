"""EEG signal quality per channel over the last two seconds: ok, railed, flat or noisy.

A :class:`SignalQuality` is one more sink of a pod's EEG stream (host/eeg.py):
it keeps the newest ``WINDOW_S`` of raw samples as the wire carries them (a
byte copy per batch, nothing else) and judges the channels only when the pod
state is rendered (at most a few times a second), all channels at once with
numpy. Each channel is, in this order of precedence:

- ``railed``: at or beyond ``RAIL_FRACTION`` of the ADS1299's full scale for at
  least ``RAILED_SHARE`` of the window (an electrode off, an input saturated);
- ``flat``: its RMS, after removing its offset and linear drift, is below
  ``FLAT_UV`` (a channel powered down, shorted, or not connected to anything);
- ``noisy``: that RMS is above ``NOISY_UV`` (mains pick-up, a loose electrode,
  movement);
- ``ok`` otherwise.

``rms_uv`` is that RMS in microvolts (``None`` for a railed channel, whose RMS
says nothing). The list is empty until ``MIN_S`` of samples has arrived; an
unfilled gap in the stream starts the window again, so a step across a gap is
never judged as signal.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..protocol import codec
from .state import SCALE_UV

WINDOW_S = 2.0
MIN_S = 0.5  # fewer samples than this: no judgement yet
FULL_SCALE = 2**23 - 1  # ADS1299 counts
RAIL_FRACTION = 0.9  # "near the rail", as the pod's own railed flag (eeg_bands)
RAILED_SHARE = 0.5  # railed: near a rail for at least half of the window
FLAT_UV = 0.5
NOISY_UV = 100.0

OK, RAILED, FLAT, NOISY = "ok", "railed", "flat", "noisy"


def judge(counts: np.ndarray) -> list[dict[str, Any]]:
    """The quality of each channel of an (n_samples, channels) array of ADC counts."""
    n = counts.shape[0]
    railed = (np.abs(counts) >= RAIL_FRACTION * FULL_SCALE).sum(axis=0) >= RAILED_SHARE * n
    uv = counts.astype(np.float64) * SCALE_UV
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2  # centred: offset and slope are independent
    resid = uv - uv.mean(axis=0)
    tt = float(t @ t)
    if tt > 0:
        resid -= np.outer(t, (t @ resid) / tt)  # the linear drift
    rms = np.sqrt((resid * resid).mean(axis=0))
    state = np.where(railed, RAILED, np.where(rms < FLAT_UV, FLAT, np.where(rms > NOISY_UV, NOISY, OK)))
    return [{"ch": i + 1, "state": str(state[i]), "rms_uv": None if railed[i] else round(float(rms[i]), 2)}
            for i in range(counts.shape[1])]


class SignalQuality:
    """A sink of an EEG stream (host/eeg.py ``Sink``) that judges its channels on demand."""

    def __init__(self, channels: int, rate_hz: int, window_s: float = WINDOW_S):
        self.channels = channels
        self.row = 3 * channels  # bytes per sample on the wire
        self.window = max(1, round(window_s * rate_hz))  # samples judged
        self.minimum = max(1, round(MIN_S * rate_hz))
        self._buf = bytearray()
        self._received = 0  # samples taken since the window (re)started
        self._judged: tuple[int, list[dict[str, Any]]] = (0, [])

    # -- Sink --------------------------------------------------------------------------
    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None:
        self._buf += raw
        keep = self.window * self.row
        if len(self._buf) >= 2 * keep:  # trimmed now and then, not per batch
            del self._buf[:len(self._buf) - keep]
        self._received += n

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        self._buf.clear()
        self._received = 0
        self._judged = (0, [])

    def annotate(self, pos: float, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    # -- judgement ---------------------------------------------------------------------
    def to_json(self) -> list[dict[str, Any]]:
        """One entry per channel (1-based ``ch``), or [] until ``MIN_S`` of samples arrived."""
        if self._received < self.minimum:
            return []
        if self._judged[0] != self._received:
            raw = bytes(self._buf[-self.window * self.row:])
            self._judged = (self._received, judge(codec.eeg_counts({"samples": raw, "channels": self.channels})))
        return [dict(entry) for entry in self._judged[1]]
