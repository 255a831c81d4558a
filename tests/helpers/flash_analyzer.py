"""An independent photosensitivity and current analyzer for recorded LED frames.

Written from the definitions, sharing no code with the firmware:

* relative luminance (WCAG 2.x): L = 0.2126 R + 0.7152 G + 0.0722 B with each
  channel linearised from sRGB: c/12.92 if c <= 0.04045 else ((c + 0.055)/1.055)**2.4;
* general flash (WCAG 2.3.1 "general flash and red flash thresholds"): a pair
  of opposing changes in relative luminance of 0.1 or more where the darker
  state is below 0.80;
* red flash: a pair of opposing transitions involving a saturated red, i.e.
  R/(R+G+B) >= 0.8 in one of the states and a change of more than 20 in
  (R - G - B) x 320, negative values set to 0 (linear R, G, B in 0..1);
* at most 3 of each in any 1-second window.

A transition is a swing between successive extremes of the signal (zig-zag
with the threshold as hysteresis). A window holding more than 6 transitions
of one kind is a violation (3 flashes are 6 opposing changes). With
``strict=True`` the 0.8 exemption and the saturation condition are dropped,
so more counts as a flash, never less.

Current: per channel duty = round(255 x linear value); I = sum(duty) x
mA_per_channel / 255 + idle mA x LEDs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_MS = 1000
MAX_TRANSITIONS = 6


def linear(srgb: np.ndarray) -> np.ndarray:
    c = np.asarray(srgb, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def luminance(lin: np.ndarray) -> np.ndarray:
    return 0.2126 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.0722 * lin[..., 2]


def red_metric(lin: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, lin[..., 0] - lin[..., 1] - lin[..., 2]) * 320.0


def saturated_red(lin: np.ndarray) -> np.ndarray:
    total = lin.sum(axis=-1)
    return (total > 0) & (lin[..., 0] >= 0.8 * np.where(total > 0, total, 1))


def transitions(t_ms, x, threshold: float, counts=None, strict_ge: bool = True) -> list[int]:
    """Times (ms) at which transitions of size >= threshold (or > if not
    strict_ge) complete. counts(a_index, b_index) -> bool decides whether a
    swing between the frames of two extremes counts."""
    out: list[int] = []
    n = len(x)
    if n == 0:
        return out

    def big(d):
        return d >= threshold if strict_ge else d > threshold

    lo_i = hi_i = 0
    direction = 0
    ext_i = 0  # index of the last confirmed extreme
    peak_i = 0  # extreme of the swing in progress
    for i in range(1, n):
        v = x[i]
        if direction == 0:
            if v < x[lo_i]:
                lo_i = i
            if v > x[hi_i]:
                hi_i = i
            if big(v - x[lo_i]):
                direction, ext_i, peak_i = 1, lo_i, i
            elif big(x[hi_i] - v):
                direction, ext_i, peak_i = -1, hi_i, i
            else:
                continue
            if counts is None or counts(ext_i, peak_i):
                out.append(int(t_ms[i]))
        elif direction == 1:
            if v > x[peak_i]:
                peak_i = i
            elif big(x[peak_i] - v):
                ext_i, peak_i, direction = peak_i, i, -1
                if counts is None or counts(ext_i, peak_i):
                    out.append(int(t_ms[i]))
        else:
            if v < x[peak_i]:
                peak_i = i
            elif big(v - x[peak_i]):
                ext_i, peak_i, direction = peak_i, i, 1
                if counts is None or counts(ext_i, peak_i):
                    out.append(int(t_ms[i]))
    return out


def max_in_window(times: list[int], window_ms: int = WINDOW_MS) -> int:
    best = 0
    j = 0
    for i in range(len(times)):
        while times[i] - times[j] >= window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


@dataclass
class Report:
    general: int  # most general-flash transitions in any 1-s window (worst LED or area)
    red: int
    max_current_ma: float
    max_channel: int

    def violations(self, budget_ma: float | None = None, brightness_max: int | None = None) -> list[str]:
        v = []
        if self.general > MAX_TRANSITIONS:
            v.append(f"{self.general} luminance transitions in 1 s")
        if self.red > MAX_TRANSITIONS:
            v.append(f"{self.red} red transitions in 1 s")
        if budget_ma is not None and self.max_current_ma > budget_ma + 1e-9:
            v.append(f"{self.max_current_ma:.1f} mA over the {budget_ma} mA budget")
        if brightness_max is not None and self.max_channel > brightness_max:
            v.append(f"channel value {self.max_channel} over the cap {brightness_max}")
        return v


def analyze(t_ms, frames, ma_per_channel: float = 20.0, idle_ma: float = 1.0, strict: bool = True) -> Report:
    """t_ms: (T,) times; frames: (T, N, 3) sRGB bytes as driven. Checks each LED and the whole-array mean."""
    frames = np.asarray(frames, dtype=np.uint8)
    lin = linear(frames)
    series = [lin[:, i, :] for i in range(frames.shape[1])] + [lin.mean(axis=1)]
    general = red = 0
    for s in series:
        lum = luminance(s)
        rm = red_metric(s)
        if strict:
            g_ok = r_ok = None
        else:
            sat = saturated_red(s)

            def g_ok(a, b, lum=lum):
                return min(lum[a], lum[b]) < 0.8

            def r_ok(a, b, sat=sat):
                return bool(sat[a] or sat[b])

        # a signal whose whole variation is under 7 thresholds cannot hold 7 transitions
        if np.abs(np.diff(lum)).sum() >= (MAX_TRANSITIONS + 1) * 0.1:
            general = max(general, max_in_window(transitions(t_ms, lum, 0.1, g_ok)))
        if np.abs(np.diff(rm)).sum() > (MAX_TRANSITIONS + 1) * 20.0:
            red = max(red, max_in_window(transitions(t_ms, rm, 20.0, r_ok, strict_ge=False)))
    duty = np.floor(lin * 255.0 + 0.5)
    current = duty.sum(axis=(1, 2)) * ma_per_channel / 255.0 + idle_ma * frames.shape[1]
    return Report(general, red, float(current.max()) if len(current) else 0.0, int(frames.max()) if frames.size else 0)
