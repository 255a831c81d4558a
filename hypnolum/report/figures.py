"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg when saved):
the session timeline, the EEG overview, band power over time, alpha against the light's
brightness and the signal quality per channel. Each function returns a Figure; :func:`png`
turns one into PNG bytes for the page, and the PDF takes them as they are."""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MultipleLocator

from .assemble import Report
from .bands import BANDS, EPOCH_S
from .quality import STATES

WIDTH_IN = 11.0
DPI = 100
BAND_COLOURS = {"delta": "#3b5b92", "theta": "#4f9d69", "alpha": "#d1495b", "beta": "#edae49", "gamma": "#8c6bb1"}
STATE_COLOURS = {"ok": "#4f9d69", "flat": "#9e9e9e", "railed": "#6a3d9a", "noisy": "#f28e2b"}
STEP_COLOURS = ("#dbe9f6", "#fde2c8", "#d9f0d3", "#eadcf2", "#fff2b3", "#d4eeee")
STOP_COLOUR = "#f4b6b6"
GAP_COLOUR = "#e15759"
LIGHT_COLUMNS = 1500


def clock(t: float, long: bool) -> str:
    """Seconds from the start as m:ss (h:mm:ss for recordings of an hour or more)."""
    t = max(0.0, t)
    h, rest = divmod(round(t), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if long else f"{m + 60 * h}:{s:02d}"


NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _time_axis(ax, report: Report) -> None:
    """Time ticks at a round number of seconds or minutes, about ten of them, as m:ss or h:mm:ss."""
    long = report.duration_s >= 3600
    span = max(report.content_s, 1.0)
    step = next((s for s in NICE_STEPS_S if span / s <= 12), NICE_STEPS_S[-1])
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: clock(v, long)))
    ax.set_xlim(0, span)


def _epoch_steps(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch values as a staircase over each epoch's whole span (NaN breaks it)."""
    half = EPOCH_S / 2
    return np.column_stack([t - half, t + half]).ravel(), np.repeat(y, 2)


def _marks(ax, report: Report, labels: bool = False) -> None:
    """Scene changes (grey), markers (black) and gaps (red) across an axis."""
    for e in report.timeline.of_kind("scene", "stop"):
        ax.axvline(e.t, color="#777777", lw=0.8, ls="--", zorder=3)
    for e in report.timeline.of_kind("marker"):
        ax.axvline(e.t, color="#222222", lw=0.9, zorder=3)
    for a, b in report.timeline.padded:
        if a < report.content_s:
            ax.axvspan(a, b, color=GAP_COLOUR, alpha=0.25, lw=0, zorder=2)


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _light_image(report: Report) -> tuple[np.ndarray, float]:
    """The strip over time: (segments, columns, 3) uint8, a column every ``step`` s (dark where no frame)."""
    light = report.light
    cols = int(min(LIGHT_COLUMNS, max(1, report.content_s / 0.2)))
    step = report.content_s / cols
    grid = (np.arange(cols) + 0.5) * step
    idx = np.searchsorted(light.t, grid, side="right") - 1
    valid = (idx >= 0) & (grid - light.t[np.clip(idx, 0, None)] <= max(1.0, step))
    img = np.full((light.segments.shape[1], cols, 3), 40, dtype=np.uint8)
    img[:, valid] = light.segments[idx[valid]].transpose(1, 0, 2)
    return img, step


def timeline_figure(report: Report) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 3.4), layout="constrained")
    ax_light, ax_steps, ax_events = fig.subplots(3, 1, sharex=True, height_ratios=(1.2, 1, 1.3))
    if report.light is not None and len(report.light.t):
        img, _ = _light_image(report)
        ax_light.imshow(img, aspect="auto", extent=(0, report.content_s, img.shape[0], 0), interpolation="nearest")
        ax_light.set_ylabel("light", rotation=0, ha="right", va="center")
    else:
        ax_light.text(0.5, 0.5, "no frames file given: the light is not shown", ha="center", va="center",
                      transform=ax_light.transAxes, color="#666666")
        ax_light.set_ylabel("light", rotation=0, ha="right", va="center")
    ax_light.set_yticks([])
    k = 0
    for s in report.timeline.steps:
        colour = STOP_COLOUR if s.name == "stop" else STEP_COLOURS[k % len(STEP_COLOURS)]
        k += s.name != "stop"
        ax_steps.axvspan(s.t0, s.t1, color=colour, lw=0)
        ax_steps.text((s.t0 + s.t1) / 2, 0.5, s.name, ha="center", va="center", fontsize=8, clip_on=True)
    ax_steps.set_ylabel("scene", rotation=0, ha="right", va="center")
    ax_steps.set_yticks([])
    for a, b in report.timeline.padded:
        if a < report.content_s:
            ax_events.axvspan(a, b, color=GAP_COLOUR, alpha=0.5, lw=0)
    for g in report.timeline.gaps:
        if not g.on_axis:
            ax_events.axvline(g.t, color=GAP_COLOUR, lw=1.2)
    for e in report.timeline.of_kind("discontinuity", "killed"):
        ax_events.axvline(e.t, color=GAP_COLOUR, lw=1.2, ls=":")
    for i, e in enumerate(report.timeline.of_kind("marker", "stop")):
        ax_events.axvline(e.t, color="#222222", lw=0.9)
        label = e.label if len(e.label) <= 28 else e.label[:27] + "…"
        ax_events.text(e.t, 0.92 - 0.3 * (i % 3), " " + label, fontsize=7.5, va="top", clip_on=True)
    ax_events.set_ylabel("markers\n& gaps", rotation=0, ha="right", va="center")
    ax_events.set_yticks([])
    _time_axis(ax_events, report)
    ax_events.set_xlabel("time from the start of the recording")
    return fig


