"""The live LED colours of each pod: the pod's LEDS telemetry, as published on MQTT.

The pod sends its strip as it drives it (after its safety governor), averaged
down to at most 32 segments, about 5 times a second (firmware/pod/preview.py).
The session hands each one over as a ``LedPreview`` event; ``LedsPublisher``
turns it into ``hypnolum/v1/pods/<id>/leds`` (QoS 0, not retained), at most
``MAX_HZ`` times a second per pod, dropping what comes faster. The limit is a
token bucket (``MAX_HZ`` tokens a second, at most ``_BURST``), so a preview that
arrives a little early after one that was late (serial reads come in bursts)
still goes out, while a pod sending faster is held to ``MAX_HZ`` on average:

    {"led_count": 30, "segments": 30, "rgb": "ff7820...", "at": "2026-01-01T00:00:00.250+00:00"}

``rgb`` is 6 lowercase hex digits per segment, in strip order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ..protocol.messages import LED_PREVIEW_MAX_SEGMENTS
from . import topics

MAX_HZ = 5.0
_BURST = 1.25  # tokens: one preview, plus a quarter period of earliness


@dataclass(frozen=True, slots=True)
class LedPreview:
    """One LEDS message from a pod: ``segments`` x (R, G, B) bytes in ``rgb``, and when it came."""

    led_count: int
    segments: int
    rgb: bytes
    t_host: float  # wall clock (s) when it arrived


def leds_json(preview: LedPreview) -> dict[str, Any]:
    """The MQTT payload of one preview; ValueError if its fields do not agree."""
    if not 1 <= preview.segments <= LED_PREVIEW_MAX_SEGMENTS or len(preview.rgb) != 3 * preview.segments:
        raise ValueError(f"leds: {preview.segments} segments with {len(preview.rgb)} bytes of rgb")
    at = datetime.fromtimestamp(preview.t_host, timezone.utc).isoformat(timespec="milliseconds")
    return {"led_count": preview.led_count, "segments": preview.segments, "rgb": preview.rgb.hex(), "at": at}


class LedsPublisher:
    """Rate-limits each pod's previews to MAX_HZ and hands them to ``put(topic, payload)``."""

    def __init__(self, put: Callable[[str, Any], None], clock: Callable[[], float] = time.monotonic):
        self._put = put
        self._clock = clock
        self._bucket: dict[str, tuple[float, float]] = {}  # pod id -> (tokens, when counted)
        self.published = 0
        self.skipped = 0  # came sooner than 1/MAX_HZ after the last one of the pod

    def publish(self, pod_id: str, preview: LedPreview) -> bool:
        """Publish one preview if the pod's bucket holds a token (else skip it, counted)."""
        now = self._clock()
        tokens, then = self._bucket.get(pod_id, (_BURST, now))
        tokens = min(_BURST, tokens + (now - then) * MAX_HZ)
        if tokens < 1.0:
            self._bucket[pod_id] = (tokens, now)
            self.skipped += 1
            return False
        payload = leds_json(preview)  # ValueError: counted by the caller's failure containment
        self._bucket[pod_id] = (tokens - 1.0, now)
        self._put(topics.pod(pod_id, "leds"), payload)
        self.published += 1
        return True
