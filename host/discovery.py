"""Home Assistant MQTT discovery: one light and a few diagnostic sensors per pod.

Each pod becomes a device in Home Assistant with

- a light (template schema) whose commands are ordinary hostd ``set``
  commands, so Home Assistant needs no special topic or payload. It offers
  every effect of the protocol. A command carries only what Home Assistant
  changed: the brightness slider or the colour wheel alone send a scene
  without ``effect``, which hostd applies to the scene the pod shows
  (host/commands.py), so an aurora stays an aurora; picking an effect sends
  a new scene of that effect;
- its state read from the pod state's ``scene``, which is what the pod
  reports it shows (set commands, circle timelines, after a restart of
  hostd), null-safe: a pod that has not said yet reads as off;
- diagnostic sensors (``entity_category: diagnostic``): link state,
  round-trip time, EEG samples, channels with good signal, frames lost to
  errors, pod uptime and free memory.

Configs are retained under ``<prefix>/<component>/<host_id>/<pod_id>_<key>/config``;
the host id in the path lets a broker ACL allow each hostd only its own
(``pattern write homeassistant/+/%u/#``). docs/home-assistant.md describes the entities.
"""
from __future__ import annotations

from typing import Any

from ..protocol import schema
from . import topics

EFFECTS: list[str] = list(schema.ENUMS["effect"])  # every effect the pod has, "off" included

# The pod state's scene, null-safe (no scene yet, or a pod state without one): {} then.
_SCENE = ("{% set s = value_json.get('scene') if value_json is mapping else none %}"
          "{% set s = s if s is mapping else {} %}")
_LIT = "s.get('effect', 'off') != 'off'"
# The state message's parts, null-safe: a missing part renders "None" (Home Assistant: unknown).
_V = "{% set v = value_json if value_json is mapping else {} %}"
_HOST = _V + "{% set h = (v.get('counters') or {}).get('host') or {} %}"
_POD = _V + "{% set p = (v.get('counters') or {}).get('pod') or {} %}"
_QUALITY = _V + "{% set q = (v.get('eeg') or {}).get('quality') %}{% set q = q if q is sequence and q is not string else [] %}"

# key -> (name, value template, unit, device_class, state_class)
SENSORS: dict[str, tuple[str, str, str | None, str | None, str | None]] = {
    "link": ("Link", _V + "{{ v.get('link') }}", None, None, None),
    "rtt": ("Round-trip time", _HOST + "{{ h.get('rtt_ms') }}", "ms", "duration", "measurement"),
    "eeg_samples": ("EEG samples", _HOST + "{{ h.get('eeg_samples') }}", None, None, "total_increasing"),
    # channels judged "ok" by hostd's signal quality (unknown until it has judged them)
    "eeg_ok": ("EEG channels with good signal",
               _QUALITY + "{{ q | selectattr('state', 'equalto', 'ok') | list | length if q else none }}",
               None, None, "measurement"),
    "frames_bad": ("Bad frames", _HOST + "{% set b = h.get('frames_bad') %}{{ b.values() | sum if b is mapping else none }}",
                   None, None, "total_increasing"),
    "uptime": ("Pod uptime", _POD + "{% set t = p.get('uptime_ms') %}{{ t // 1000 if t is number else none }}",
               "s", "duration", "measurement"),
    "mem_free": ("Pod free memory", _POD + "{{ p.get('mem_free') }}", "B", "data_size", "measurement"),
}

# Home Assistant passes only what the user changed (brightness 0..255, red/green/blue,
# effect, transition in s); a hostd scene takes brightness 0..1 and transition in ms.
# Without an effect the scene is a change to what the pod shows. Picking "strobe" by name
# is the explicit opt-in a stroboscopic scene needs (the pod's own strobe_enabled still decides).
_ON = (
    '{%- set f = [] -%}'
    '{%- if effect is defined -%}'
    '{%- set f = f + [\'"effect": "\' ~ effect ~ \'"\'] -%}'
    '{%- if effect == \'strobe\' %}{% set f = f + [\'"strobe_opt_in": true\'] %}{% endif -%}'
    '{%- endif -%}'
    '{%- if brightness is defined %}{% set f = f + [\'"brightness": \' ~ ((brightness | int) / 255) | round(3)] %}{% endif -%}'
    '{%- if red is defined and green is defined and blue is defined -%}'
    '{%- set f = f + [\'"color": [\' ~ (red | int) ~ \', \' ~ (green | int) ~ \', \' ~ (blue | int) ~ \']\'] -%}'
    '{%- endif -%}'
    '{%- if transition is defined %}{% set f = f + [\'"transition_ms": \' ~ ((transition | float) * 1000) | int] %}{% endif -%}'
    '{"id": "ha-{{ now().timestamp() }}", "scene": {{ "{" }}{{ f | join(", ") }}{{ "}" }}}'
)
_OFF = ('{"id": "ha-{{ now().timestamp() }}", "scene": {"effect": "off", "transition_ms": '
        '{{ ((transition | float if transition is defined else 0) * 1000) | int }}}}')