def eeg_figure(report: Report) -> Figure:
    env = report.overview
    n = len(env)
    fig = Figure(figsize=(WIDTH_IN, 1.0 + 0.42 * n), layout="constrained")
    ax = fig.subplots()
    peaks = np.nanpercentile(np.abs(env).reshape(n, -1), 98, axis=1) if np.isfinite(env).any() else np.ones(n)
    ok = [q.fractions["ok"] > 0.5 for q in report.quality]
    ref = np.nanmedian(peaks[ok]) if any(ok) else np.nanmedian(peaks)
    spacing = float(max(10.0, 2.2 * (ref if np.isfinite(ref) else 10.0)))
    clip = spacing * 0.5
    for c in range(n):
        off = (n - 1 - c) * spacing
        lo, hi = np.clip(env[c, :, 0], -clip, clip), np.clip(env[c, :, 1], -clip, clip)
        ax.fill_between(report.overview_t, lo + off, hi + off, color="#1f3b5a", lw=0.4, step="mid")
    ax.set_yticks([(n - 1 - c) * spacing for c in range(n)], report.labels)
    ax.set_ylim(-spacing, n * spacing)
    _marks(ax, report)
    _time_axis(ax, report)
    ax.set_title(f"EEG, each channel minus its 1 s moving mean; rows {spacing:.0f} µV apart, clipped at ±{clip:.0f} µV",
                 fontsize=9, loc="left")
    return fig


def bands_figure(report: Report) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 4.6), layout="constrained")
    ax_abs, ax_rel = fig.subplots(2, 1, sharex=True)
    t = report.epoch_t
    for i, band in enumerate(BANDS):
        p = np.where(report.usable, report.power[:, i], np.nan)
        ax_abs.plot(t, p, color=BAND_COLOURS[band], lw=1.1, label=band)
    if np.isfinite(report.power).any() and np.nanmax(report.power) > 0:
        ax_abs.set_yscale("log")
    ax_abs.set_ylabel("µV²")
    ax_abs.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=5, fontsize=8, frameon=False)
    ax_abs.set_title(f"band power, mean of the channels that are ok, per {EPOCH_S:g} s", fontsize=9, loc="left")
    bottom = np.zeros(len(t))
    for i, band in enumerate(BANDS):
        share = np.where(report.usable, report.shares[:, i], np.nan)
        x, lo = _epoch_steps(t, bottom)
        _, hi = _epoch_steps(t, bottom + share)
        ax_rel.fill_between(x, lo, hi, color=BAND_COLOURS[band], lw=0)
        bottom = bottom + np.nan_to_num(share)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_ylabel("share")
    for ax in (ax_abs, ax_rel):
        _marks(ax, report)
    _time_axis(ax_rel, report)
    return fig


def alpha_light_figure(report: Report) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 3.2), layout="constrained")
    has_light = report.brightness is not None
    ax_t, ax_s = fig.subplots(1, 2, width_ratios=(3, 1)) if has_light else (fig.subplots(), None)
    alpha = np.where(report.usable, report.shares[:, BANDS.index("alpha")], np.nan)
    ax_t.plot(report.epoch_t, alpha, color=BAND_COLOURS["alpha"], lw=1.3, label="alpha share")
    ax_t.set_ylabel("alpha share", color=BAND_COLOURS["alpha"])
    ax_t.set_ylim(0, max(0.05, float(np.nanmax(alpha)) * 1.15) if np.isfinite(alpha).any() else 1)
    _marks(ax_t, report)
    _time_axis(ax_t, report)
    if not has_light:
        ax_t.set_title("alpha share over time (no frames file given: no brightness)", fontsize=9, loc="left")
        return fig
    ax_b = ax_t.twinx()
    ax_b.plot(report.light.t, report.light.brightness, color="#e08a00", lw=0.9, alpha=0.9)
    ax_b.set_ylabel("brightness", color="#e08a00")
    ax_b.set_ylim(0, max(0.05, float(report.light.brightness.max()) * 1.15))
    ax_t.set_title("alpha share (red) and the light's brightness (orange)", fontsize=9, loc="left")
    ax_s.scatter(report.brightness, alpha, s=10, color=BAND_COLOURS["alpha"], alpha=0.7)
    ax_s.set_xlabel(f"brightness (mean per {EPOCH_S:g} s)")
    ax_s.set_ylabel("alpha share")
    r = "n/a" if report.alpha_r is None else f"{report.alpha_r:+.2f}"
    ax_s.set_title(f"Pearson r = {r}", fontsize=9)
    return fig


def quality_figure(report: Report) -> Figure:
    n = len(report.quality)
    fig = Figure(figsize=(WIDTH_IN, 0.8 + 0.28 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    left = np.zeros(n)
    for state in STATES:
        w = np.array([q.fractions[state] for q in report.quality])
        ax.barh(y, w, left=left, color=STATE_COLOURS[state], label=state, height=0.75)
        left += w
    ax.set_yticks(y, [q.label for q in report.quality])
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0%}"))
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=4, fontsize=8, frameon=False)
    ax.set_title(f"share of the {EPOCH_S:g} s epochs of EEG in each state", fontsize=9, loc="left")
    return fig


FIGURES = (
    ("timeline", timeline_figure),
    ("eeg", eeg_figure),
    ("bands", bands_figure),
    ("alpha", alpha_light_figure),
    ("quality", quality_figure),
)
