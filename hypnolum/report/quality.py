"""Signal quality per channel and epoch: ``ok``, ``flat``, ``railed`` or ``noisy``, judged by
hostd's own rules (host/signal_quality.py, the pod state's live ``eeg.quality``) over each
2 s epoch of the recording instead of the newest two seconds:

* ``railed``: at >= 90 % of full scale for at least half the epoch;
* ``flat``: rms below 0.5 µV after removing offset and linear drift (a channel shorted or
  powered down);
* ``noisy``: that rms above 100 µV (an electrode off or moving, heavy mains pick-up);
* ``ok`` otherwise.

The recording holds µV at hostd's scale (one ADC count a digital unit), so the samples go
back to counts for the judgement exactly.
"""
from __future__ import annotations

import numpy as np

from ..host.signal_quality import FLAT_UV, NOISY_UV, RAIL_FRACTION, judge
from ..host.state import SCALE_UV
from .bands import windows

STATES = ("ok", "flat", "railed", "noisy")
OK, FLAT, RAILED, NOISY = range(4)
FULL_SCALE_UV = 187500.0  # hostd's recordings: +-4.5 V / 24 at the ADS1299's gain 24
RULES = (f"railed = at {RAIL_FRACTION:.0%} of full scale or more for half of it, flat = rms under {FLAT_UV:g} µV, "
         f"noisy = rms over {NOISY_UV:g} µV (rms after removing offset and linear drift)")
_CHUNK = 2048


def classify(x: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(state index, rms µV; NaN when railed) of each epoch of ``x`` (µV)."""
    states = np.full(len(starts), OK, dtype=np.int8)
    rms = np.full(len(starts), np.nan)
    for i in range(0, len(starts), _CHUNK):
        counts = np.rint(windows(x, starts[i:i + _CHUNK], length).T / SCALE_UV)  # epochs as judge's channels
        for k, q in enumerate(judge(counts), start=i):
            states[k] = STATES.index(q["state"])
            rms[k] = np.nan if q["rms_uv"] is None else q["rms_uv"]
    return states, rms
