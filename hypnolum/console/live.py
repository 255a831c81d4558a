"""What the console knows about the pods, hosts and circles, from MQTT alone.

:class:`LiveModel` is fed every message of the console's subscriptions
(docs/mqtt.md, docs/circles.md) and keeps, per pod, its availability, the
summary of its retained state and its live LED colours; per circle its
definition, whether a timeline is set, the newest group value and the sync
error of its pods' clocks. Pod, LED and circle changes are coalesced: the
page gets the newest of each at most ``FLUSH_S`` apart (``flush()``), so a
flood on the broker costs the pages nothing. EEG and band powers go to the
pages watching that pod as they come.

Every payload goes through hostd's bounded decoder (host/inbound.py); one
that cannot be used is counted by kind, logged at a limited rate and skipped.
Nothing here does I/O.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable

from ..host.inbound import Inbound, InboundError
from ..protocol.ids import is_pod_id
from ..protocol.messages import (POWER_FLAG_HOT_OFF, POWER_FLAG_TEMP_FAULT, POWER_FLAG_THERMAL,
                                 POWER_FLAG_UNDERVOLT, POWER_FLAG_VIN_CUTOFF, POWER_FLAG_VIN_FAULT)

log = logging.getLogger("hypnolum.console")

PREFIX = "hypnolum/v1"
FLUSH_S = 0.2
MAX_CHANNELS = 32
MAX_SEGMENTS = 32
_LOG_EVERY_S = 10.0

# (flag, words on the pod's card)
POWER_FLAGS = (
    (POWER_FLAG_THERMAL, "derating: hot"),
    (POWER_FLAG_HOT_OFF, "dark: too hot"),
    (POWER_FLAG_UNDERVOLT, "derating: supply sags"),
    (POWER_FLAG_VIN_CUTOFF, "dark: supply too low"),
    (POWER_FLAG_TEMP_FAULT, "thermometer fault: derated"),
    (POWER_FLAG_VIN_FAULT, "supply sense unreadable"),
)

Emit = Callable[[dict[str, Any], str | None], None]  # (message, pod id it is about, for watchers only; None: all)


class BadPayload(ValueError):
    """A message the console cannot use: ``kind`` counts it."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadPayload("value", f"{what} is not a JSON object")
    return value


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def transport_of(port: str | None) -> str:
    if not port:
        return "-"
    if port.startswith("ble:"):
        return "BLE"
    if port.startswith("usb:"):
        return "USB"
    return "serial"


def scene_of(scene: Any) -> dict | None:
    """The page's view of a state's ``scene`` (wire units: brightness 0..255)."""
    if not isinstance(scene, dict) or not isinstance(scene.get("effect"), str):
        return None
    color = scene.get("color")
    rgb = color if isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                                        for c in color) else None
    brightness = _num(scene.get("brightness"))
    return {
        "effect": scene["effect"][:32],
        "brightness": None if brightness is None else round(brightness / 255, 3),
        "color": None if rgb is None else "#%02x%02x%02x" % tuple(rgb),
        "palette": _str(scene.get("palette"), 32),
        "period_ms": _num(scene.get("period_ms")),
        "source": _str(scene.get("source"), 16),
    }


def quality_of(eeg: Any) -> list[dict]:
    """The state's ``eeg.quality``: one entry per channel ({ch, state, rms_uv})."""
    quality = eeg.get("quality") if isinstance(eeg, dict) else None
    if not isinstance(quality, list):
        return []
    out = []
    for entry in quality[:MAX_CHANNELS]:
        if isinstance(entry, dict) and isinstance(entry.get("ch"), int):
            out.append({"ch": entry["ch"], "state": _str(entry.get("state"), 16) or "?",
                        "rms_uv": _num(entry.get("rms_uv"))})
    return out


