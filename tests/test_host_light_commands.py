"""The MQTT set command's light fields: effect names from the protocol, palette, strobe opt-in, night."""
import json

import pytest

from hypnolum.host import commands
from hypnolum.protocol import codec, schema


def parse(obj):
    return commands.parse(json.dumps(obj).encode())


def test_every_protocol_effect_name_is_accepted_and_encodes():
    for name in schema.ENUMS["effect"]:
        cmd = parse({"scene": {"effect": name, "palette": "ocean", "params": [1, 2]}})
        (msg, fields), = cmd.messages()
        assert msg == "scene" and fields["effect"] == name and fields["palette"] == "ocean"
        codec.encode("scene", 1, fields)  # the wire accepts it


def test_strobe_opt_in_sets_the_flag_only_when_asked():
    on = parse({"scene": {"effect": "strobe", "period_ms": 100, "strobe_opt_in": True}})
    off = parse({"scene": {"effect": "strobe", "period_ms": 100}})
    assert on.messages()[0][1]["flags"] == 1 and off.messages()[0][1]["flags"] == 0
    with pytest.raises(commands.BadCommand) as e:
        parse({"scene": {"effect": "strobe", "strobe_opt_in": 1}})  # a bool, not a truthy number
    assert e.value.field == "scene.strobe_opt_in"


def test_night_goes_before_the_scene_with_the_hosts_minute():
    cmd = parse({"id": "n1", "night": {"mode": "schedule", "start_min": 1290}, "scene": {"effect": "candle"}})
    msgs = cmd.messages(now_min=1300)
    assert [m for m, _ in msgs] == ["night_mode", "scene"]
    assert msgs[0][1] == {"mode": "schedule", "start_min": 1290, "end_min": 420, "now_min": 1300}
    codec.encode("night_mode", 1, msgs[0][1])


def test_bad_light_fields_name_the_field():
    for obj, field in (
        ({"scene": {"effect": "lava"}}, "scene.effect"),
        ({"scene": {"effect": "aurora", "palette": "neon"}}, "scene.palette"),
        ({"night": {"mode": "schedule", "end_min": 1440}}, "night.end_min"),
    ):
        with pytest.raises(commands.BadCommand) as e:
            parse(obj)
        assert e.value.field == field, obj
    with pytest.raises(commands.BadCommand, match="scene and/or night"):
        parse({"id": "x"})
