"""Group EEG features of a circle: mean alpha power and inter-participant
alpha phase synchrony (phase-locking value), from the pods' raw EEG on MQTT.

Why raw EEG and not the pods' band powers: a phase-locking value needs each
participant's instantaneous alpha phase on a common time base, and band powers
carry no phase. The raw batches (``hypnolum/v1/pods/<id>/eeg``) are already on
the broker for every pod of every host, so any host computes the same features
without a protocol change and without adding per-pod phase telemetry, and the
alpha power comes from the same samples.

Time base: a message's samples are placed on the wall clock by their sequence
numbers and the instant the publishing host received the batch holding the
last of them (``t_host_last``; each batch arrives about when its last sample
was taken, and a message gathers several batches when the host publishes at
an interval); per pod, the
earliest-arriving batches (a running minimum of arrival minus sample time)
fix the offset, so transport jitter does not smear the phase.

Two features, two methods:

* **Alpha power** is tracked per sample (host/alpha_tracker.py: complex
  demodulation at 10 Hz on the wall-clock instants, then a low-pass with time
  constant ``tau``), updated with every batch. A step in the wearers' alpha
  must show in the light at once, and in a window of ``window_s`` a new
  sample moves the mean square by only a sample's share of the window. The
  group alpha power is the mean of the latest tracked power (uV^2, the mean
  square of the alpha-band signal) of the pods with current data.
* **PLV** is |mean(exp(i(phi_a - phi_b)))| over a window, by definition: each
  update takes the last ``window_s`` common to all pods with current data,
  puts every pod on one sample grid, band-passes it to alpha (8-12 Hz) by
  masking its FFT, forms the analytic signal and averages the PLV over all
  pairs.

A pod has current data if its newest sample is at most ``STALE_S`` behind
the newest sample of any pod of the circle (a pod gone, or a host publishing
too rarely, does not hold the group back); for the alpha power its run must
also be long enough for the tracker to have settled.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .alpha_tracker import AlphaTracker

ALPHA_HZ = (8.0, 12.0)
STALE_S = 2.0
_KEEP_S = 4.0
_BASE_BATCHES = 64  # arrival-minus-sample minimum over this many batches


class EegPayloadError(ValueError):
    pass


class PodSignal:
    """One pod's recent EEG (channel mean, uV) on the wall clock, and its tracked alpha."""

    def __init__(self, alpha_tau_s: float = 0.08) -> None:
        self.rate = 0.0
        self.alpha_tau_s = alpha_tau_s
        self.alpha: AlphaTracker | None = None
        self._t: deque[float] = deque()
        self._v: deque[float] = deque()
        self._base: deque[float] = deque(maxlen=_BASE_BATCHES)
        self._seq0: int | None = None
        self._next: int | None = None  # the sample number the tracker expects next
        self._base_now: float | None = None
        self.batches = 0
        self.holes = 0  # batches that did not continue the previous one (the tracker restarted)

    def add(self, payload: dict) -> None:
        try:
            seq, n, rate = int(payload["seq"]), int(payload["n"]), float(payload["rate_hz"])
            scale = float(payload["scale_uv"])
            # older hosts send only t_host (the first batch's arrival): right for one batch a message
            t_host = float(payload.get("t_host_last", payload["t_host"]))
            samples = np.asarray(payload["samples"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise EegPayloadError(f"eeg batch: {exc!r}") from None
        if samples.ndim != 2 or samples.shape[0] != n or n == 0 or rate <= 0:
            raise EegPayloadError(f"eeg batch: {samples.shape} samples for n={n} at {rate} Hz")
        if not (np.isfinite(samples).all() and math.isfinite(scale) and math.isfinite(t_host)):
            raise EegPayloadError("eeg batch: a value is not a finite number")
        if self._seq0 is None or payload.get("gap") or rate != self.rate or seq < self._seq0:
            self._seq0, self.rate = seq, rate  # a new run of samples
            self._t.clear()
            self._v.clear()
            self._base.clear()
            self._next = None
            self.alpha = AlphaTracker(rate, self.alpha_tau_s)
        if self._next is not None and seq < self._next:  # a repeat: only what is new
            skip = self._next - seq
            if skip >= n:
                return
            seq, n, samples = seq + skip, n - skip, samples[skip:]
        rel = np.arange(seq - self._seq0, seq - self._seq0 + n) / rate
        self._base.append(t_host - rel[-1])
        base = min(self._base)
        values = samples.mean(axis=1) * scale
        self._track(seq, base, base + rel, values)
        self._t.extend((base + rel).tolist())
        self._v.extend(values.tolist())
        while self._t and self._t[0] < self._t[-1] - _KEEP_S:
            self._t.popleft()
            self._v.popleft()
        self.batches += 1

    def _track(self, seq: int, base: float, t: np.ndarray, values: np.ndarray) -> None:
        if self._next is not None and seq > self._next:  # samples missing (a message lost): start again
            self.holes += 1
            self.alpha.reset()
        if self.alpha.samples and base != self._base_now:
            self.alpha.rebase(base - self._base_now)
        self._base_now = base
        self.alpha.update(t, values)
        self._next = seq + len(values)

    @property
    def span(self) -> tuple[float, float] | None:
        return (self._t[0], self._t[-1]) if self._t else None

    def on_grid(self, grid: np.ndarray) -> np.ndarray:
        return np.interp(grid, np.fromiter(self._t, float), np.fromiter(self._v, float))


@dataclass(frozen=True)
class GroupFeatures:
    pods: int  # pods whose tracked alpha power is in the mean
    alpha_power_uv2: float
    plv: float | None  # None with fewer than two pods
    t_end: float  # wall-clock instant of the newest sample every pod of the mean has, seconds

    def to_json(self) -> dict:
        return {"pods": self.pods, "alpha_power_uv2": round(self.alpha_power_uv2, 3),
                "plv": None if self.plv is None else round(self.plv, 4), "t_end": round(self.t_end, 4)}


def current(signals: dict[str, PodSignal]) -> dict[str, PodSignal]:
    """The pods with current data: newest sample at most STALE_S behind the newest of all."""
    spans = {k: s.span for k, s in signals.items()}
    spans = {k: v for k, v in spans.items() if v is not None}
    if not spans:
        return {}
    newest = max(e for _, e in spans.values())
    return {k: signals[k] for k, (_, e) in spans.items() if e >= newest - STALE_S}


def group_features(signals: dict[str, PodSignal], plv: float | None) -> GroupFeatures | None:
    """The mean tracked alpha power of the pods with current, settled data (None if none), with ``plv``."""
    live = [s.alpha for s in current(signals).values() if s.alpha is not None and s.alpha.settled]
    if not live:
        return None
    power = float(np.mean([a.power_uv2 for a in live]))
    return GroupFeatures(len(live), power, plv, min(a.t_last for a in live))


def analytic_alpha(x: np.ndarray, rate: float) -> np.ndarray:
    """Band-limited (alpha) analytic signal of x."""
    spec = np.fft.fft(x - x.mean())
    f = np.fft.fftfreq(len(x), 1 / rate)
    keep = (f >= ALPHA_HZ[0]) & (f <= ALPHA_HZ[1])
    out = np.zeros_like(spec)
    out[keep] = 2 * spec[keep]  # positive frequencies only: the analytic signal
    return np.fft.ifft(out)


def phase_locking(signals: dict[str, PodSignal], window_s: float = 1.0, rate: float = 250.0) -> float | None:
    """PLV averaged over all pairs of pods with current data, over the newest ``window_s`` they all
    have; None with fewer than two such pods."""
    spans = {k: s.span for k, s in current(signals).items()}
    spans = {k: v for k, v in spans.items() if v[1] - v[0] >= window_s}
    if len(spans) < 2:
        return None
    t_end = min(e for _, e in spans.values())
    spans = {k: v for k, v in spans.items() if v[0] <= t_end - window_s}
    if len(spans) < 2:
        return None
    grid = t_end - window_s + np.arange(int(window_s * rate)) / rate
    phases = {k: np.angle(analytic_alpha(signals[k].on_grid(grid), rate)) for k in spans}
    plvs = [abs(np.mean(np.exp(1j * (phases[a] - phases[b])))) for a, b in itertools.combinations(phases, 2)]
    return float(np.mean(plvs))


def group_value(f: GroupFeatures, drive: str, alpha_full_uv2: float) -> int:
    """The GROUP_VALUE (0..65535) the circle effect follows."""
    if drive == "plv" and f.plv is not None:
        x = f.plv
    else:  # alpha power on a log scale, alpha_full_uv2 at full
        x = math.log1p(f.alpha_power_uv2) / math.log1p(alpha_full_uv2)
    return max(0, min(65535, round(65535 * x)))
