"""The MQTT set command's light fields: effect names from the protocol, palette, strobe opt-in, night."""
import json

import pytest

from hypnolum.host import commands
from hypnolum.protocol import codec, messages, schema, values


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


def test_each_effect_alone_gets_a_period_in_its_range():
    for name, spec in messages.EFFECT_PERIODS.items():
        (msg, fields), = parse({"scene": {"effect": name}}).messages()
        if spec is None:
            assert fields["period_ms"] == 0, name  # no period: the pod ignores it
        else:
            assert spec[0] <= fields["period_ms"] <= spec[1] and fields["period_ms"] == spec[2], name
    assert set(messages.EFFECT_PERIODS) == set(schema.ENUMS["effect"])


def test_a_period_out_of_the_effects_range_is_refused_with_the_range():
    with pytest.raises(commands.BadCommand) as e:
        parse({"id": "h", "scene": {"effect": "heartbeat", "period_ms": 4000}}).messages()
    assert e.value.result() == {"id": "h", "ok": False, "field": "scene.period_ms", "allowed": [500, 3000],
                                "error": "scene.period_ms: 4000 ms is outside heartbeat's range 500..3000 ms"}
    # a change of the period alone is checked against the effect the pod shows
    with pytest.raises(commands.BadCommand) as e:
        parse({"scene": {"period_ms": 50}}).messages(shown=dict(SHOWN, effect="tide", period_ms=9000))
    assert e.value.allowed == (2000, 65535)


SHOWN = {"effect": "aurora", "brightness": 204, "color": [255, 120, 40], "transition_ms": 500, "period_ms": 30000,
         "palette": "ember", "flags": 0, "params": [12], "source": "timeline", "stopped": False}


def test_a_scene_without_effect_changes_only_what_it_names():
    shown = {k: v for k, v in SHOWN.items() if k not in ("source", "stopped")}
    (_, fields), = parse({"scene": {"brightness": 0.3}}).messages(shown=SHOWN)
    assert fields == {**shown, "brightness": round(0.3 * 255), "transition_ms": 0}  # the transition: the command's
    (_, fields), = parse({"scene": {"color": [1, 2, 3], "transition_ms": 800}}).messages(shown=SHOWN)
    assert fields == {**shown, "color": [1, 2, 3], "transition_ms": 800}
    (_, fields), = parse({"scene": {"palette": "ocean", "params": [3]}}).messages(shown=SHOWN)
    assert (fields["effect"], fields["palette"], fields["params"]) == ("aurora", "ocean", [3])
    # a strobe keeps its opt-in; a lit scene missing fields gets the defaults for them
    (_, fields), = parse({"scene": {"brightness": 0.5}}).messages(shown={"effect": "strobe", "flags": 1, "period_ms": 90})
    assert (fields["effect"], fields["flags"], fields["period_ms"], fields["brightness"]) == ("strobe", 1, 90, 128)
    # nothing known, or dark: white at full brightness, changed by what the command names
    for dark in (None, {}, dict(SHOWN, effect="off"), {"effect": "no-such-effect"}):
        (_, fields), = parse({"scene": {"brightness": 0.5}}).messages(shown=dark)
        assert (fields["effect"], fields["color"], fields["brightness"]) == ("solid", [255, 255, 255], 128), dark
    # with an effect: a new scene, whatever the pod shows
    (_, fields), = parse({"scene": {"effect": "breathe"}}).messages(shown=SHOWN)
    assert fields == {"effect": "breathe", "brightness": 255, "color": [255, 255, 255], "transition_ms": 0,
                      "period_ms": messages.EFFECT_PERIODS["breathe"][2], "palette": "warm", "flags": 0, "params": []}
    with pytest.raises(commands.BadCommand) as e:
        parse({"scene": {"effect": None, "brightness": 0.5}})
    assert e.value.field == "scene.effect"


def test_the_scene_is_one_value_generated_from_the_schema():
    # SCENE, SCENE_AT and SCENE_SHOWN carry it; the host builds, changes and reads it whole
    scene = commands.SceneSpec(effect="tide", brightness=0.5, color=(1, 2, 3), palette="ocean", params=[4, -5]).scene()
    assert isinstance(scene, values.Scene)
    assert scene.NAMES == tuple(f.name for f in schema.RECORDS["scene"].fields)
    assert scene == values.Scene("tide", 128, (1, 2, 3), 0, messages.EFFECT_PERIODS["tide"][2], "ocean", 0, (4, -5))
    for name, extra in (("scene", {}), ("scene_at", {"at_us": 7}), ("scene_shown", {"source": "set", "state": 0})):
        back = codec.decode(codec.encode(name, 1, {**extra, **scene.fields()})).fields
        assert values.Scene.from_fields(back) == scene, name
    # a change keeps what it does not name, from the scene the pod reports
    shown = {**scene.fields(), "source": "set", "stopped": False}
    (msg, fields), = parse({"scene": {"color": [9, 9, 9]}}).messages(shown=shown)
    assert values.Scene.from_fields(fields) == values.Scene("tide", 128, (9, 9, 9), 0, scene.period_ms, "ocean", 0,
                                                            (4, -5))


def test_a_stopped_pod_resumes_only_with_a_whole_scene():
    stopped = dict(SHOWN, effect="solid", stopped=True)
    for change in ({"brightness": 0.8}, {"color": [255, 0, 0]}, {"palette": "ocean"}):
        with pytest.raises(commands.BadCommand) as e:
            parse({"id": "b", "scene": change}).messages(shown=stopped)
        assert e.value.field == "scene.effect" and "stopped" in str(e.value), change
    (_, fields), = parse({"scene": {"effect": "aurora", "brightness": 0.4}}).messages(shown=stopped)
    assert (fields["effect"], fields["brightness"]) == ("aurora", 102)


def test_stop_goes_alone_and_sends_fade_safe():
    assert parse({"id": "s", "stop": True}).messages() == [("fade_safe", {})]
    codec.encode("fade_safe", 1, {})
    for obj, field in (({"stop": False}, "stop"), ({"stop": 1}, "stop"), ({"stop": None}, "stop"),
                       ({"stop": True, "scene": {"effect": "off"}}, None),
                       ({"stop": True, "night": {"mode": "on"}}, None), ({"stop": True, "safe_mode": True}, None)):
        with pytest.raises(commands.BadCommand) as e:
            parse(obj)
        assert e.value.field == field, obj


def test_a_field_the_pod_names_is_given_as_the_command_names_it():
    fields = {"effect": "aurora", "brightness": 128, "params": [999], "period_ms": 10}
    assert commands.refused_field("scene", "params.0", [1, 64], fields) == \
        ("scene.params.0", [1, 64], "scene.params.0: 999 was sent")
    assert commands.refused_field("scene", "brightness", [0, 51], fields) == \
        ("scene.brightness", [0.0, 0.2], "scene.brightness: 0.502 was sent")
    assert commands.refused_field("night_mode", "start_min", [0, 1439], {"start_min": 2000})[0] == "night.start_min"
