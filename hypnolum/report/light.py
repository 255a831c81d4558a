"""The light a pod showed, on the recording's time axis: times and RGB, from either

* a frames file ``<pod_id>.frames`` (``hypnolum emulate --record-frames DIR``, read with
  :func:`hypnolum.emulator.frames.read_frames`): every frame the strip showed, or
* lines of the pod's ``leds`` telemetry (docs/mqtt.md), as ``mosquitto_sub -t
  'hypnolum/v1/pods/<pod_id>/leds'`` prints them (``-v`` adds the topic before each line):
  ``{"led_count": N, "segments": K, "rgb": "<hex>", "at": "<ISO time>"}``.

Both become the same track: at most :data:`STEP_S` apart, the mean brightness of the
frames in each step and the last one's colours averaged down to at most :data:`SEGMENTS`
segments. Brightness is the mean relative luminance (0.2126 R + 0.7152 G + 0.0722 B) of
the colours as driven, 0..1. A line that cannot be read is skipped and counted; a file of
another pod, or of another time, is refused.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..emulator.frames import MAGIC, FrameFileError, read_frames
from ..emulator.leds import LedDatagramError
from .errors import ReportError

STEP_S = 0.2  # the leds telemetry's fastest rate (5 a second)
SEGMENTS = 32
LUMA = np.array([0.2126, 0.7152, 0.0722])
MAX_LISTED = 20  # skipped lines listed by line number; the rest only counted


@dataclass
class LightTrack:
    source: Path
    kind: str  # "frames file" or "leds telemetry"
    t: np.ndarray  # s from the recording's start, one per step
    brightness: np.ndarray  # 0..1
    segments: np.ndarray  # (steps, K, 3) uint8
    frames: int  # frames (or telemetry lines) read
    outside: int  # frames before or after the recording
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def _segment_bounds(count: int) -> np.ndarray:
    k = min(SEGMENTS, count)
    return (np.arange(k) * count) // k


class _Binner:
    """Frames -> one entry per STEP_S: mean brightness, the last frame's segments."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.b: list[float] = []
        self.seg: list[np.ndarray] = []
        self._bin: int | None = None
        self._sum = 0.0
        self._n = 0
        self._last: np.ndarray | None = None
        self._bounds: dict[int, np.ndarray] = {}

    def add(self, t: float, rgb: np.ndarray) -> None:
        k = int(np.floor(t / STEP_S))
        if k != self._bin:
            self._flush()
            self._bin = k
        self._sum += float((rgb @ LUMA).mean()) / 255.0
        self._n += 1
        self._last = rgb

    def _segments(self, rgb: np.ndarray) -> np.ndarray:
        """The strip averaged down to at most SEGMENTS segments."""
        bounds = self._bounds.get(len(rgb))
        if bounds is None:
            bounds = self._bounds[len(rgb)] = _segment_bounds(len(rgb))
        return np.add.reduceat(rgb.astype(np.float32), bounds, axis=0) / np.diff(np.append(bounds, len(rgb)))[:, None]

    def _flush(self) -> None:
        if self._n:
            self.t.append((self._bin + 0.5) * STEP_S)
            self.b.append(self._sum / self._n)
            self.seg.append(self._segments(self._last))
        self._sum, self._n = 0.0, 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._flush()
        k = max((len(s) for s in self.seg), default=1)
        seg = np.zeros((len(self.seg), k, 3), dtype=np.uint8)
        for i, s in enumerate(self.seg):  # a strip of fewer segments is stretched to k
            seg[i] = np.rint(s[(np.arange(k) * len(s)) // k]).clip(0, 255)
        return np.asarray(self.t), np.asarray(self.b), seg


def _frames_file(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    try:
        for wall, frame in read_frames(path):
            if frame.count:
                yield wall, np.frombuffer(frame.rgb, dtype=np.uint8).reshape(frame.count, 3)
    except (FrameFileError, LedDatagramError) as exc:
        raise ReportError(f"{path}: {exc}") from None


def _telemetry_line(line: str) -> tuple[str | None, float, np.ndarray]:
    """(pod id from the topic or None, Unix time, colours) of one line; ValueError if malformed."""
    topic = None
    if not line.startswith("{"):
        topic, _, line = line.partition(" ")
    d = json.loads(line)
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    k = d.get("segments")
    rgb = d.get("rgb")
    if not isinstance(k, int) or not 1 <= k <= SEGMENTS:
        raise ValueError(f"segments: {k!r} is not an integer 1..{SEGMENTS}")
    if not isinstance(rgb, str) or len(rgb) != 6 * k:
        raise ValueError(f"rgb: expected {6 * k} hex digits for {k} segments")
    colours = np.frombuffer(bytes.fromhex(rgb), dtype=np.uint8).reshape(k, 3)
    at = datetime.fromisoformat(str(d.get("at")))
    if at.tzinfo is None:
        raise ValueError(f"at: {d.get('at')!r} has no time zone")
    pod = None
    if topic is not None:
        parts = topic.split("/")
        if len(parts) < 2 or parts[-1] != "leds":
            raise ValueError(f"topic {topic!r} is not a pod's leds topic")
        pod = parts[-2]
    return pod, at.timestamp(), colours


def _telemetry(path: Path, pod_id: str, track: LightTrack) -> Iterator[tuple[float, np.ndarray]]:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    good = 0
    with f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                pod, wall, colours = _telemetry_line(line)
            except (ValueError, TypeError) as exc:
                track.skipped += 1
                if len(track.problems) < MAX_LISTED:
                    track.problems.append(f"{path.name} line {n}: skipped: {exc}")
                continue
            if pod is not None and pod != pod_id:
                raise ReportError(f"{path}: line {n} is pod {pod}'s leds telemetry; the recording is pod {pod_id}'s")
            if pod is None and _file_pod(path) != pod_id:
                raise ReportError(f"{path}: line {n} names no topic, so the file's name says whose it is: pod "
                                  f"{_file_pod(path)}'s (name it <pod_id>.leds or keep the topics, mosquitto_sub -v); "
                                  f"the recording is pod {pod_id}'s")
            good += 1
            yield wall, colours
    if not good:
        raise ReportError(f"{path}: neither a frames file nor lines of leds telemetry "
                          f"({track.skipped} lines, none readable{': ' + track.problems[0] if track.problems else ''})")


def _file_pod(path: Path) -> str:
    return path.name.split(".")[0]


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def read_light(path: str | os.PathLike, pod_id: str, start_unix: float, duration_s: float) -> LightTrack:
    """The light of pod ``pod_id`` over a recording that starts at ``start_unix`` (UTC seconds)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    binary = head == MAGIC
    track = LightTrack(path, "frames file" if binary else "leds telemetry", np.zeros(0), np.zeros(0),
                       np.zeros((0, 1, 3), np.uint8), 0, 0)
    if binary and _file_pod(path) != pod_id:
        raise ReportError(f"{path}: the frames of pod {_file_pod(path)} (a frames file is named <pod_id>.frames); "
                          f"the recording is pod {pod_id}'s")
    source = _frames_file(path) if binary else _telemetry(path, pod_id, track)
    binner = _Binner()
    first = last = None
    for wall, colours in source:
        track.frames += 1
        first = wall if first is None else min(first, wall)
        last = wall if last is None else max(last, wall)
        t = wall - start_unix
        if -STEP_S <= t <= duration_s + STEP_S:
            binner.add(max(0.0, t), colours)
        else:
            track.outside += 1
    if first is None:
        raise ReportError(f"{path}: no frames in it")
    track.t, track.brightness, track.segments = binner.arrays()
    if not len(track.t):
        raise ReportError(f"{path}: its {track.frames} frames span {_utc(first)} to {_utc(last)} UTC, the recording "
                          f"{_utc(start_unix)} to {_utc(start_unix + duration_s)} UTC: not this session")
    return track
