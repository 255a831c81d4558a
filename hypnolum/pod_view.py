"""A pod's state (``hypnolum/v1/pods/<id>/state``, docs/mqtt.md) in words.

Shared by ``hypnolum get`` (every detail, one topic per line) and ``hypnolum
monitor`` (one short cell per topic). Every function takes the state's JSON as
hostd publishes it and copes with missing or null parts: an older hostd, a pod
that has not sent everything yet, or a payload some other client retained.
"""
from __future__ import annotations

from typing import Any

# POWER_FLAG_* (protocol/messages.py): what the pod's light governor is doing, (words, short words)
_POWER_FLAGS = (
    (0x04, "dark: too hot", "dark:hot"),
    (0x10, "dark: 5 V rail too low", "dark:5V"),
    (0x02, "derating: hot", "derate:hot"),
    (0x08, "derating: 5 V rail low", "derate:5V"),
    (0x01, "no temperature reading (derated to the floor)", "no-temp"),
    (0x20, "5 V rail unreadable", "VIN?"),
)
QUALITY_MARK = {"ok": "o", "railed": "R", "flat": "F", "noisy": "N"}
QUALITY_LEGEND = "EEG quality per channel: o ok, R railed, F flat, N noisy, ? unknown"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def scene(state: dict[str, Any]) -> dict[str, Any]:
    """The scene the pod shows: ``scene`` if hostd has one, else effect and brightness from
    the pod's own STATUS (``counters.pod``)."""
    shown = _dict(state.get("scene"))
    if shown.get("effect"):
        return shown
    pod = _dict(_dict(state.get("counters")).get("pod"))
    if pod.get("effect"):
        return {"effect": pod["effect"], "brightness": pod.get("brightness")}
    return {}


def brightness_pct(state: dict[str, Any]) -> str:
    """Brightness as a percentage of full (wire units 0..255), or "-"."""
    value = _num(scene(state).get("brightness"))
    return "-" if value is None else f"{value / 255 * 100:.0f}%"


def effect(state: dict[str, Any]) -> str:
    shown = scene(state)
    return str(shown.get("effect") or "-")


def scene_words(state: dict[str, Any]) -> str:
    """Every detail of the scene, for ``get``."""
    shown = scene(state)
    if not shown:
        return "unknown (the pod has not reported a scene)"
    parts = [str(shown.get("effect"))]
    if (value := _num(shown.get("brightness"))) is not None:
        parts.append(f"brightness {value / 255:.2f} ({value:.0f}/255)")
    color = shown.get("color")
    if isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) for c in color):
        parts.append("color #{:02x}{:02x}{:02x}".format(*color))
    if shown.get("palette"):
        parts.append(f"palette {shown['palette']}")
    if (period := _num(shown.get("period_ms"))):  # 0: an effect without a period
        parts.append(f"period {period / 1000:g} s")
    if (transition := _num(shown.get("transition_ms"))):
        parts.append(f"transition {transition / 1000:g} s")
    if shown.get("params"):
        parts.append(f"params {shown['params']}")
    if shown.get("source"):
        parts.append(f"(source: {shown['source']})")
    elif not _dict(state.get("scene")).get("effect"):
        parts.append("(from the pod's status: it has not reported its scene)")
    return "  ".join(parts)


def safety(state: dict[str, Any], short: bool = False) -> list[str]:
    """What limits the light now (``short``: a word each, for a table cell); empty when nothing does."""
    out: list[str] = []
    flags = _num(_dict(state.get("power")).get("flags"))
    for bit, words, word in _POWER_FLAGS:
        if flags is not None and int(flags) & bit:
            out.append(word if short else words)
    shown = _dict(state.get("scene"))
    held = []
    for key, words, word in (("stopped", "stopped (a participant's stop: the safe glow, held)", "stopped"),
                             ("link_safe", "faded to safe after link silence", "link-safe"),
                             ("night", "night limits", "night")):
        if shown.get(key) is True:
            held.append(word if short else words)
    return held + out


