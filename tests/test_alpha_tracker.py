"""The per-sample alpha tracker (host/alpha_tracker.py) on known signals."""
import math

import numpy as np
import pytest

from hypnolum.host.alpha_tracker import AlphaTracker

RATE = 250
T0 = 1_795_786_800.123  # wall-clock seconds, as the group EEG gives them
BATCH = 5  # 20 ms


def instants(first: int, n: int) -> np.ndarray:
    return T0 + (first + np.arange(n)) / RATE


def sine(hz: float, amp: float, first: int, n: int, phase: float = 0.3, dc: float = 3000.0) -> np.ndarray:
    return dc + amp * np.cos(2 * np.pi * hz * (instants(first, n) - T0) + phase)


def run(tracker: AlphaTracker, x: np.ndarray, first: int = 0, batch: int = BATCH) -> list[float]:
    """Feeds x in batches; the power after each batch."""
    out = []
    for k in range(0, len(x), batch):
        tracker.update(instants(first + k, len(x[k:k + batch])), x[k:k + batch])
        out.append(tracker.power_uv2)
    return out


@pytest.mark.parametrize("hz", [10.0, 11.0, 9.0])
def test_amplitude_in_the_band_after_settling(hz):
    tr = AlphaTracker(RATE, 0.08)
    run(tr, sine(hz, 20.0, 0, RATE))  # 1 s: settled
    after = run(tr, sine(hz, 20.0, RATE, RATE // 2), first=RATE)
    amp = math.sqrt(2 * np.mean(after))
    assert amp == pytest.approx(20.0, rel=0.04), amp  # a DC offset of 3000 uV does not leak in
    assert np.mean(after) == pytest.approx(20.0 ** 2 / 2, rel=0.08)  # mean square of the band signal


@pytest.mark.parametrize("hz", [3.0, 20.0, 0.2])
def test_outside_the_band_is_strongly_attenuated(hz):
    tr = AlphaTracker(RATE, 0.08)
    run(tr, sine(hz, 20.0, 0, RATE))
    after = run(tr, sine(hz, 20.0, RATE, RATE), first=RATE)
    assert max(after) < 0.02 * (20.0 ** 2 / 2), max(after)


def test_phase_is_that_of_the_wave_on_the_wall_clock():
    tr = AlphaTracker(RATE, 0.08)
    t = instants(0, RATE)
    tr.update(t, 20.0 * np.cos(2 * np.pi * 10.0 * t + 1.0))  # absolute instants: phase 1 rad against the clock
    assert tr.phase == pytest.approx(1.0, abs=0.05)


def test_a_step_shows_on_the_first_batch_after_it_and_rises_monotonically():
    n = 2 * RATE
    step_at = RATE + 2  # inside a batch
    wave = sine(10.0, 200.0, 0, n, dc=0.0)
    background = 50.0 + np.random.default_rng(1).normal(0, 1.0, n)
    stepped = background + np.where(np.arange(n) >= step_at, wave, 0.0)
    quiet = run(AlphaTracker(RATE, 0.08), background)
    loud = run(AlphaTracker(RATE, 0.08), stepped)
    first = step_at // BATCH  # the batch holding the first stepped sample
    assert loud[:first] == quiet[:first]  # causal: nothing before the step moves
    assert loud[first] > 2 * quiet[first]  # the very first batch shows it
    final = 200.0 ** 2 / 2
    top = next(i for i in range(first, len(loud)) if loud[i] >= 0.9 * final)
    assert all(b > a for a, b in zip(loud[first - 1:top], loud[first:top + 1])), loud[first - 1:top + 1]
    assert (top - first) * BATCH / RATE < 0.3  # 90 % within 0.3 s (tau 0.08 s)
    assert loud[-1] == pytest.approx(final, rel=0.05)


def test_batch_boundaries_do_not_matter():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 10, 3 * RATE) + sine(10.0, 15.0, 0, 3 * RATE)
    whole = AlphaTracker(RATE, 0.08)
    whole.update(instants(0, len(x)), x)
    pieces = AlphaTracker(RATE, 0.08)
    k = 0
    while k < len(x):
        size = int(rng.integers(1, 80))
        pieces.update(instants(k, len(x[k:k + size])), x[k:k + size])
        k += size
    assert pieces.analytic == pytest.approx(whole.analytic, rel=1e-9)
    assert pieces.samples == whole.samples == len(x) and pieces.t_last == whole.t_last


def test_reset_starts_a_new_run_as_a_fresh_tracker_would():
    used = AlphaTracker(RATE, 0.08)
    run(used, sine(10.0, 80.0, 0, RATE))
    used.reset()
    assert used.power_uv2 == 0 and used.samples == 0 and not used.settled
    fresh = AlphaTracker(RATE, 0.08)
    later = sine(10.0, 5.0, 2 * RATE, RATE)
    assert run(used, later, first=2 * RATE) == run(fresh, later, first=2 * RATE)
    assert used.settled


def test_rebase_keeps_the_estimate_when_the_time_base_moves():
    x = sine(10.0, 20.0, 0, 2 * RATE)
    tr = AlphaTracker(RATE, 0.08)
    run(tr, x[:RATE])
    shift = 0.013  # the samples to come are placed 13 ms later on the wall clock
    tr.rebase(shift)
    t = instants(RATE, RATE) + shift
    for k in range(0, RATE, BATCH):
        tr.update(t[k:k + BATCH], x[RATE + k:RATE + k + BATCH])
        assert tr.amplitude_uv == pytest.approx(20.0, rel=0.04)  # no dip from a jump in the reference


@pytest.mark.parametrize("rate, tau", [(0, 0.08), (250, 0)])
def test_bad_parameters_are_refused(rate, tau):
    with pytest.raises(ValueError):
        AlphaTracker(rate, tau)