def safety_of(state: dict, availability: str) -> list[str]:
    """The safety words on a pod's card: what the pod reports with its scene (a participant's
    stop, its fade to safe after link silence, night limits), derating and dark from its
    POWER flags, and a lost link (the pod then fades to safe by itself)."""
    words = []
    scene = state.get("scene") if isinstance(state.get("scene"), dict) else {}
    for key, text in (("stopped", "stopped: safe glow held"), ("link_safe", "fade to safe: link was silent"),
                      ("night", "night limits")):
        if scene.get(key) is True:
            words.append(text)
    power = state.get("power")
    flags = power.get("flags") if isinstance(power, dict) else None
    if isinstance(flags, int):
        words += [text for flag, text in POWER_FLAGS if flags & flag]
    if availability != "online" and state.get("firmware"):
        words.append("link lost: the pod's own fade to safe")
    return words


class PodView:
    def __init__(self, pod_id: str) -> None:
        self.pod_id = pod_id
        self.availability = "-"
        self.state: dict = {}
        self.leds: dict | None = None

    @property
    def online(self) -> bool:
        return self.availability == "online"

    def clock_uncertainty_us(self) -> float | None:
        clock = self.state.get("clock")
        if self.online and isinstance(clock, dict) and clock.get("synced"):
            return _num(clock.get("uncertainty_us"))
        return None

    def summary(self) -> dict[str, Any]:
        s = self.state
        caps = s.get("capabilities") if isinstance(s.get("capabilities"), dict) else {}
        counters = s.get("counters") if isinstance(s.get("counters"), dict) else {}
        host = counters.get("host") if isinstance(counters.get("host"), dict) else {}
        eeg = s.get("eeg") if isinstance(s.get("eeg"), dict) else {}
        power = s.get("power") if isinstance(s.get("power"), dict) else {}
        recording = eeg.get("recording") if isinstance(eeg.get("recording"), dict) else {}
        link = "online" if self.online else (_str(s.get("link"), 16) or self.availability)
        return {
            "t": "pod",
            "id": self.pod_id,
            "link": link,
            "reason": _str(s.get("reason")) or "",
            "transport": transport_of(_str(s.get("port"), 300)),
            "port": _str(s.get("port"), 300),
            "firmware": _str(s.get("firmware"), 32),
            "led_count": caps.get("led_count") if isinstance(caps.get("led_count"), int) else None,
            "channels": caps.get("eeg_channels") if isinstance(caps.get("eeg_channels"), int) else None,
            "rate_hz": caps.get("sample_rate_hz") if isinstance(caps.get("sample_rate_hz"), int) else None,
            "scene": scene_of(s.get("scene")),
            "safety": safety_of(s, self.availability),
            "limit_ma": _num(power.get("limit_ma")),
            "full_ma": _num(power.get("full_ma")),
            "quality": quality_of(eeg),
            "rtt_ms": _num(host.get("rtt_ms")),
            "samples": _num(eeg.get("samples")),
            "gaps": _num(eeg.get("gaps_unfilled")),
            "recording": _str(recording.get("file")),
            "clock_us": self.clock_uncertainty_us(),
            "leds": self.leds,
        }


class CircleView:
    def __init__(self, name: str) -> None:
        self.name = name
        self.definition: dict | None = None
        self.timeline: dict | None = None
        self.group: dict[str, dict] = {}  # host id -> newest group payload

    def pods(self) -> list[str]:
        pods = (self.definition or {}).get("pods")
        return [p for p in pods if is_pod_id(p)] if isinstance(pods, list) else []

    def lead_ms(self) -> int:
        lead = (self.definition or {}).get("lead_ms")
        return lead if isinstance(lead, int) and 0 <= lead <= 60_000 else 500

    def sync_error_us(self, pods: dict[str, PodView]) -> float | None:
        """How far apart two of its online pods' frames can be from their clock estimates:
        the two largest uncertainties added (one pod: its own)."""
        u = sorted((v for p in self.pods() if p in pods and (v := pods[p].clock_uncertainty_us()) is not None),
                   reverse=True)
        return None if not u else round(sum(u[:2]), 1)

    def summary(self, pods: dict[str, PodView]) -> dict[str, Any]:
        newest = max(self.group.values(), key=lambda g: _num(g.get("t_end")) or 0.0, default={})
        value = _num(newest.get("value"))
        events = (self.timeline or {}).get("events")
        return {
            "t": "circle",
            "name": self.name,
            "pods": self.pods(),
            "drive": (_str((self.definition or {}).get("drive"), 16) or "plv") if self.definition else None,
            "defined": self.definition is not None,
            "timeline": None if self.timeline is None else {"events": len(events) if isinstance(events, list) else 0},
            "value": None if value is None else round(value / 65535, 4),
            "plv": _num(newest.get("plv")),
            "alpha_uv2": _num(newest.get("alpha_power_uv2")),
            "hosts": sorted(self.group),
            "sync_error_us": self.sync_error_us(pods),
            "at": time.time(),
        }


