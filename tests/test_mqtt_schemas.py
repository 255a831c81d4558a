"""Every payload hostd publishes validates against its JSON schema in docs/schemas/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from hypnolum.host import commands

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
P = "hypnolum/v1/pods"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def schema_for(topic: str) -> str | None:
    if topic.startswith("homeassistant/"):
        return "ha-discovery"
    leaf = topic.split("/", 4)[-1]
    return {"availability": "availability", "state": "pod-state" if "/pods/" in topic else "host-state",
            "eeg": "eeg", "set": "set", "set/result": "set-result"}.get(leaf)


def test_every_schema_is_valid_and_documented():
    doc = (SCHEMAS.parent / "mqtt.md").read_text()
    for path in SCHEMAS.glob("*.json"):
        validator(path.stem)
        assert f"schemas/{path.name}" in doc, f"docs/mqtt.md does not link {path.name}"


@pytest.mark.parametrize("payload", [
    {"scene": {"effect": "off"}},
    {"id": "a", "scene": {"effect": "breathe", "brightness": 0.5, "color": [1, 2, 3], "transition_ms": 9, "period_ms": 9, "params": [1]}},
    {"scene": {"effect": "strobe"}},
    {"scene": {"effect": "solid", "color": [256, 0, 0]}},
    {"scene": {"effect": "solid"}, "extra": 1},
    {"scene": {"effect": "solid", "params": [0] * 9}},
    {"id": "x" * 65, "scene": {"effect": "solid"}},
    {"id": "n", "night": {"mode": "schedule", "start_min": 1320, "end_min": 420}},
    {"night": {"mode": "on", "start_min": 1440}},
    {"id": "s", "scene": {"effect": "aurora", "palette": "ocean", "strobe_opt_in": True}},
    {"id": "e"},
    {"id": "sm", "safe_mode": True},
    {"safe_mode": False},
    {"safe_mode": 1},
    {"safe_mode": True, "scene": {"effect": "off"}},
])
def test_set_schema_agrees_with_hostds_parser(payload):
    by_schema = validator("set").is_valid(payload)
    try:
        commands.parse(json.dumps(payload).encode())
        by_parser = True
    except commands.BadCommand:
        by_parser = False
    assert by_schema == by_parser


@pytest.mark.broker
async def test_real_payloads_validate(tmp_path, mosquitto):
    h = Hostd(tmp_path, mosquitto.port)
    async with Watcher(mosquitto.port, ("hypnolum/v1/#", "homeassistant/#")) as watch:
        h.start()
        pod = FakePod(h.pods_dir / "pod0.tty", pod_id="pod-a")
        pod.plug()
        try:
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=10, what="online")
            await wait_until(lambda: len(watch.history[f"{P}/pod-a/eeg"]) >= 2, what="eeg")
            for cmd in ({"id": "ok1", "scene": {"effect": "solid", "color": [9, 9, 9]}},
                        {"id": "ok1", "scene": {"effect": "solid", "color": [9, 9, 9]}},
                        {"id": "bad", "scene": {"effect": "solid", "color": [999, 0, 0]}}):
                await watch.publish(f"{P}/pod-a/set", cmd)
            await watch.publish(f"{P}/pod-a/set", b"{not json")
            await watch.publish(f"{P}/nobody/set", {"id": "nb", "scene": {"effect": "off"}})
            await wait_until(lambda: len(watch.history[f"{P}/pod-a/set/result"]) >= 4, what="results")
            await wait_until(lambda: watch.history[f"{P}/nobody/set/result"], what="not-connected result")
            await wait_until(lambda: "hypnolum/v1/hosts/test-host/state" in watch.latest, what="host state")
            pod.unplug()
            await wait_until(lambda: (watch.json(f"{P}/pod-a/state") or {}).get("link") == "offline", what="offline state")
        finally:
            h.kill()
    checked: dict[str, int] = {}
    for msg in watch.messages:
        topic = msg.topic.value
        name = schema_for(topic)
        if name is None or topic.endswith("/set"):
            continue
        raw = bytes(msg.payload)
        payload = raw.decode() if name == "availability" else json.loads(raw)
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator(name).iter_errors(payload)]
        assert not errors, (topic, errors, payload)
        checked[name] = checked.get(name, 0) + 1
    assert set(checked) == {"availability", "pod-state", "host-state", "eeg", "set-result", "ha-discovery"}, checked
    results = watch.all_json(f"{P}/pod-a/set/result")
    assert sum(1 for r in results if r.get("duplicate")) == 1 and sum(1 for r in results if r.get("ok")) == 2
