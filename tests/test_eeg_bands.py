"""The pod's band powers (fixed-point FFT under MicroPython) against scipy on the same samples.

The samples are the emulator's synthetic EEG, encoded as the Cyton sends
them; the pod code runs in the real micropython interpreter; the reference is
scipy.signal.periodogram (Hann window, constant detrend, density) summed over
each band's bins times the bin width — the definition bands.py documents.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from hypnolum.emulator.cyton_protocol import uv_per_count
from hypnolum.emulator.pod import find_micropython
from hypnolum.emulator.signals import Participant, SignalSource

ROOT = Path(__file__).resolve().parent.parent
BANDS = ((0.5, 4), (4, 8), (8, 13), (13, 30), (30, 45))
pytestmark = pytest.mark.micropython


def run_pod_bands(tmp_path: Path, counts: np.ndarray, rate: int, checkpoints: list[int]) -> list[dict]:
    channels = counts.shape[1]
    raw = (counts.astype(np.int64) & 0xFFFFFF).astype(">u4").view(np.uint8).reshape(-1, channels, 4)[:, :, 1:]
    path = tmp_path / "samples.bin"
    path.write_bytes(raw.tobytes())
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'emulator/mpy'}:{ROOT / 'firmware'}:.frozen",
               HYPNOLUM_POD_DIR=str(tmp_path))
    proc = subprocess.run(
        [find_micropython(), "-X", "heapsize=1M", str(ROOT / "tests/helpers/mpy_bands.py"), str(channels), str(rate),
         str(path), *map(str, checkpoints)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def reference(uv: np.ndarray, rate: int) -> np.ndarray:
    f, pxx = scipy.signal.periodogram(uv, rate, window="hann", detrend="constant", scaling="density", axis=0)
    df = f[1] - f[0]
    return np.array([[pxx[(f >= lo) & (f < hi), c].sum() * df for lo, hi in BANDS] for c in range(uv.shape[1])])


@pytest.mark.parametrize("channels,rate", [(8, 250), (16, 125)])
def test_band_powers_match_scipy(tmp_path, channels, rate):
    p = Participant.from_seed(21, pops_per_min=6.0, lead_off=(5,))
    uv = SignalSource(p, rate).take(rate * 20)[:, :channels]
    counts = np.clip(np.rint(uv / uv_per_count(24)), -(2**23), 2**23 - 1).astype(np.int64)
    counts[:, 2] += 3_000_000  # a large DC offset must not leak into the bands
    checkpoints = [rate * 6, rate * 12, rate * 20]  # multiples of the 10-sample batches
    results = run_pod_bands(tmp_path, counts, rate, checkpoints)
    assert len(results) == len(checkpoints)
    n = results[0]["n"]
    assert n == (256 if rate == 250 else 128) and results[0]["window_ms"] == n * 1000 // rate
    for res, cp in zip(results, checkpoints):
        assert res["last_seq"] == cp - 1
        ours = np.array(res["powers"]).reshape(channels, 5)
        ref = reference(counts[cp - n : cp] * uv_per_count(24), rate)
        total = ref.sum(axis=1, keepdims=True)
        # each band within 2 % of scipy, or within 0.1 % of the channel's total power when tiny
        err = np.abs(ours - ref)
        assert (err <= np.maximum(0.02 * ref, 1e-3 * total)).all(), (ours, ref)


def test_alpha_burst_shows_in_alpha(tmp_path):
    rate = 250
    t = np.arange(rate * 4) / rate
    uv = np.zeros((len(t), 8))
    uv[:, 0] = 30 * np.sin(2 * np.pi * 10 * t)  # alpha
    uv[:, 1] = 30 * np.sin(2 * np.pi * 6 * t)  # theta
    uv[:, 2] = 30 * np.sin(2 * np.pi * 2 * t)  # delta
    uv[:, 3] = 30 * np.sin(2 * np.pi * 20 * t)  # beta
    uv[:, 4] = 30 * np.sin(2 * np.pi * 38 * t)  # gamma
    counts = np.rint(uv / uv_per_count(24)).astype(np.int64)
    (res,) = run_pod_bands(tmp_path, counts, rate, [rate * 4])
    powers = np.array(res["powers"]).reshape(8, 5)
    for ch, band in enumerate((2, 1, 0, 3, 4)):
        assert powers[ch].argmax() == band
        assert abs(powers[ch, band] - 30**2 / 2) < 0.1 * 30**2 / 2  # a sine's power: A^2 / 2
    assert (powers[5:] == 0).all()


def test_extreme_inputs_keep_the_fixed_point_in_range(tmp_path):
    """Full-scale square waves, a Nyquist alternation, an impulse and silence: block scaling holds."""
    rate = 250
    n = rate * 4
    counts = np.zeros((n, 8), dtype=np.int64)
    k = np.arange(n)
    fs_max = 2**23 - 1
    counts[:, 0] = np.where((k // 25) % 2, fs_max, -fs_max - 1)  # 5 Hz square at full scale
    counts[:, 1] = np.where(k % 2, fs_max, -fs_max)  # Nyquist
    counts[n - 100, 2] = fs_max  # an impulse inside the last window
    counts[:, 3] = fs_max  # railed: DC only
    counts[:, 4] = np.rint(3 * np.sin(2 * np.pi * 10 * k / rate))  # a few counts only
    counts[:, 5] = np.where((k // 3) % 2, 2**22, -(2**22)) + np.rint(1000 * np.sin(2 * np.pi * 40 * k / rate))
    (res,) = run_pod_bands(tmp_path, counts, rate, [n])
    ours = np.array(res["powers"]).reshape(8, 5)
    x = counts[-256:] * uv_per_count(24)
    ref = reference(x, rate)
    total = np.var(x, axis=0)[:, None]  # the channel's power at all frequencies
    err = np.abs(ours - ref)
    # dynamic range: what leaks into a band stays below 1e-6 of the channel's power (-60 dB)
    assert (err <= np.maximum(np.maximum(0.02 * ref, 1e-6 * total), 1e-3)).all(), (ours, ref)
    assert (ours[3] == 0).all() and (ours[6:] == 0).all()
    assert ours[0, 1] > 1e9  # a full-scale 5 Hz square: theta in the ~10^10 µV² range
