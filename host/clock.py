"""Per-pod clock estimate from PING/PONG exchanges (NTP-style).

Each exchange gives four instants: host send t1 and receive t4 (host clock,
microseconds), pod receive t2 and send t3 (pod ``ticks_us``, which wraps at
2**30 on the ESP32). From them:

    offset = ((t2 - t1) + (t3 - t4)) / 2      pod minus host
    delay  = (t4 - t1) - (t3 - t2)            round trip spent on the link

An exchange whose delay is large was held up somewhere on the way, and its
offset is off by up to half the excess. Rather than waiting for exchanges
that were fast both ways (min-RTT filtering), the estimate takes each
direction's bound separately: every exchange says the offset was at most
t2 - t1 at t1 and at least t3 - t4 at t4, and the offset line (offset and
drift) is the one furthest from both sets of bounds (``PodClock._sandwich``).
The fastest PING and the fastest PONG of a window need not be in the same
exchange, so with jitter this converges far faster than min-RTT. Should the
bounds contradict each other, a least-squares line through the exchanges
within ``delay_margin_us`` of the fastest round trip is used instead.

Pod ticks are unwrapped into a 64-bit count by accumulating wrap-safe
differences, so the estimate is continuous across the 2**30 wrap as long as
exchanges are less than half a period (about 9 minutes) apart.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

TICKS_PERIOD = 1 << 30
_HALF = TICKS_PERIOD // 2


def ticks_diff(a: int, b: int) -> int:
    """a - b for wrapping pod ticks, as MicroPython's time.ticks_diff."""
    return ((a - b + _HALF) % TICKS_PERIOD) - _HALF


@dataclass(frozen=True)
class Exchange:
    host_tx_us: int  # t1
    pod_rx_us: int  # t2, unwrapped
    pod_tx_us: int  # t3, unwrapped
    host_rx_us: int  # t4

    @property
    def delay_us(self) -> int:
        return (self.host_rx_us - self.host_tx_us) - (self.pod_tx_us - self.pod_rx_us)

    @property
    def offset_us(self) -> float:
        return ((self.pod_rx_us - self.host_tx_us) + (self.pod_tx_us - self.host_rx_us)) / 2

    @property
    def host_mid_us(self) -> float:
        return (self.host_tx_us + self.host_rx_us) / 2


