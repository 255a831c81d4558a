"""The shared timeline of a circle: scene changes at wall-clock instants.

Instants are host CLOCK_REALTIME nanoseconds (``time.time_ns()``), which
NTP/PTP discipline on every host of an installation, so hosts that never talk
to each other agree on them. Each pod's PodClock turns an instant into that
pod's ``ticks_us``; SCENE_AT and FRAME_PHASE carry it to the pod.

Frames sit on a grid, ``epoch_ns + k x period_us``: every pod of a circle shows
frame k at the same instant, and every event is snapped to the grid so a
scene starts on the same frame everywhere.

The retained ``hypnolum/v1/circles/<circle>/timeline`` payload::

    {"epoch_ns": 1764254400000000000, "period_us": 16667,
     "events": [{"at_ns": 1764254405000000000, "scene": {"effect": "breathe", ...}}]}
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .clock import PodClock
from .commands import SceneSpec

# a SCENE_AT instant further back than this is rebased by whole animation periods
# (the pod believes past instants up to 2**28 us, about 268 s)
PAST_LIMIT_NS = 200 * 10**9
# events further ahead than this wait on the host (pod ticks_diff covers +-2**29 us)
HORIZON_NS = 120 * 10**9


class TimelineError(ValueError):
    """A timeline payload that cannot be used; says what and where."""


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    at_ns: int = Field(gt=0)
    scene: SceneSpec


class Timeline(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    epoch_ns: int = Field(gt=0)
    period_us: int = Field(16667, ge=4000, le=1_000_000)
    events: list[Event] = []

    @classmethod
    def parse(cls, payload: bytes | str, where: str = "timeline") -> "Timeline":
        try:
            return cls.model_validate(json.loads(payload))
        except (ValueError, ValidationError) as exc:
            raise TimelineError(f"{where}: {exc}") from None

    def snap(self, t_ns: int) -> int:
        """The grid instant nearest ``t_ns``."""
        p = self.period_us * 1000
        return self.epoch_ns + round((t_ns - self.epoch_ns) / p) * p

    def grid_after(self, t_ns: int) -> int:
        """The first grid instant at or after ``t_ns``."""
        p = self.period_us * 1000
        return self.epoch_ns + -(-(t_ns - self.epoch_ns) // p) * p

    def due(self, now_ns: int) -> list[Event]:
        """What a pod joining now needs: the event in force (the newest past one)
        and the coming ones within the horizon, instants snapped to the grid."""
        events = sorted(self.events, key=lambda e: e.at_ns)
        past = [e for e in events if e.at_ns <= now_ns]
        coming = [e for e in events if now_ns < e.at_ns <= now_ns + HORIZON_NS]
        return [Event(at_ns=self.snap(e.at_ns), scene=e.scene) for e in past[-1:] + coming]


def start_instant(event: Event, now_ns: int) -> int:
    """The instant to send for ``event``: itself, or for an event far in the past the
    most recent instant with the same animation phase (whole periods later)."""
    age = now_ns - event.at_ns
    if age <= PAST_LIMIT_NS:
        return event.at_ns
    period_ns = event.scene.period_ms * 10**6
    if period_ns <= 0:
        return now_ns
    return event.at_ns + (age // period_ns) * period_ns


def scene_at_fields(clock: PodClock, event: Event, now_ns: int) -> dict:
    """SCENE_AT fields for one pod."""
    at_us = start_instant(event, now_ns) / 1000
    return {"at_us": clock.pod_ticks_us(at_us), **event.scene.fields()}


def frame_phase_fields(clock: PodClock, timeline: Timeline, now_ns: int) -> dict:
    """FRAME_PHASE fields for one pod: the next grid instant, and the frame period in
    the pod's ticks (its drift applied, so it stays on the grid between updates)."""
    anchor_ns = timeline.grid_after(now_ns)
    drift = clock.drift()
    return {
        "anchor_us": clock.pod_ticks_us(anchor_ns / 1000),
        "period_us": round(timeline.period_us * (1 + drift)),
    }


@dataclass
class Scheduled:
    """What a pod of the circle has been given in its current boot."""

    boot_id: int | None
    delivered: set[int]  # event instants acknowledged by the pod
    phase_sent_ns: int = 0


def new_timeline(scene: SceneSpec, lead_ms: int, period_us: int = 16667, now_ns: int | None = None) -> Timeline:
    """A one-event timeline starting ``lead_ms`` from now (on its own grid)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    at = now_ns + lead_ms * 10**6
    return Timeline(epoch_ns=at, period_us=period_us, events=[Event(at_ns=at, scene=scene)])