def power_words(state: dict[str, Any]) -> str:
    power = _dict(state.get("power"))
    if not power:
        return "no POWER report yet"
    parts = []
    limit, full = _num(power.get("limit_ma")), _num(power.get("full_ma"))
    if limit is not None and full is not None:
        parts.append(f"LED limit {limit:.0f} of {full:.0f} mA")
    temp = _num(power.get("temp_c16"))
    if temp is not None:
        parts.append("temperature unknown" if temp == -32768 else f"{temp / 16:.1f} °C")
    vin = _num(power.get("vin_mv"))
    if vin is not None:
        parts.append("5 V rail unreadable" if vin == 0 else f"5 V rail {vin / 1000:.2f} V")
    return "  ".join(parts)


def quality_marks(state: dict[str, Any]) -> str:
    """One character per EEG channel (see QUALITY_LEGEND); "-" without a quality report."""
    quality = _dict(state.get("eeg")).get("quality")
    if not isinstance(quality, list) or not quality:
        return "-"
    return "".join(QUALITY_MARK.get(_dict(q).get("state"), "?") for q in quality)


def quality_words(state: dict[str, Any]) -> str:
    quality = _dict(state.get("eeg")).get("quality")
    if not isinstance(quality, list) or not quality:
        return "no signal-quality report"
    parts = []
    for q in quality:
        q = _dict(q)
        rms = _num(q.get("rms_uv"))
        parts.append(f"{q.get('ch', '?')} {q.get('state', '?')}" + (f" {rms:.1f} µV" if rms is not None else ""))
    return ", ".join(parts)


def clock_words(state: dict[str, Any], short: bool = False) -> str:
    clock = _dict(state.get("clock"))
    if not clock:
        return "-" if short else "no clock estimate"
    unc = _num(clock.get("uncertainty_us"))
    if not clock.get("synced") or unc is None:
        return "unsynced" if short else f"not synced yet ({clock.get('exchanges', 0)} exchanges)"
    text = f"±{unc / 1000:.1f} ms"
    if short:
        return text
    drift = _num(clock.get("drift_ppm"))
    return f"synced {text}" + (f"  drift {drift:+.1f} ppm" if drift is not None else "") + \
        f"  ({clock.get('exchanges', 0)} exchanges, {clock.get('rejected', 0)} rejected)"


def eeg_words(state: dict[str, Any]) -> str:
    caps = _dict(state.get("capabilities"))
    eeg = _dict(state.get("eeg"))
    parts = []
    if caps.get("eeg_channels") is not None:
        parts.append(f"{caps['eeg_channels']} ch @ {caps.get('sample_rate_hz')} Hz")
    if eeg:
        parts.append(f"samples {eeg.get('samples', 0)}")
        parts.append(f"lost {eeg.get('samples_lost', 0)}")
        parts.append(f"gaps {eeg.get('gaps_filled', 0)} filled / {eeg.get('gaps_unfilled', 0)} unfilled")
        if eeg.get("railed"):
            parts.append(f"railed {eeg['railed']}")
        recording = _dict(eeg.get("recording"))
        if recording.get("file"):
            parts.append(f"recording {recording['file']} ({recording.get('seconds', 0)} s)")
    return "  ".join(parts) or "no EEG yet"


def counters_words(state: dict[str, Any]) -> str:
    host = _dict(_dict(state.get("counters")).get("host"))
    if not host:
        return "-"
    bad = host.get("frames_bad")
    n_bad = sum(v for v in bad.values() if isinstance(v, int)) if isinstance(bad, dict) else 0
    rtt = _num(host.get("rtt_ms"))
    return (f"frames {host.get('frames_rx', 0)} rx / {n_bad} bad  "
            f"commands {host.get('commands_sent', 0)} sent / {host.get('commands_retried', 0)} retried / "
            f"{host.get('commands_failed', 0)} failed / {host.get('commands_bad', 0)} bad  "
            f"reconnects {host.get('reconnects', 0)}  reboots {host.get('reboots', 0)}"
            + (f"  rtt {rtt:.2f} ms" if rtt is not None else ""))


def pod_words(state: dict[str, Any]) -> str:
    pod = _dict(_dict(state.get("counters")).get("pod"))
    if not pod:
        return "-"
    uptime = _num(pod.get("uptime_ms")) or 0
    return (f"uptime {uptime / 1000:.0f} s  free memory {pod.get('mem_free', '?')} B  "
            f"frames {pod.get('frames_rendered', 0)} rendered / {pod.get('render_overruns', 0)} overruns")