class LiveModel:
    def __init__(self, emit: Emit, on_result: Callable[[str, str, dict], None]) -> None:
        self.emit = emit
        self.on_result = on_result  # (pod id, "set" | "marker", result payload)
        self.pods: dict[str, PodView] = {}
        self.hosts: dict[str, str] = {}
        self.circles: dict[str, CircleView] = {}
        self.inbound = Inbound()
        self.bad: Counter[str] = Counter()
        self.last_bad = ""
        self._logged_at = -_LOG_EVERY_S
        self._dirty_pods: set[str] = set()
        self._dirty_circles: set[str] = set()

    # -- input ----------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        """Take one message; a bad one is counted and skipped, never raised."""
        try:
            self._route(topic.split("/"), topic, payload)
        except (BadPayload, InboundError) as exc:
            self._count(getattr(exc, "kind", "value"), f"{topic}: {getattr(exc, 'reason', None) or exc}")
        except Exception as exc:  # noqa: BLE001  (a payload the checks above missed costs itself only)
            self._count("handler", f"{topic}: {type(exc).__name__}: {exc}")

    def _count(self, kind: str, reason: str) -> None:
        self.bad[kind] += 1
        self.last_bad = reason[:300]
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning("MQTT message skipped (%s; %d skipped so far): %s", kind, sum(self.bad.values()), reason[:300])

    def _route(self, parts: list[str], topic: str, payload: bytes) -> None:
        if len(parts) < 4 or "/".join(parts[:2]) != PREFIX:
            return
        kind, name, leaf = parts[2], parts[3], "/".join(parts[4:])
        if kind == "pods":
            if not is_pod_id(name):
                raise BadPayload("topic", f"pod id {name[:80]!r} is not one")
            self._pod_message(name, leaf, topic, payload)
        elif kind == "hosts" and leaf == "availability":
            self.hosts[name[:64]] = payload.decode("utf-8", "replace")[:16]
        elif kind == "circles" and len(name) <= 64:
            self._circle_message(name, leaf, topic, payload)

    def _pod(self, pod_id: str) -> PodView:
        view = self.pods.get(pod_id)
        if view is None:
            if len(self.pods) >= 10_000:
                raise BadPayload("capacity", "10000 pods known already")
            view = self.pods[pod_id] = PodView(pod_id)
        return view

    def _pod_message(self, pod_id: str, leaf: str, topic: str, payload: bytes) -> None:
        if leaf == "availability":
            text = payload.decode("utf-8", "replace")
            if text not in ("online", "offline", ""):
                raise BadPayload("value", f"availability {text[:20]!r} is neither online nor offline")
            self._pod(pod_id).availability = text or "-"
            self._dirty_pods.add(pod_id)
        elif leaf == "state":
            if payload:
                self._pod(pod_id).state = _dict(self.inbound.decode(topic, payload), "state")
                self._dirty_pods.add(pod_id)
        elif leaf == "leds":
            self._pod(pod_id).leds = self._leds(_dict(self.inbound.decode(topic, payload), "leds"))
            self._dirty_pods.add(pod_id)
        elif leaf == "eeg":
            self.emit(self._eeg(pod_id, _dict(self.inbound.decode(topic, payload), "eeg")), pod_id)
        elif leaf == "bands":
            self.emit(self._bands(pod_id, _dict(self.inbound.decode(topic, payload), "bands")), pod_id)
        elif leaf in ("set/result", "marker/result"):
            self.on_result(pod_id, leaf.split("/")[0], _dict(self.inbound.decode(topic, payload), "result"))

    def _circle_message(self, name: str, leaf: str, topic: str, payload: bytes) -> None:
        if leaf not in ("definition", "timeline") and not leaf.startswith("group/"):
            return
        value = _dict(self.inbound.decode(topic, payload), leaf) if payload else None
        circle = self.circles.get(name)
        if circle is None:
            if len(self.circles) >= 1000:
                raise BadPayload("capacity", "1000 circles known already")
            circle = self.circles[name] = CircleView(name)
        if leaf == "definition":
            circle.definition = value
        elif leaf == "timeline":
            circle.timeline = value
        elif leaf.startswith("group/") and value is not None:
            circle.group[leaf[6:70]] = value
        else:
            return
        self._dirty_circles.add(name)

    @staticmethod
    def _leds(data: dict) -> dict:
        segments, rgb = data.get("segments"), data.get("rgb")
        if not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS:
            raise BadPayload("value", f"leds.segments must be 1..{MAX_SEGMENTS}")
        if not isinstance(rgb, str) or len(rgb) != 6 * segments or any(c not in "0123456789abcdef" for c in rgb):
            raise BadPayload("value", f"leds.rgb must be {6 * segments} lowercase hex digits")
        count = data.get("led_count")
        return {"rgb": rgb, "segments": segments, "led_count": count if isinstance(count, int) else None}

    @staticmethod
    def _eeg(pod_id: str, data: dict) -> dict:
        samples, channels = data.get("samples"), data.get("channels")
        scale = _num(data.get("scale_uv"))
        if not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS or scale is None:
            raise BadPayload("value", "eeg: channels (1..32) and scale_uv are required")
        if not isinstance(samples, list) or not all(isinstance(r, list) and len(r) == channels for r in samples):
            raise BadPayload("value", f"eeg.samples must be rows of {channels} values")
        columns = [[round(row[c] * scale, 1) for row in samples] for c in range(channels)]
        return {"t": "eeg", "id": pod_id, "seq": data.get("seq"), "rate_hz": _num(data.get("rate_hz")),
                "t_last": _num(data.get("t_host_last")), "gap": bool(data.get("gap")), "uv": columns}

    @staticmethod
    def _bands(pod_id: str, data: dict) -> dict:
        bands, powers = data.get("bands"), data.get("powers")
        if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands) or len(bands) > 16:
            raise BadPayload("value", "bands.bands must be a list of names")
        if not isinstance(powers, list) or not all(isinstance(r, list) and len(r) == len(bands)
                                                   and all(_num(v) is not None for v in r) for r in powers):
            raise BadPayload("value", "bands.powers must be one row of numbers per channel")
        railed = data.get("railed")
        return {"t": "bands", "id": pod_id, "t_host": _num(data.get("t_host")), "bands": [b[:16] for b in bands],
                "powers": powers[:MAX_CHANNELS], "railed": railed if isinstance(railed, list) else []}

    # -- output ---------------------------------------------------------------
    def flush(self) -> None:
        """Emit what changed since the last flush: pods (with their LEDs), circles."""
        dirty, self._dirty_pods = self._dirty_pods, set()
        circles = {c for c in self._dirty_circles}
        for circle in self.circles.values():  # a pod's clock moves its circles' sync error
            if dirty.intersection(circle.pods()):
                circles.add(circle.name)
        self._dirty_circles = set()
        for pod_id in sorted(dirty):
            self.emit(self.pods[pod_id].summary(), None)
        for name in sorted(circles):
            self.emit(self.circles[name].summary(self.pods), None)

    def snapshot(self) -> list[dict[str, Any]]:
        """Everything a page that just connected needs."""
        return ([self.pods[p].summary() for p in sorted(self.pods)]
                + [self.circles[c].summary(self.pods) for c in sorted(self.circles)])

    def known(self, pod_id: str) -> bool:
        return pod_id in self.pods

    def stats(self) -> dict[str, Any]:
        return {"skipped": dict(self.bad), "last_skipped": self.last_bad}
