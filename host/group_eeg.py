"""Group EEG features of a circle: mean alpha power and inter-participant
alpha phase synchrony (phase-locking value), from the pods' raw EEG on MQTT.

Why raw EEG and not the pods' band powers: a phase-locking value needs each
participant's instantaneous alpha phase on a common time base, and band powers
carry no phase. The raw batches (``hypnolum/v1/pods/<id>/eeg``) are already on
the broker for every pod of every host, so any host computes the same features
without a protocol change and without adding per-pod phase telemetry, and the
alpha power comes from the same samples.

Time base: a batch's samples are placed on the wall clock by its sequence
numbers and the instant the publishing host received it; per pod, the
earliest-arriving batches (a running minimum of arrival minus sample time)
fix the offset, so transport jitter does not smear the phase.

Each update takes the last ``window_s`` common to all pods with data, puts every
pod on one sample grid, band-passes it to alpha (8-12 Hz) by masking its FFT
and forms the analytic signal; the alpha power is the mean square of the
band-passed signal (uV^2) averaged over pods, and the PLV is
|mean(exp(i(phi_a - phi_b)))| averaged over all pairs.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

ALPHA_HZ = (8.0, 12.0)
_KEEP_S = 4.0
_BASE_BATCHES = 64  # arrival-minus-sample minimum over this many batches


class EegPayloadError(ValueError):
    pass


class PodSignal:
    """One pod's recent EEG (channel mean, uV) on the wall clock."""

    def __init__(self) -> None:
        self.rate = 0.0
        self._t: deque[float] = deque()
        self._v: deque[float] = deque()
        self._base: deque[float] = deque(maxlen=_BASE_BATCHES)
        self._seq0: int | None = None
        self.batches = 0

    def add(self, payload: dict) -> None:
        try:
            seq, n, rate = int(payload["seq"]), int(payload["n"]), float(payload["rate_hz"])
            scale, t_host = float(payload["scale_uv"]), float(payload["t_host"])
            samples = np.asarray(payload["samples"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise EegPayloadError(f"eeg batch: {exc!r}") from None
        if samples.ndim != 2 or samples.shape[0] != n or rate <= 0:
            raise EegPayloadError(f"eeg batch: {samples.shape} samples for n={n} at {rate} Hz")
        if self._seq0 is None or payload.get("gap") or rate != self.rate or seq < self._seq0:
            self._seq0, self.rate = seq, rate  # a new run of samples
            self._t.clear()
            self._v.clear()
            self._base.clear()
        rel = np.arange(seq - self._seq0, seq - self._seq0 + n) / rate
        self._base.append(t_host - rel[-1])
        base = min(self._base)
        values = samples.mean(axis=1) * scale
        self._t.extend((base + rel).tolist())
        self._v.extend(values.tolist())
        while self._t and self._t[0] < self._t[-1] - _KEEP_S:
            self._t.popleft()
            self._v.popleft()
        self.batches += 1

    @property
    def span(self) -> tuple[float, float] | None:
        return (self._t[0], self._t[-1]) if self._t else None

    def on_grid(self, grid: np.ndarray) -> np.ndarray:
        return np.interp(grid, np.fromiter(self._t, float), np.fromiter(self._v, float))


@dataclass(frozen=True)
class GroupFeatures:
    pods: int  # pods that contributed
    alpha_power_uv2: float
    plv: float | None  # None with fewer than two pods
    t_end: float  # wall-clock end of the window, seconds

    def to_json(self) -> dict:
        return {"pods": self.pods, "alpha_power_uv2": round(self.alpha_power_uv2, 3),
                "plv": None if self.plv is None else round(self.plv, 4), "t_end": round(self.t_end, 4)}


def analytic_alpha(x: np.ndarray, rate: float) -> np.ndarray:
    """Band-limited (alpha) analytic signal of x."""
    spec = np.fft.fft(x - x.mean())
    f = np.fft.fftfreq(len(x), 1 / rate)
    keep = (f >= ALPHA_HZ[0]) & (f <= ALPHA_HZ[1])
    out = np.zeros_like(spec)
    out[keep] = 2 * spec[keep]  # positive frequencies only: the analytic signal
    return np.fft.ifft(out)


def features(signals: dict[str, PodSignal], window_s: float = 1.0, rate: float = 250.0) -> GroupFeatures | None:
    """Group features over the newest ``window_s`` all pods have; None if no pod has that much."""
    spans = {k: s.span for k, s in signals.items() if s.span and s.span[1] - s.span[0] >= window_s}
    if not spans:
        return None
    t_end = min(e for _, e in spans.values())
    spans = {k: v for k, v in spans.items() if v[0] <= t_end - window_s}
    grid = t_end - window_s + np.arange(int(window_s * rate)) / rate
    analytic = {k: analytic_alpha(signals[k].on_grid(grid), rate) for k in spans}
    power = float(np.mean([np.mean(np.abs(a) ** 2) / 2 for a in analytic.values()]))
    plv = None
    if len(analytic) >= 2:
        phases = {k: np.angle(a) for k, a in analytic.items()}
        plvs = [abs(np.mean(np.exp(1j * (phases[a] - phases[b])))) for a, b in itertools.combinations(phases, 2)]
        plv = float(np.mean(plvs))
    return GroupFeatures(len(analytic), power, plv, t_end)


def group_value(f: GroupFeatures, drive: str, alpha_full_uv2: float) -> int:
    """The GROUP_VALUE (0..65535) the circle effect follows."""
    if drive == "plv" and f.plv is not None:
        x = f.plv
    else:  # alpha power on a log scale, alpha_full_uv2 at full
        x = math.log1p(f.alpha_power_uv2) / math.log1p(alpha_full_uv2)
    return max(0, min(65535, round(65535 * x)))
