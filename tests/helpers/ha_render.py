"""Run by a Python that has the ``homeassistant`` package: Home Assistant's own
discovery schemas and template engine applied to what hostd publishes.

Reads JSON from stdin: ``{"configs": [[topic, config], ...], "commands": [variables, ...],
"states": [payload, ...]}``; writes JSON to stdout: the configs as Home Assistant's MQTT
light and sensor discovery schemas accept them (or the error), each command variables'
``command_on_template`` rendering, and for each state payload what the light's and the
sensors' templates render. Used by tests/test_ha_templates.py when ``HYPNOLUM_HA_PYTHON``
names such a Python (the package needs its own environment: it pins its dependencies).
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile


async def main() -> None:
    import homeassistant.bootstrap  # noqa: F401  (imports the integrations' dependencies in order)
    from homeassistant.components.mqtt import light as mqtt_light
    from homeassistant.components.mqtt import sensor as mqtt_sensor
    from homeassistant.const import __version__
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.template import Template

    job = json.load(sys.stdin)
    out: dict = {"version": __version__, "configs": [], "on": [], "off": [], "states": []}
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        try:
            light = None
            sensors = []
            for topic, config in job["configs"]:
                schema = mqtt_light.DISCOVERY_SCHEMA if "/light/" in topic else mqtt_sensor.DISCOVERY_SCHEMA
                try:
                    schema(dict(config))
                    out["configs"].append(None)
                except Exception as exc:  # noqa: BLE001  (reported to the test)
                    out["configs"].append(f"{type(exc).__name__}: {exc}")
                if "/light/" in topic:
                    light = config
                else:
                    sensors.append(config)
            on = Template(light["command_on_template"], hass)
            off = Template(light["command_off_template"], hass)
            for variables in job["commands"]:
                out["on"].append(on.async_render(parse_result=False, state=True, **variables))
                out["off"].append(off.async_render(parse_result=False, state=False,
                                                   **{k: v for k, v in variables.items() if k == "transition"}))
            keys = ("state_template", "brightness_template", "red_template", "green_template", "blue_template",
                    "effect_template")
            for payload in job["states"]:
                row = {k: Template(light[k], hass).async_render_with_possible_json_value(payload) for k in keys}
                row["sensors"] = [Template(s["value_template"], hass).async_render_with_possible_json_value(payload)
                                  for s in sensors]
                out["states"].append(row)
        finally:
            await hass.async_stop(force=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
