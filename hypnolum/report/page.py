"""The report as one self-contained HTML page: inline CSS, figures as PNG data URIs, no
script to run and nothing fetched, so it opens offline and can be mailed as one file. Every
text from the recording (markers are free text) is escaped. The numbers shown are also in
the page as JSON (``<script type="application/json" id="report-data">``) for other tools."""
from __future__ import annotations

import base64
import json
import math
from datetime import timedelta
from html import escape
from typing import Any

from .assemble import Report
from .bands import BANDS, EPOCH_S
from .figures import FIGURES, clock, png
from .quality import RULES, STATES
from .recording import shown_participant

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:1120px;margin:0 auto;padding:20px 24px 48px}
header{background:#1d2330;color:#f4f5f7;padding:18px 24px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header p{margin:0;color:#c6cad3}
section{background:#fff;border-radius:8px;margin:18px 0;padding:14px 18px;box-shadow:0 1px 2px #0001}
h2{font-size:17px;margin:0 0 8px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #e4e6ea;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.t{white-space:nowrap}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.muted{color:#667085}.bad{color:#b42318}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{color:#667085}dd{margin:0}
"""


def _t(report: Report, t: float) -> str:
    """Time from the start and the wall clock (UTC)."""
    wall = report.start + timedelta(seconds=t)
    return f"{clock(t, report.duration_s >= 3600)} ({wall:%H:%M:%S})"


def _span(r: Report, seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else clock(seconds, r.duration_s >= 3600)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), times: set[int] = frozenset()
           ) -> str:
    """Cells are HTML already (escaped by the caller); ``numeric`` columns right-aligned, ``times`` unbroken."""
    def cls(i: int) -> str:
        return " class=n" if i in numeric else " class=t" if i in times else ""

    th = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _summary(r: Report) -> str:
    lost = sum(g.lost for g in r.timeline.gaps)
    light = (f"{escape(r.light.source.name)} ({r.light.kind}, {r.light.frames} frames)" if r.light is not None
             else '<span class="muted">none given (--frames)</span>')
    items = [
        ("participant", (f'<strong id="participant">{escape(shown_participant(r.participant))}</strong> '
                         '<span class="muted">(pseudonymous code from the recording)</span>')),
        ("pod", escape(r.pod_id)),
        ("recording", escape(r.path.name)),
        ("start", f"{r.start:%Y-%m-%d %H:%M:%S} UTC"),
        ("EEG", f"{clock(r.content_s, r.duration_s >= 3600)} of {len(r.labels)} channels at {r.rate_hz:g} Hz"),
        ("scene changes", str(len(r.timeline.of_kind("scene")))),
        ("markers", str(len(r.timeline.of_kind("marker", "stop")))),
        ("samples lost", f"{lost} in {len(r.timeline.gaps)} gaps ({lost / r.rate_hz:.1f} s)"),
        ("light", light),
    ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _events(r: Report) -> str:
    kinds = ("scene", "stop", "marker", "setting", "stream", "discontinuity", "killed", "other")
    rows = [[_t(r, e.t), escape(e.kind), escape(e.text)] for e in r.timeline.events if e.kind in kinds]
    if not rows:
        return '<p class="muted">No scene change, marker or other event in the recording.</p>'
    return _table(["time", "kind", "annotation"], rows, times={0})


def _steps(r: Report) -> str:
    rows = [[escape(s.name), escape(s.detail), _t(r, s.t0), _span(r, s.t1 - s.t0), _num(s.brightness),
             *(_pct(s.shares[b]) for b in BANDS)] for s in r.steps]
    return _table(["scene", "as set", "from", "for", "brightness", *BANDS], rows, numeric={3, 4, 5, 6, 7, 8, 9},
                  times={2})


def _gaps(r: Report) -> str:
    tl = r.timeline
    rows = [[_t(r, g.t), f"{g.lost}", f"{g.seconds:.2f} s", escape(g.cause),
             "zeros in the file" if g.on_axis else "left out of the file"] for g in tl.gaps]
    rows += [[_t(r, e.t), "–", "–", escape(e.label), "discontinuity"] for e in tl.of_kind("discontinuity", "killed")]
    if not rows:
        return "<p>No gap: every sample of the pod's stream is in the recording.</p>"
    lost = sum(g.lost for g in tl.gaps)
    return (f'<p class="bad">{lost} samples ({lost / r.rate_hz:.1f} s) lost in {len(tl.gaps)} gaps; they are '
            "left out of every figure and number.</p>"
            + _table(["at", "samples", "length", "cause", "in the file as"], sorted(rows), numeric={1, 2}, times={0}))


def _quality(r: Report) -> str:
    rows = [[escape(q.label), *(_pct(q.fractions[s]) for s in STATES), _num(q.median_rms_uv, ".1f"), str(q.epochs)]
            for q in r.quality]
    return _table(["channel", *STATES, "median rms µV (ok)", "epochs"], rows, numeric={1, 2, 3, 4, 5, 6})


def _alpha_text(r: Report) -> str:
    if r.light is None:
        return '<p class="muted">No frames file was given, so there is no brightness to set alpha against.</p>'
    rv = "not enough epochs with both" if r.alpha_r is None else f"{r.alpha_r:+.2f}"
    return (f"<p>Pearson r of the alpha share against the mean brightness per {EPOCH_S:g} s epoch: "
            f'<strong id="alpha-r">{rv}</strong>. The light track starts within a second of the EEG '
            "(the recording's start is stored to the second).</p>")


def _notes(r: Report) -> str:
    if not r.notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in r.notes)
    return f'<section id="notes"><h2>Input notes</h2><ul>{items}</ul></section>'


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def data(r: Report) -> dict[str, Any]:
    """The report's numbers as JSON-ready values."""
    return _finite({
        "pod_id": r.pod_id, "participant": r.participant, "recording": r.path.name,
        "start": r.start.isoformat(), "rate_hz": r.rate_hz, "channels": r.labels, "eeg_s": r.content_s,
        "steps": [{"scene": s.name, "detail": s.detail, "t0": s.t0, "t1": s.t1, "brightness": s.brightness,
                   "shares": s.shares, "epochs": s.epochs} for s in r.steps],
        "events": [{"t": e.t, "kind": e.kind, "text": e.text} for e in r.timeline.events],
        "gaps": [{"t": g.t, "lost": g.lost, "seconds": g.seconds, "cause": g.cause, "on_axis": g.on_axis}
                 for g in r.timeline.gaps],
        "quality": [{"ch": i + 1, "label": q.label, **q.fractions, "median_rms_uv": q.median_rms_uv}
                    for i, q in enumerate(r.quality)],
        "alpha_brightness_r": r.alpha_r,
        "light": None if r.light is None else {"file": r.light.source.name, "kind": r.light.kind,
                                               "frames": r.light.frames, "skipped": r.light.skipped},
        "notes": r.notes,
    })


def render(r: Report) -> str:
    figs = {name: _img(png(make(r)), name) for name, make in FIGURES}
    title = f"Session debrief · {r.pod_id} · participant {shown_participant(r.participant)}"
    blob = json.dumps(data(r), allow_nan=False, default=str)
    blob = blob.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")  # inert inside <script>
    sections = [
        ("summary", "Session", _summary(r)),
        ("timeline", "Scenes and markers",
         figs["timeline"] + "<h3>Scene steps</h3>" + _steps(r) + "<h3>Annotations</h3>" + _events(r)),
        ("eeg", "EEG overview", figs["eeg"]),
        ("bands", "Band power over time", figs["bands"]),
        ("alpha", "Alpha and the light", figs["alpha"] + _alpha_text(r)),
        ("gaps", "Gaps and their causes", _gaps(r)),
        ("quality", "Signal quality",
         figs["quality"] + _quality(r) + f'<p class="muted">Per {EPOCH_S:g} s epoch, as hostd judges it live: '
         f"{escape(RULES)}.</p>"),
    ]
    body = "".join(f'<section id="{sid}"><h2>{h}</h2>{content}</section>' for sid, h, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(r.path.name)} · {r.start:%Y-%m-%d %H:%M} UTC</p></header>"
        f"<main>{body}{_notes(r)}</main>"
        f'<script type="application/json" id="report-data">{blob}</script></body></html>\n'
    )
