"""Everything the report shows, computed once from the recording (one channel at a time) and
the light track: the page and the PDF only lay it out."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .bands import BANDS, EPOCH_S, band_power, epoch_starts, shares
from .light import LightTrack, read_light
from .quality import FULL_SCALE_UV, OK, STATES, classify
from .recording import Recording, open_recording
from .timeline import Timeline, build_timeline

OVERVIEW_BINS = 2000  # columns of the EEG overview


@dataclass(frozen=True)
class ChannelQuality:
    label: str
    fractions: dict[str, float]  # state -> share of the usable epochs
    median_rms_uv: float | None
    epochs: int


@dataclass(frozen=True)
class StepSummary:
    name: str
    detail: str
    t0: float
    t1: float
    brightness: float | None  # mean, from the light track
    shares: dict[str, float | None]  # band -> mean share over the step's usable epochs
    epochs: int


@dataclass
class Report:
    path: Path
    pod_id: str
    participant: str
    start: datetime
    rate_hz: float
    labels: list[str]
    units: list[str]
    duration_s: float  # padding included
    content_s: float  # up to the end-of-data padding
    trailing_bytes: int
    timeline: Timeline
    light: LightTrack | None
    epoch_t: np.ndarray  # centre of each epoch, s
    usable: np.ndarray  # epochs holding only EEG
    power: np.ndarray  # (epochs, bands) mean µV² over the channels that are ok then
    shares: np.ndarray  # (epochs, bands) mean share over the channels that are ok then
    brightness: np.ndarray | None  # (epochs,) mean brightness
    alpha_r: float | None  # Pearson r of the alpha share against brightness, over the epochs with both
    quality: list[ChannelQuality]
    states: np.ndarray  # (channels, epochs) state index
    overview_t: np.ndarray  # (bins,) s
    overview: np.ndarray  # (channels, bins, 2) min and max µV after removing a 1 s moving mean
    steps: list[StepSummary]
    notes: list[str] = field(default_factory=list)


def _detrended(x: np.ndarray, rate_hz: float) -> np.ndarray:
    """``x`` minus its 1 s moving mean (electrode offsets and drift out of the overview)."""
    h = max(1, int(rate_hz) // 2)
    if len(x) <= 2 * h + 1:
        return (x - x.mean()).astype(np.float32)
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    mean = np.empty(len(x))
    mean[h:len(x) - h] = (c[2 * h + 1:] - c[:-2 * h - 1]) / (2 * h + 1)
    mean[:h] = mean[h]
    mean[len(x) - h:] = mean[len(x) - h - 1]
    return (x - mean).astype(np.float32)


def _envelope(x: np.ndarray, pad_mask: np.ndarray, bins: int) -> np.ndarray:
    k = max(1, len(x) // bins)
    n = (len(x) // k) * k
    y = x[:n].reshape(-1, k)
    env = np.stack([y.min(axis=1), y.max(axis=1)], axis=1)
    env[pad_mask[:n].reshape(-1, k).all(axis=1)] = np.nan
    return env


def _pad_mask(n: int, rate_hz: float, padded: list[tuple[float, float]]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in padded:
        mask[int(a * rate_hz):int(np.ceil(b * rate_hz))] = True
    return mask


def _mean_over_ok(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(channels, epochs, bands) -> (epochs, bands): the mean over the channels ok in each epoch."""
    n = ok.sum(axis=0)
    total = np.where(ok[:, :, None], np.nan_to_num(values), 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n[:, None] > 0, total / n[:, None], np.nan)


def _epoch_brightness(light: LightTrack | None, epoch_t: np.ndarray, half: float) -> np.ndarray | None:
    if light is None:
        return None
    out = np.full(len(epoch_t), np.nan)
    lo = np.searchsorted(light.t, epoch_t - half)
    hi = np.searchsorted(light.t, epoch_t + half)
    for i, (a, b) in enumerate(zip(lo, hi)):
        if b > a:
            out[i] = light.brightness[a:b].mean()
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """None with fewer than 3 pairs, or when either hardly varies (a steady light has no r)."""
    m = np.isfinite(a) & np.isfinite(b)
    if m.sum() < 3 or np.std(a[m]) < 1e-6 or np.std(b[m]) < 1e-4:
        return None
    return float(np.corrcoef(a[m], b[m])[0, 1])


def _steps(report: Report, half: float) -> list[StepSummary]:
    out = []
    for s in report.timeline.steps:
        inside = (report.epoch_t >= s.t0) & (report.epoch_t < s.t1) & report.usable
        sh = report.shares[inside]
        means = {b: (float(np.nanmean(sh[:, i])) if np.isfinite(sh[:, i]).any() else None)
                 for i, b in enumerate(BANDS)}
        bright = None
        if report.light is not None:
            m = (report.light.t >= s.t0) & (report.light.t < s.t1)
            bright = float(report.light.brightness[m].mean()) if m.any() else None
        out.append(StepSummary(s.name, s.detail, s.t0, s.t1, bright, means, int(inside.sum())))
    return out