# the state the pod reports: "on" while it shows a lit effect
_STATE = _SCENE + "{{ 'on' if " + _LIT + " else 'off' }}"
_BRIGHTNESS = _SCENE + "{{ (s.get('brightness') or 0) | int if " + _LIT + " else 0 }}"
_EFFECT = _SCENE + "{{ s.get('effect') or 'off' }}"


def _channel(i: int) -> str:
    """Red, green or blue of the scene's colour; "None" (Home Assistant: no colour) without one."""
    return (_SCENE + "{% set c = s.get('color') %}"
            "{{ c[" + str(i) + "] if c is sequence and c is not string and c | length == 3 else 'None' }}")


def _uid(host_id: str, pod_id: str, key: str) -> str:
    return f"hypnolum_{host_id}_{pod_id}_{key}"


def config_topic(prefix: str, component: str, host_id: str, pod_id: str, key: str) -> str:
    return f"{prefix}/{component}/{host_id}/{pod_id}_{key}/config"


def device(host_id: str, pod_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "identifiers": [f"hypnolum_{pod_id}"],
        "name": f"Hypnolum pod {pod_id}",
        "manufacturer": "hypnolum",
        "model": "light pod",
        "sw_version": state.get("firmware") or "unknown",
    }


def light_config(host_id: str, pod_id: str, dev: dict[str, Any], avail: dict[str, str]) -> dict[str, Any]:
    """The pod's light: template schema, commands on the pod's ``set`` topic."""
    return {
        "name": None,  # the device name alone
        "unique_id": _uid(host_id, pod_id, "light"),
        "object_id": f"hypnolum_{pod_id}",
        "schema": "template",
        "command_topic": topics.pod(pod_id, "set"),
        "state_topic": topics.pod(pod_id, "state"),
        "command_on_template": _ON,
        "command_off_template": _OFF,
        "state_template": _STATE,
        "brightness_template": _BRIGHTNESS,
        "red_template": _channel(0),
        "green_template": _channel(1),
        "blue_template": _channel(2),
        "effect_template": _EFFECT,
        "effect_list": EFFECTS,
        "qos": 1,
        "device": dev,
        **avail,
    }


def sensor_config(host_id: str, pod_id: str, key: str, dev: dict[str, Any], avail: dict[str, str]) -> dict[str, Any]:
    name, template, unit, device_class, state_class = SENSORS[key]
    cfg: dict[str, Any] = {
        "name": name,
        "unique_id": _uid(host_id, pod_id, key),
        "object_id": f"hypnolum_{pod_id}_{key}",
        "state_topic": topics.pod(pod_id, "state"),
        "value_template": template,
        "entity_category": "diagnostic",
        "device": dev,
    }
    if key != "link":  # the link sensor must show "offline" too
        cfg.update(avail)
    if unit:
        cfg["unit_of_measurement"] = unit
    if device_class:
        cfg["device_class"] = device_class
    if state_class:
        cfg["state_class"] = state_class
    return cfg


def configs(prefix: str, host_id: str, pod_id: str, state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, retained config payload) for one pod."""
    dev = device(host_id, pod_id, state)
    avail = {"availability_topic": topics.pod(pod_id, "availability"), "payload_available": "online",
             "payload_not_available": "offline"}
    out = [(config_topic(prefix, "light", host_id, pod_id, "light"), light_config(host_id, pod_id, dev, avail))]
    for key in SENSORS:
        out.append((config_topic(prefix, "sensor", host_id, pod_id, key), sensor_config(host_id, pod_id, key, dev, avail)))
    return out
