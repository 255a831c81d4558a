"""Band power per epoch: Welch's method (1 s Hann segments, half overlapping) in numpy, over
the same bands as the pod's own band powers (firmware/pod/bands.py)."""
from __future__ import annotations

import numpy as np

BANDS = ("delta", "theta", "alpha", "beta", "gamma")
BAND_HZ = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 45.0))
EPOCH_S = 2.0  # the report's time step: band powers, signal quality, brightness
SEGMENT_S = 1.0
_CHUNK = 2048  # epochs at a time, so a night's recording needs little memory


def epoch_starts(content_end_s: float, rate_hz: float, padded: list[tuple[float, float]]
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(first sample of each whole epoch before ``content_end_s``, whether it holds only EEG
    (no padding of the recorder's), samples per epoch)."""
    length = round(EPOCH_S * rate_hz)
    n = int(content_end_s * rate_hz) // length
    starts = np.arange(n) * length
    usable = np.ones(n, dtype=bool)
    for a, b in padded:
        lo, hi = a * rate_hz, b * rate_hz
        usable &= ~((starts < hi) & (starts + length > lo))
    return starts, usable, length


def windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) views of ``x`` from each start."""
    view = np.lib.stride_tricks.sliding_window_view(x, length)
    return view[starts]


def band_power(x: np.ndarray, rate_hz: float, starts: np.ndarray, length: int) -> np.ndarray:
    """(epochs, bands) absolute power in (unit of x)² of each epoch of ``length`` samples."""
    seg = round(SEGMENT_S * rate_hz)
    hop = seg // 2
    offsets = np.arange(0, length - seg + 1, hop)
    win = np.hanning(seg).astype(np.float32)
    scale = 1.0 / (rate_hz * float(np.sum(win.astype(np.float64) ** 2)))
    freqs = np.fft.rfftfreq(seg, 1.0 / rate_hz)
    df = freqs[1] - freqs[0]
    masks = np.array([(freqs >= lo) & (freqs < hi) for lo, hi in BAND_HZ], dtype=np.float64)  # (bands, freqs)
    seg_starts = (starts[:, None] + offsets[None, :]).ravel()
    out = np.empty((len(seg_starts), len(BAND_HZ)))
    view = np.lib.stride_tricks.sliding_window_view(x, seg)
    for i in range(0, len(seg_starts), _CHUNK * len(offsets)):
        w = view[seg_starts[i:i + _CHUNK * len(offsets)]].astype(np.float64)
        w = (w - w.mean(axis=1, keepdims=True)) * win
        psd = np.abs(np.fft.rfft(w, axis=1)) ** 2 * scale
        psd[:, 1:-1] *= 2.0  # one-sided
        out[i:i + len(w)] = psd @ masks.T * df
    return out.reshape(len(starts), len(offsets), len(BAND_HZ)).mean(axis=1)


def shares(power: np.ndarray) -> np.ndarray:
    """Each band's share of the epoch's power over all bands (0..1); NaN where there is none."""
    total = power.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, power / total, np.nan)
