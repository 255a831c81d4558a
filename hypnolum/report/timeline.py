"""The recording's annotations read as a session: scene steps, markers, gaps and their causes.

What hostd's recorder writes (host/recorder.py, host/eeg.py, host/setcommands.py,
host/annotation_journal.py):

* ``stream: seq N (pod P boot B)`` where a pod stream starts (again);
* ``scene: <effect> brightness … color […] …`` for each scene the pod acknowledged;
* ``marker: <text>``; a participant stop is the marker ``stop``;
* ``gap: N samples lost (<cause>)`` over N samples of zeros, or
  ``…, not on the time axis`` for samples that were left out;
* ``discontinuity: <cause>`` (the pod rebooted), the note that hostd was killed;
* ``night: …``, ``safe mode: …``;
* ``end of data`` over the zeros that pad the last records.

A scene change (or a stop) starts a step that lasts until the next one or the end of the
EEG. Zeros the recorder padded (gaps on the time axis, ``end of data``) are not EEG: they
are left out of every figure and number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .recording import Annotation

KILLED_PREFIX = "hostd was killed"  # host/annotation_journal.py KILLED_NOTE
_GAP = re.compile(r"^gap: (?P<lost>\d+) samples lost \((?P<cause>.*)\)(?P<off>, not on the time axis)?$")


@dataclass(frozen=True)
class Event:
    kind: str  # scene, stop, marker, gap, discontinuity, killed, stream, setting, other
    t: float  # seconds from the recording's start
    label: str  # short: the scene's effect, the marker's text, the gap's cause
    text: str  # the annotation as recorded
    duration_s: float | None = None


@dataclass(frozen=True)
class Gap:
    t: float
    lost: int  # samples
    seconds: float
    cause: str
    on_axis: bool  # zeros in the file (True) or left out of it


@dataclass(frozen=True)
class Step:
    """The time between a scene change (or stop) and the next."""
    name: str
    detail: str
    t0: float
    t1: float


@dataclass
class Timeline:
    events: list[Event]
    gaps: list[Gap]
    steps: list[Step]
    padded: list[tuple[float, float]]  # (start, end) s of zeros the recorder wrote: gaps and end of data
    content_end_s: float  # where the EEG ends (the start of the end-of-data padding)
    unreadable: list[str] = field(default_factory=list)  # annotations that could not be read as written

    def of_kind(self, *kinds: str) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]


def _classify(a: Annotation, unreadable: list[str]) -> Event:
    text = a.text
    head, _, rest = text.partition(":")
    rest = rest.strip()
    if head == "scene" and rest:
        return Event("scene", a.onset_s, rest.split()[0], text, a.duration_s)
    if head == "marker":
        return Event("stop" if rest.lower() == "stop" else "marker", a.onset_s, rest, text, a.duration_s)
    if head == "stop":
        return Event("stop", a.onset_s, "stop", text, a.duration_s)
    if head == "gap":
        return Event("gap", a.onset_s, rest, text, a.duration_s)
    if head == "discontinuity":
        return Event("discontinuity", a.onset_s, rest, text, a.duration_s)
    if head == "stream":
        return Event("stream", a.onset_s, rest, text, a.duration_s)
    if head in ("night", "safe mode"):
        return Event("setting", a.onset_s, text, text, a.duration_s)
    if text.startswith(KILLED_PREFIX):
        return Event("killed", a.onset_s, text, text, a.duration_s)
    if text == "end of data":
        return Event("end", a.onset_s, text, text, a.duration_s)
    if head == "scene":
        unreadable.append(f"at {a.onset_s:.1f} s: {text!r} names no effect")
    return Event("other", a.onset_s, text, text, a.duration_s)


def _gap(e: Event, rate_hz: float, unreadable: list[str]) -> Gap:
    m = _GAP.match(e.text)
    if m is None:
        unreadable.append(f"at {e.t:.1f} s: gap annotation {e.text!r} not in the recorder's form")
        seconds = e.duration_s or 0.0
        return Gap(e.t, round(seconds * rate_hz), seconds, e.label or "unknown", bool(e.duration_s))
    lost = int(m.group("lost"))
    on_axis = m.group("off") is None
    return Gap(e.t, lost, lost / rate_hz, m.group("cause"), on_axis)


def _steps(events: list[Event], end_s: float) -> list[Step]:
    changes = [e for e in events if e.kind in ("scene", "stop") and e.t < end_s]
    steps = []
    if not changes or changes[0].t > 0.5:
        steps.append(Step("(as the pod started)", "before the first scene change in this recording", 0.0,
                          changes[0].t if changes else end_s))
    for k, e in enumerate(changes):
        t1 = changes[k + 1].t if k + 1 < len(changes) else end_s
        detail = e.text.partition(":")[2].strip() if e.kind == "scene" else "participant stop: the pod fades to its safe level"
        steps.append(Step(e.label if e.kind == "scene" else "stop", detail, e.t, t1))
    return [s for s in steps if s.t1 > s.t0]


def build_timeline(annotations: list[Annotation], duration_s: float, rate_hz: float) -> Timeline:
    """Read the annotations of a recording ``duration_s`` long (padding included)."""
    unreadable: list[str] = []
    events = [_classify(a, unreadable) for a in annotations]
    gaps = [_gap(e, rate_hz, unreadable) for e in events if e.kind == "gap"]
    padded = [(g.t, g.t + g.seconds) for g in gaps if g.on_axis and g.seconds > 0]
    ends = [e for e in events if e.kind == "end"]
    content_end = min([e.t for e in ends] + [duration_s])
    padded += [(e.t, e.t + (e.duration_s or 0.0)) for e in ends if e.duration_s]
    padded.append((content_end, duration_s))
    return Timeline(events, gaps, _steps(events, content_end), _merged(padded, duration_s), content_end, unreadable)


def _merged(spans: list[tuple[float, float]], end_s: float) -> list[tuple[float, float]]:
    """Overlapping (start, end) spans joined, cut at ``end_s``, in order."""
    out: list[tuple[float, float]] = []
    for a, b in sorted((a, min(b, end_s)) for a, b in spans if min(b, end_s) > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