def _quality(labels: list[str], states: np.ndarray, rms: np.ndarray, usable: np.ndarray) -> list[ChannelQuality]:
    out = []
    for c, label in enumerate(labels):
        s = states[c, usable]
        fr = {name: (float((s == i).mean()) if len(s) else 0.0) for i, name in enumerate(STATES)}
        ok_rms = rms[c, usable][s == OK]
        ok_rms = ok_rms[np.isfinite(ok_rms)]
        out.append(ChannelQuality(label, fr, float(np.median(ok_rms)) if len(ok_rms) else None, len(s)))
    return out


def analyse(rec: Recording, light: LightTrack | None) -> Report:
    tl = build_timeline(rec.annotations, rec.duration_s, rec.rate_hz)
    starts, usable, length = epoch_starts(tl.content_end_s, rec.rate_hz, tl.padded)
    pad = _pad_mask(rec.n_samples, rec.rate_hz, tl.padded)
    bins = min(OVERVIEW_BINS, rec.n_samples)
    n_ch = rec.channels
    states = np.zeros((n_ch, len(starts)), dtype=np.int8)
    rms = np.zeros((n_ch, len(starts)))
    power = np.zeros((n_ch, len(starts), len(BANDS)))
    overview = []
    for c in range(n_ch):
        x = rec.channel(c)
        states[c], rms[c] = classify(x, starts, length)
        power[c] = band_power(x, rec.rate_hz, starts, length)
        if pad.any() and not pad.all():
            x[pad] = np.median(x[~pad])  # the padding's zeros would bend the moving mean next to them
        overview.append(_envelope(_detrended(x, rec.rate_hz), pad, bins))
    ok = (states == OK) & usable[None, :]
    k = max(1, rec.n_samples // bins)
    epoch_t = (starts + length / 2) / rec.rate_hz
    half = length / rec.rate_hz / 2
    report = Report(
        path=rec.path, pod_id=rec.pod_id, participant=rec.participant, start=rec.start, rate_hz=rec.rate_hz,
        labels=rec.labels, units=rec.units, duration_s=rec.duration_s, content_s=tl.content_end_s,
        trailing_bytes=rec.trailing_bytes, timeline=tl, light=light, epoch_t=epoch_t, usable=usable,
        power=_mean_over_ok(power, ok), shares=_mean_over_ok(shares(power), ok),
        brightness=_epoch_brightness(light, epoch_t, half), alpha_r=None,
        quality=_quality(rec.labels, states, rms, usable), states=states,
        overview_t=(np.arange(len(overview[0])) + 0.5) * k / rec.rate_hz, overview=np.stack(overview), steps=[],
    )
    if report.brightness is not None:
        report.alpha_r = _pearson(report.shares[:, BANDS.index("alpha")], report.brightness)
    report.steps = _steps(report, half)
    report.notes = _notes(rec, tl, light, usable)
    return report


def _notes(rec: Recording, tl: Timeline, light: LightTrack | None, usable: np.ndarray) -> list[str]:
    notes = []
    if rec.trailing_bytes:
        notes.append(f"{rec.path.name}: {rec.trailing_bytes} bytes after the last whole record (a recorder "
                     "stopped mid-record) were left out")
    if any(u != "uV" for u in rec.units) or any(abs(fs - FULL_SCALE_UV) > 1 for fs in rec.full_scale):
        notes.append(f"{rec.path.name}: not hostd's scale (uV, +-{FULL_SCALE_UV:g}): the signal quality "
                     "assumes it")
    notes += [f"{rec.path.name}: annotation {u}" for u in tl.unreadable]
    if not usable.any():
        notes.append(f"{rec.path.name}: no whole {EPOCH_S:g} s epoch of EEG outside gaps and padding: no band powers")
    if light is not None:
        if light.skipped:
            notes.append(f"{light.source.name}: {light.skipped} lines skipped")
            notes += light.problems
        if light.outside:
            notes.append(f"{light.source.name}: {light.outside} of {light.frames} frames fall outside the recording")
    return notes


def build_report(recording: str | os.PathLike, frames: str | os.PathLike | None = None) -> Report:
    """The report of one recording and, optionally, the pod's light (frames or leds telemetry)."""
    with open_recording(recording) as rec:
        light = None
        if frames is not None:
            light = read_light(frames, rec.pod_id, rec.start.timestamp(), rec.duration_s)
        return analyse(rec, light)