class PodClock:
    """Offset, drift and uncertainty of one pod's clock against the host's."""

    # A slope fitted over a short span is mostly jitter (4 exchanges 50 ms apart with
    # 100 us of noise give thousands of ppm): drift is estimated only once the used
    # exchanges span min_drift_span_us, and never beyond max_drift (a crystal that far
    # off is broken; the offset line is then anchored at the newest exchanges instead).
    def __init__(self, window: int = 1024, delay_margin_us: int = 500, min_samples: int = 4,
                 min_drift_span_us: int = 2_000_000, max_drift: float = 500e-6, max_age_us: int = 60_000_000,
                 refit_us: int = 200_000, state_refit_us: int = 10_000_000):
        self.window: deque[Exchange] = deque(maxlen=window)
        self._delays: deque[int] = deque(maxlen=window)  # each exchange's delay_us, as window
        self.delay_margin_us = delay_margin_us
        self.min_samples = min_samples
        self.min_drift_span_us = min_drift_span_us
        self.max_drift = max_drift
        self.max_age_us = max_age_us
        self.refit_us = refit_us
        self.state_refit_us = state_refit_us
        self._shown: tuple[float, float, float, float] | None = None  # the last fit, for state()  # a line holds for a minute or so: a crystal's drift wanders with temperature
        self._last_raw: int | None = None
        self._unwrapped = 0
        self.rejected = 0  # exchanges that were inconsistent (negative delay)
        self._fit: tuple[float, float, float, float] | None = None  # t0, offset at t0, slope, residual

    def reset(self) -> None:
        """Forget everything: the pod rebooted, its clock restarted."""
        self.window.clear()
        self._delays.clear()
        self._shown = None
        self._last_raw = None
        self._fit = None

    def _unwrap(self, raw: int) -> int:
        if self._last_raw is None:
            self._unwrapped = raw
        else:
            self._unwrapped += ticks_diff(raw, self._last_raw)
        self._last_raw = raw
        return self._unwrapped

    def add(self, host_tx_us: int, pod_rx_us: int, pod_tx_us: int, host_rx_us: int) -> bool:
        """Record one exchange (pod values as sent, wrapped); False if it was rejected."""
        t2 = self._unwrap(pod_rx_us)
        t3 = self._unwrap(pod_tx_us)
        ex = Exchange(host_tx_us, t2, t3, host_rx_us)
        if ex.delay_us < 0 or host_rx_us < host_tx_us:
            self.rejected += 1
            return False
        self.window.append(ex)
        self._delays.append(ex.delay_us)
        while host_rx_us - self.window[0].host_rx_us > self.max_age_us:
            self.window.popleft()
            self._delays.popleft()
        # a fit a moment old still holds (the drift carries it): frequent pings do not mean a
        # solve per exchange
        if self._fit is None or host_rx_us - self._fit[0] >= self.refit_us or len(self.window) < 64:
            self._fit = None
        return True

    def _solve(self) -> tuple[float, float, float, float] | None:
        if self._fit is None and len(self.window) >= self.min_samples:
            self._fit = self._shown = self._sandwich() or self._regression()
        return self._fit

    def _sandwich(self) -> tuple[float, float, float, float] | None:
        """The line through the middle of the widest band that every exchange allows.

        Each exchange bounds the offset from both sides: at t1 it is at most
        t2 - t1 (the PING took some time to arrive), at t4 at least t3 - t4.
        The two directions' fastest exchanges need not be the same one, so of
        N exchanges with independent delays, the bounds close in about N times
        faster than a single exchange's round trip does. The offset line is
        the one with the widest margin to the bounds on both sides (the slope
        is the drift, maximised by golden-section search: the margin is a
        concave function of it), the margin is the uncertainty. Assumes the
        link's minimum delay is the same both ways, as every two-way method
        must. None if the bounds contradict each other (an inconsistent
        exchange): the regression is used then.
        """
        ex = self.window
        t0 = ex[-1].host_mid_us
        x_up = np.fromiter((e.host_tx_us for e in ex), float, len(ex)) - t0
        up = np.fromiter((e.pod_rx_us - e.host_tx_us for e in ex), float, len(ex))
        x_dn = np.fromiter((e.host_rx_us for e in ex), float, len(ex)) - t0
        dn = np.fromiter((e.pod_tx_us - e.host_rx_us for e in ex), float, len(ex))

        def bounds(b: float) -> tuple[float, float]:
            return float(np.min(up - b * x_up)), float(np.max(dn - b * x_dn))

        def margin(b: float) -> float:
            hi, lo = bounds(b)
            return hi - lo

        b = 0.0
        if -x_up[0] >= self.min_drift_span_us:
            lo_b, hi_b = -self.max_drift, self.max_drift
            g = (math.sqrt(5) - 1) / 2
            c, d = hi_b - g * (hi_b - lo_b), lo_b + g * (hi_b - lo_b)
            mc, md = margin(c), margin(d)
            while hi_b - lo_b > 1e-10:
                if mc > md:
                    hi_b, d, md = d, c, mc
                    c = hi_b - g * (hi_b - lo_b)
                    mc = margin(c)
                else:
                    lo_b, c, mc = c, d, md
                    d = lo_b + g * (hi_b - lo_b)
                    md = margin(d)
            b = (lo_b + hi_b) / 2
        hi, lo = bounds(b)
        if hi < lo:
            return None
        return (t0, (hi + lo) / 2, b, (hi - lo) / 2)

    def _regression(self) -> tuple[float, float, float, float]:
        """Least squares through the offsets of the fastest exchanges (min-RTT filtering)."""
        delays = sorted(self._delays)
        best = delays[0]
        # the fastest eighth (at least min_samples), or all within the margin of the best
        cut = max(best + self.delay_margin_us, delays[min(len(delays), max(self.min_samples, len(delays) // 8)) - 1])
        good = [ex for ex in self.window if ex.delay_us <= cut]
        t0 = good[-1].host_mid_us
        xs = [ex.host_mid_us - t0 for ex in good]
        ys = [ex.offset_us for ex in good]
        n = len(good)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
        if xs[-1] - xs[0] < self.min_drift_span_us:
            slope = 0.0
        slope = max(-self.max_drift, min(self.max_drift, slope))
        at_t0 = my - slope * mx
        resid = math.sqrt(sum((y - (at_t0 + slope * x)) ** 2 for x, y in zip(xs, ys)) / n)
        return (t0, at_t0, slope, resid + best / 2)

    @property
    def synced(self) -> bool:
        return len(self.window) >= self.min_samples  # enough to solve (no solve needed to say so)

    def offset_us(self, host_us: float) -> float:
        """Pod clock minus host clock at host instant ``host_us`` (unwrapped)."""
        fit = self._solve()
        if fit is None:
            raise ValueError("clock not synchronised yet")
        t0, at_t0, slope, _ = fit
        return at_t0 + slope * (host_us - t0)

    def drift(self) -> float:
        """Pod clock rate minus host clock rate (1e-6 = the pod runs 1 ppm fast)."""
        fit = self._solve()
        if fit is None:
            raise ValueError("clock not synchronised yet")
        return fit[2]

    def pod_ticks_us(self, host_us: float) -> int:
        """The pod's ``ticks_us`` (wrapped) at host instant ``host_us``."""
        return round(host_us + self.offset_us(host_us)) % TICKS_PERIOD

    def state(self) -> dict:
        """For the pod's state JSON: the estimate as of at most ``state_refit_us`` ago (a
        state published every second does not cost a solve every second)."""
        shown = self._shown
        if self._fit is None and shown is not None and self.window and \
                self.window[-1].host_rx_us - shown[0] < self.state_refit_us:
            fit = shown
        else:
            fit = self._solve()
        if fit is None:
            return {"synced": False, "exchanges": len(self.window)}
        t0, at_t0, slope, uncertainty = fit
        return {
            "synced": True,
            "offset_us": round(at_t0),
            "drift_ppm": round(slope * 1e6, 3),
            "uncertainty_us": round(uncertainty, 1),
            "min_delay_us": min(self._delays),
            "exchanges": len(self.window),
            "rejected": self.rejected,
        }
