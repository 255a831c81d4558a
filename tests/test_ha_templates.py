"""Home Assistant's templates, rendered against our payloads.

The exact discovery configs hostd publishes (host/discovery.py) are rendered the
way Home Assistant renders them (tests/helpers/ha_jinja.py: its sandbox, its
filters, its handling of undefined values and of the state message): each
command Home Assistant's template light can send must be a set command hostd
takes, meaning what the user did (the brightness slider alone keeps the scene);
each pod state hostd publishes must give the light a valid state, brightness,
colour and effect, and the sensors a value, without undefined-variable
warnings. With ``HYPNOLUM_HA_PYTHON`` naming a Python that has the
``homeassistant`` package (it pins its own dependencies, so it lives in an
environment of its own), the same is done by Home Assistant itself: its
discovery schemas accept the configs and its template engine renders the same.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hypnolum.host import commands, discovery
from hypnolum.host.state import PodState
from hypnolum.protocol import schema

from helpers.ha_jinja import Env, light_state

CONFIGS = discovery.configs("homeassistant", "h1", "pod-a", {"firmware": "0.1.0"})
LIGHT = CONFIGS[0][1]
SENSORS = [cfg for _, cfg in CONFIGS[1:]]

AURORA = {"effect": "aurora", "brightness": 204, "color": [255, 120, 40], "transition_ms": 0, "period_ms": 30000,
          "palette": "ember", "flags": 0, "params": [12], "source": "timeline"}

# what Home Assistant's template light passes to command_on_template (async_turn_on): only what the
# user changed; HS colours become red/green/blue at full value (a brightness template is configured)
COMMANDS = [
    {},  # the toggle
    {"brightness": 77},  # the slider alone
    {"red": 255, "green": 0, "blue": 128, "hue": 330.0, "sat": 100.0},  # the colour wheel alone
    {"effect": "heartbeat"},
    {"effect": "strobe"},
    {"effect": "off"},
    {"brightness": 10, "transition": 2.5},
    {"effect": "breathe", "brightness": 255, "red": 10, "green": 20, "blue": 30, "flash": "short"},
]


def pod_state(scene, *, quality=None, link="online") -> str:
    st = PodState(port="/dev/ttyACM0", pod_id="pod-a", link=link, firmware="0.1.0", led_count=30, eeg_channels=8,
                  sample_rate_hz=250, scene=scene)
    st.counters.rtt_ms = 1.25
    st.counters.eeg_samples = 5000
    st.pod_status = {"uptime_ms": 81000, "mem_free": 51200}
    st.eeg = {"samples": 5000, "quality": quality or []}
    return json.dumps(st.to_json())


OK8 = [{"ch": i, "state": "ok", "rms_uv": 9.5} for i in range(1, 9)]
STATES = [
    pod_state(AURORA, quality=[{**q, "state": "railed", "rms_uv": None} if q["ch"] == 2 else q for q in OK8]),
    pod_state({**AURORA, "effect": "off", "brightness": 0, "source": "set"}),
    pod_state(None),  # hostd has no report from the pod yet
    pod_state({"effect": "solid", "source": "pod"}),  # a scene with fields missing
    json.dumps({"pod_id": "pod-a", "link": "offline"}),  # a state without scene, counters or eeg
    "not json",
]


def test_every_effect_is_offered_and_sensors_are_diagnostic():
    assert LIGHT["effect_list"] == list(schema.ENUMS["effect"]) and len(LIGHT["effect_list"]) == 14
    assert SENSORS and all(s["entity_category"] == "diagnostic" for s in SENSORS)
    assert {s["unique_id"].rsplit("_", 1)[-1] for s in SENSORS} >= {"link", "rtt", "ok", "samples"}


def test_commands_home_assistant_sends_are_set_commands_that_mean_what_the_user_did():
    env = Env()
    shown = {k: v for k, v in AURORA.items() if k != "source"}
    sent = {}
    for variables in COMMANDS:
        payload = env.render(LIGHT["command_on_template"], state=True, **variables)
        cmd = commands.parse(payload.encode())
        (name, fields), = cmd.messages(shown=AURORA)
        assert name == "scene"
        sent[json.dumps(variables)] = fields
    assert not env.warnings
    # the slider alone: the aurora stays, with its palette, colour, period and params; only brightness changes
    assert sent['{"brightness": 77}'] == {**shown, "brightness": 77}
    # the toggle on a lit pod changes nothing; the colour wheel alone keeps the effect
    assert sent["{}"] == shown
    assert sent[json.dumps(COMMANDS[2])] == {**shown, "color": [255, 0, 128]}
    # an effect picked: a new scene of that effect, with its own default period
    assert sent['{"effect": "heartbeat"}']["effect"] == "heartbeat"
    assert sent['{"effect": "heartbeat"}']["period_ms"] == commands.default_period_ms("heartbeat")
    assert sent['{"effect": "strobe"}']["flags"] == 1  # picking strobe by name is the explicit opt-in
    assert sent['{"effect": "off"}']["effect"] == "off"
    assert sent[json.dumps(COMMANDS[6])] == {**shown, "brightness": 10, "transition_ms": 2500}
    # on a dark pod the slider alone lights it: white at that brightness
    dark = commands.parse(env.render(LIGHT["command_on_template"], brightness=128).encode())
    assert dark.messages(shown=None)[0][1]["effect"] == "solid"
    assert dark.messages(shown=None)[0][1]["brightness"] == 128
    off = commands.parse(env.render(LIGHT["command_off_template"], state=False, transition=1.5).encode())
    assert off.messages()[0][1]["effect"] == "off" and off.messages()[0][1]["transition_ms"] == 1500
    off = commands.parse(env.render(LIGHT["command_off_template"], state=False).encode())
    assert off.messages()[0][1]["transition_ms"] == 0


def test_states_hostd_publishes_read_as_what_the_pod_shows():
    env = Env()
    lit, dark, unknown, partial, bare, garbage = (light_state(env, LIGHT, s) for s in STATES)
    assert lit == {"state": "on", "brightness": 204, "rgb": [255, 120, 40], "effect": "aurora"}
    assert dark == {"state": "off", "brightness": 0, "rgb": [255, 120, 40], "effect": "off"}
    assert unknown == {"state": "off", "brightness": 0, "rgb": None, "effect": "off"}
    assert partial == {"state": "on", "brightness": 0, "rgb": None, "effect": "solid"}
    assert bare["state"] == garbage["state"] == "off"
    assert not env.warnings, env.warnings  # null-safe: no undefined variable on any of them
    values = {s["unique_id"].split("pod-a_")[1]: env.render_value(s["value_template"], STATES[0]) for s in SENSORS}
    assert values["eeg_ok"] == "7" and values["rtt"] == "1.25" and values["uptime"] == "81"
    assert values["link"] == "online" and values["frames_bad"] == "0" and values["mem_free"] == "51200"
    # a state without counters or EEG: unknown ("None"), not an error
    bare = {s["unique_id"].split("pod-a_")[1]: env.render_value(s["value_template"], STATES[4]) for s in SENSORS}
    assert bare == {**{k: "None" for k in bare}, "link": "offline"}
    assert not env.warnings, env.warnings


@pytest.mark.skipif(not os.environ.get("HYPNOLUM_HA_PYTHON"), reason="HYPNOLUM_HA_PYTHON names no Python with homeassistant")
def test_home_assistant_itself_accepts_the_configs_and_renders_the_same():
    job = {"configs": CONFIGS, "commands": COMMANDS, "states": STATES}
    helper = Path(__file__).parent / "helpers" / "ha_render.py"
    proc = subprocess.run([os.environ["HYPNOLUM_HA_PYTHON"], str(helper)], input=json.dumps(job), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ha = json.loads(proc.stdout)
    assert ha["configs"] == [None] * len(CONFIGS), ha["configs"]
    env = Env()
    for variables, rendered in zip(COMMANDS, ha["on"]):
        ours = env.render(LIGHT["command_on_template"], state=True, **variables)
        strip_id = lambda s: {k: v for k, v in json.loads(s).items() if k != "id"}  # noqa: E731
        assert strip_id(rendered) == strip_id(ours), variables
        commands.parse(rendered.encode())
    for rendered in ha["off"]:
        assert commands.parse(rendered.encode()).scene.effect == "off"
    keys = ("state_template", "brightness_template", "red_template", "green_template", "blue_template",
            "effect_template")
    for payload, row in zip(STATES, ha["states"]):
        assert [row[k] for k in keys] == [env.render_value(LIGHT[k], payload) for k in keys], payload
        assert row["sensors"] == [env.render_value(s["value_template"], payload) for s in SENSORS], payload
