"""The report as a PDF (matplotlib's PdfPages): a first page with the session's numbers, then
the page's figures, one a page."""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .assemble import Report
from .bands import BANDS
from .figures import FIGURES, clock
from .recording import shown_participant

MAX_ROWS = 24  # per list on the first page; the HTML page lists all


def _more(n: int) -> list[str]:
    return [f"  … and {n - MAX_ROWS} more (the HTML page lists them all)"] if n > MAX_ROWS else []


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _first_page(r: Report) -> Figure:
    fig = Figure(figsize=(8.27, 11.69))  # A4
    long = r.duration_s >= 3600
    lost = sum(g.lost for g in r.timeline.gaps)
    lines = [
        f"participant {shown_participant(r.participant)}   pod {r.pod_id}",
        f"{r.path.name}, started {r.start:%Y-%m-%d %H:%M:%S} UTC",
        (f"{clock(r.content_s, long)} of EEG, {len(r.labels)} channels at {r.rate_hz:g} Hz; "
         f"{lost} samples lost in {len(r.timeline.gaps)} gaps"),
        "" if r.light is None else f"light: {r.light.source.name} ({r.light.frames} frames)"
        + ("" if r.alpha_r is None else f"; alpha against brightness r = {r.alpha_r:+.2f}"),
        "",
        "scene steps (from, for, brightness, " + ", ".join(BANDS) + " share):",
    ]
    for s in r.steps[:MAX_ROWS]:
        shares = " ".join("  –" if s.shares[b] is None else f"{100 * s.shares[b]:3.0f}" for b in BANDS)
        bright = "   –" if s.brightness is None else f"{s.brightness:4.2f}"
        lines.append(f"  {clock(s.t0, long):>8} {s.t1 - s.t0:6.0f} s {bright}  {shares}  {_cut(s.name, 24)}")
    lines += _more(len(r.steps))
    lines += ["", "markers and gaps:"]
    events = [(e.t, f"{e.kind}: {_cut(e.label, 60)}") for e in r.timeline.of_kind("marker", "stop", "discontinuity")]
    events += [(g.t, f"gap: {g.lost} samples ({_cut(g.cause, 50)})") for g in r.timeline.gaps]
    lines += [f"  {clock(t, long):>8}  {text}" for t, text in sorted(events)[:MAX_ROWS]] + _more(len(events))
    lines += ["", "signal quality (share of epochs ok / flat / railed / noisy):"]
    lines += [f"  {q.label:<10} " + " ".join(f"{100 * q.fractions[s]:4.0f}%" for s in ("ok", "flat", "railed", "noisy"))
              for q in r.quality]
    fig.text(0.07, 0.95, "Session debrief", fontsize=18, weight="bold", va="top")
    fig.text(0.07, 0.91, "\n".join(lines), fontsize=8.5, family="monospace", va="top")
    return fig


def write_pdf(r: Report, out: Path) -> None:
    with PdfPages(out, metadata={"Title": f"Session debrief {r.pod_id}", "Creator": "hypnolum report"}) as pdf:
        pdf.savefig(_first_page(r))
        for _name, make in FIGURES:
            pdf.savefig(make(r))
