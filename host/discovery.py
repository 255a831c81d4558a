"""Home Assistant MQTT discovery: one light and a few sensors per pod.

Each pod becomes a device in Home Assistant with

- a light (template schema) whose commands are ordinary hostd ``set``
  commands, so Home Assistant needs no special topic or payload;
- sensors: link state, round-trip time, EEG samples, frames lost to errors,
  pod uptime and free memory.

Configs are retained under ``<prefix>/<component>/<host_id>/<pod_id>_<key>/config``;
the host id in the path lets a broker ACL allow each hostd only its own
(``pattern write homeassistant/+/%u/#``).
"""
from __future__ import annotations

from typing import Any

from . import topics

_EFFECTS = ["off", "solid", "breathe"]

# key -> (name, value template, unit, device_class, state_class)
SENSORS: dict[str, tuple[str, str, str | None, str | None, str | None]] = {
    "link": ("Link", "{{ value_json.link }}", None, None, None),
    "rtt": ("Round-trip time", "{{ value_json.counters.host.rtt_ms }}", "ms", "duration", "measurement"),
    "eeg_samples": ("EEG samples", "{{ value_json.counters.host.eeg_samples }}", None, None, "total_increasing"),
    "frames_bad": ("Bad frames", "{{ value_json.counters.host.frames_bad.values() | sum }}", None, None, "total_increasing"),
    "uptime": ("Pod uptime", "{{ (value_json.counters.pod.uptime_ms | default(0)) // 1000 }}", "s", "duration", "measurement"),
    "mem_free": ("Pod free memory", "{{ value_json.counters.pod.mem_free | default(0) }}", "B", "data_size", "measurement"),
}

# Home Assistant's brightness is 0..255; a hostd scene takes 0..1
_ON = ('{"id": "ha-{{ now().timestamp() }}", "scene": {"effect": '
       '"{{ effect if effect is defined and effect != \'off\' else \'solid\' }}", '
       '"brightness": {{ ((brightness if brightness is defined else 255) / 255) | round(3) | float }}, '
       '"color": [{{ red if red is defined else 255 }}, {{ green if green is defined else 255 }}, '
       '{{ blue if blue is defined else 255 }}], "transition_ms": '
       '{{ ((transition if transition is defined else 0) * 1000) | int }}}}')
_OFF = ('{"id": "ha-{{ now().timestamp() }}", "scene": {"effect": "off", "transition_ms": '
        '{{ ((transition if transition is defined else 0) * 1000) | int }}}}')


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


def configs(prefix: str, host_id: str, pod_id: str, state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, retained config payload) for one pod."""
    dev = device(host_id, pod_id, state)
    avail = {"availability_topic": topics.pod(pod_id, "availability"), "payload_available": "online",
             "payload_not_available": "offline"}
    state_topic = topics.pod(pod_id, "state")
    out = [(
        config_topic(prefix, "light", host_id, pod_id, "light"),
        {
            "name": None,  # the device name alone
            "unique_id": _uid(host_id, pod_id, "light"),
            "object_id": f"hypnolum_{pod_id}",
            "schema": "template",
            "command_topic": topics.pod(pod_id, "set"),
            "state_topic": state_topic,
            "command_on_template": _ON,
            "command_off_template": _OFF,
            "state_template": "{{ 'on' if value_json.scene and value_json.scene.effect != 'off' else 'off' }}",
            "brightness_template": "{{ value_json.scene.brightness if value_json.scene else 0 }}",
            "red_template": "{{ value_json.scene.color[0] if value_json.scene else 0 }}",
            "green_template": "{{ value_json.scene.color[1] if value_json.scene else 0 }}",
            "blue_template": "{{ value_json.scene.color[2] if value_json.scene else 0 }}",
            "effect_template": "{{ value_json.scene.effect if value_json.scene else 'off' }}",
            "effect_list": _EFFECTS,
            "qos": 1,
            "device": dev,
            **avail,
        },
    )]
    for key, (name, template, unit, device_class, state_class) in SENSORS.items():
        cfg: dict[str, Any] = {
            "name": name,
            "unique_id": _uid(host_id, pod_id, key),
            "object_id": f"hypnolum_{pod_id}_{key}",
            "state_topic": state_topic,
            "value_template": template,
            "device": dev,
            **avail,
        }
        if key == "link":
            cfg.pop("availability_topic")  # the link sensor must show "offline" too
            cfg.pop("payload_available")
            cfg.pop("payload_not_available")
            cfg["entity_category"] = "diagnostic"
        if unit:
            cfg["unit_of_measurement"] = unit
        if device_class:
            cfg["device_class"] = device_class
        if state_class:
            cfg["state_class"] = state_class
        out.append((config_topic(prefix, "sensor", host_id, pod_id, key), cfg))
    return out
