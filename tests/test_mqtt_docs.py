"""docs/mqtt.md as a user reads it: its JSON examples match the schemas and what hostd
publishes, and its "Try it" lines, run exactly as written, work against a real mosquitto,
a real hostd and an emulated pod."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from hypnolum.emulator.runner import Emulator

from helpers.doc_lines import blocks, json_example, section, shell_line
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
P = "hypnolum/v1/pods"


def errors(schema: str, payload) -> list[str]:
    v = Draft202012Validator(json.loads((SCHEMAS / f"{schema}.json").read_text()), format_checker=FormatChecker())
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(payload)]


def test_the_documented_payloads_match_their_schemas():
    assert errors("pod-state", json_example("Pod state", '{\n  "pod_id"')) == []
    assert errors("host-state", json_example("Commands", '{"host_id"')) == []
    assert errors("leds", json_example("Live LED colours", '{"led_count"')) == []
    checked = {"set": 0, "set-result": 0}
    for block in blocks(section("Commands"), "json"):
        try:
            payloads = [json.loads(block)]
        except ValueError:  # one payload a line
            payloads = [json.loads(line) for line in block.splitlines() if "..." not in line]
        for payload in payloads:
            if "id" in payload:
                name = "set-result" if "ok" in payload else "set"
                assert errors(name, payload) == [], payload
                checked[name] += 1
    assert checked["set"] >= 3 and checked["set-result"] >= 8, checked


def _keys(a: dict, b: dict, path: str = "") -> list[str]:
    """Where two payloads' keys differ (objects only, recursively)."""
    out = [f"{path}{k}: {'only in the doc' if k in a else 'only in what hostd sent'}" for k in set(a) ^ set(b)]
    for k in set(a) & set(b):
        if isinstance(a[k], dict) and isinstance(b[k], dict) and k not in ("frames_bad", "busy", "handler_failures",
                                                                           "restarts", "pod"):
            out += _keys(a[k], b[k], f"{path}{k}.")
    return out


async def _sh(line: str, port: int, timeout: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("bash", "-c", line, env={**os.environ, "PORT": str(port)},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def _line_starting(proc: asyncio.subprocess.Process, prefix: str, timeout: float = 10) -> str:
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, f"the subscriber ended before printing {prefix!r}"
            if line.startswith(prefix):
                return line.strip()


@pytest.mark.broker
@pytest.mark.micropython
async def test_the_try_it_lines_work_as_written(tmp_path, mosquitto):
    """The demo's host id is demo-host and its first pod pod-01, as the lines assume."""
    demo = blocks(section("Try it"), "sh")[0]
    port = mosquitto.port
    async with Emulator(1, tmp_path / "emu") as emu:
        hostd = Hostd(tmp_path, port, pods_dir=tmp_path / "emu", host_id="demo-host")
        async with Watcher(port) as watch:
            hostd.start()
            results = None
            try:
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="online")
                await wait_until(lambda: "hypnolum/v1/hosts/demo-host/state" in watch.latest, what="host state")
                # the results, as a second terminal shows them (-d added: its SUBACK says when it
                # listens; stdbuf: a terminal's line buffering)
                results = await asyncio.create_subprocess_exec(
                    "stdbuf", "-oL", "bash", "-c", shell_line(demo, "mosquitto_sub", "set/result") + " -d",
                    env={**os.environ, "PORT": str(port)}, stdout=asyncio.subprocess.PIPE, start_new_session=True)
                await _line_starting(results, "Subscribed")
                rc, out = await _sh(shell_line(demo, "mosquitto_pub", "/set "), port)
                assert rc == 0, out
                line = await _line_starting(results, f"{P}/pod-01/set/result ")
                assert line == f'{P}/pod-01/set/result {{"id":"try-1","ok":true,"ack":"ok"}}', line
                await wait_until(lambda: (watch.json(f"{P}/pod-01/state") or {}).get("counters", {}).get("pod", {})
                                 .get("effect") == "aurora", timeout=5, what="the pod showing aurora")
                # MQTT 5 request/response in one line
                rc, out = await _sh(shell_line(demo, "mosquitto_rr"), port)
                assert rc == 0 and out.strip() == '{"id":"try-2","ok":true,"ack":"ok"}', out
                await emu["pod-01"].leds.wait_for(lambda f: len(set(f.pixels())) == 1 and f.pixel(0)[0] > f.pixel(0)[1]
                                                  > f.pixel(0)[2], timeout=5)
                # the retained states, once each (the clock synced): as documented, and as the schemas say
                await wait_until(lambda: ((watch.json(f"{P}/pod-01/state") or {}).get("clock") or {}).get("synced"),
                                 timeout=10, what="the pod clock synced")
                rc, out = await _sh(shell_line(demo, "mosquitto_sub", "-C 1", "pods/pod-01/state"), port)
                state = json.loads(out)
                assert rc == 0 and state["link"] == "online" and errors("pod-state", state) == [], out
                assert _keys(json_example("Pod state", '{\n  "pod_id"'), state) == [], state
                rc, out = await _sh(shell_line(demo, "mosquitto_sub", "-C 1", "hosts/demo-host/state"), port)
                host = json.loads(out)
                assert rc == 0 and errors("host-state", host) == [] and host["pods"] == ["pod-01"], out
                assert _keys(json_example("Commands", '{"host_id"'), host) == []
                # the live LED colours, as documented
                leds = await wait_until(lambda: watch.json(f"{P}/pod-01/leds"), timeout=5, what="leds")
                assert errors("leds", leds) == [] and len(leds["rgb"]) == 6 * leds["segments"], leds
                assert set(leds) == set(json_example("Live LED colours", '{"led_count"')), leds
                rc, out = await _sh(shell_line(demo, "mosquitto_pub", "/marker "), port)
                assert rc == 0, out
                await wait_until(lambda: watch.json(f"{P}/pod-01/marker/result") == {"ok": True}, what="marker result")
            finally:
                if results is not None and results.returncode is None:
                    os.killpg(results.pid, signal.SIGTERM)
                    await results.wait()
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()


@pytest.mark.parametrize("payload", [
    {"stop": True}, {"id": "s", "stop": True}, {"stop": False}, {"stop": 1}, {"stop": True, "scene": {"effect": "off"}},
    {"stop": True, "night": {"mode": "on"}}, {"stop": True, "safe_mode": True},
    {"scene": {"brightness": 0.3}}, {"scene": {"palette": "ocean", "transition_ms": 500}}, {"scene": {"effect": None}},
    {"scene": {"effect": "heartbeat"}},
])
def test_the_set_schema_takes_what_hostd_takes(payload):
    """The stop command and scenes without an effect (a change to the scene shown)."""
    from hypnolum.host import commands

    try:
        commands.parse(json.dumps(payload).encode())
        by_parser = True
    except commands.BadCommand:
        by_parser = False
    assert (errors("set", payload) == []) == by_parser, payload
