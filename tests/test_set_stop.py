"""hostd's set commands end to end on real parts: a private mosquitto, hostd recording, one
emulated pod running the real firmware.

In one run: every effect alone is accepted by the pod (each declares a valid default
period); Home Assistant's brightness slider (the template hostd publishes, rendered as Home
Assistant renders it) dims an aurora and leaves it an aurora; a period hostd knows is out of
range is refused before it reaches the pod, and one the pod refuses comes back with the
field and the range it allows; a participant's stop fades the strip to the safe glow within
2 s, holds it, and puts the marker ``stop`` into the recording at the moment it was asked.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import time

import mne
import pytest

from hypnolum.emulator.pod import PodConfig
from hypnolum.emulator.runner import Emulator
from hypnolum.host import commands
from hypnolum.protocol import schema

from helpers.ha_jinja import Env
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods/pod-01"
LEDS = 30


@dataclasses.dataclass
class StrobePodConfig(PodConfig):
    strobe_enabled: bool = True  # pod.json: the strobe effect allowed at all (it still needs the opt-in)


async def answer(watch: Watcher, payload: dict, timeout: float = 10) -> dict:
    """Publish one set command and wait for its result."""
    await watch.publish(f"{P}/set", payload)
    return await wait_until(lambda: next((r for r in watch.all_json(f"{P}/set/result") if r.get("id") == payload["id"]),
                                         None), timeout=timeout, what=f"result of {payload['id']}")


def scene(watch: Watcher) -> dict:
    return (watch.json(f"{P}/state") or {}).get("scene") or {}


async def test_effects_brightness_refusals_and_stop(tmp_path, mosquitto):
    rec = tmp_path / "rec"
    async with Emulator(1, tmp_path / "emu", led_count=LEDS, config=StrobePodConfig(pod_id="pod-01", led_count=LEDS)) as emu:
        pod = emu["pod-01"]
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu",
                      extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n')
        async with Watcher(mosquitto.port, ("hypnolum/v1/#", "homeassistant/#")) as watch:
            hostd.start()
            try:
                await wait_until(lambda: watch.text(f"{P}/availability") == "online", timeout=20, what="online")

                # every effect alone: its default period is one the pod takes
                for name in schema.ENUMS["effect"]:
                    cmd = {"id": f"alone-{name}", "scene": {"effect": name}}
                    if name == "strobe":
                        cmd["scene"]["strobe_opt_in"] = True  # the opt-in is the one thing a strobe needs
                    assert await answer(watch, cmd) == {"id": cmd["id"], "ok": True, "ack": "ok"}, name

                # Home Assistant's slider on an aurora: the aurora stays, only its brightness changes
                aurora = {"effect": "aurora", "palette": "ember", "period_ms": 30000, "params": [12], "brightness": 0.8}
                assert (await answer(watch, {"id": "aurora", "scene": aurora}))["ok"]
                await wait_until(lambda: scene(watch).get("effect") == "aurora", what="aurora in the state")
                light = await wait_until(lambda: watch.json("homeassistant/light/test-host/pod-01_light/config"),
                                         what="Home Assistant light config")
                slider = commands.parse(Env().render(light["command_on_template"], state=True, brightness=77).encode())
                assert slider.scene.effect is None
                await watch.publish(f"{P}/set", Env().render(light["command_on_template"], state=True, brightness=77).encode())
                await wait_until(lambda: scene(watch).get("brightness") == 77, what="the slider's brightness")
                shown = scene(watch)
                assert (shown["effect"], shown["palette"], shown["period_ms"], shown["params"]) == \
                    ("aurora", "ember", 30000, [12]), shown
                ha_results = [r for r in watch.all_json(f"{P}/set/result") if str(r.get("id")).startswith("ha-")]
                assert ha_results and ha_results[-1]["ok"], ha_results

                # refused by hostd: it knows heartbeat's range (counted, hostd goes on)
                bad_before = watch.json(f"{P}/state")["counters"]["host"]["commands_bad"]
                r = await answer(watch, {"id": "slow-heart", "scene": {"effect": "heartbeat", "period_ms": 4000}})
                assert r["ok"] is False and r["field"] == "scene.period_ms" and r["allowed"] == [500, 3000], r
                await wait_until(lambda: watch.json(f"{P}/state")["counters"]["host"]["commands_bad"] > bad_before,
                                 what="the refusal counted")
                # refused by the pod: an aurora's scale param beyond its range, named with the range
                r = await answer(watch, {"id": "wide", "scene": {"effect": "aurora", "params": [999]}})
                assert {k: r.get(k) for k in ("id", "ok", "nack", "field", "allowed")} == \
                    {"id": "wide", "ok": False, "nack": "bad_param", "field": "scene.params.0", "allowed": [1, 64]}, r
                assert "999" in r["error"], r
                assert scene(watch)["effect"] == "aurora"  # unchanged

                # a participant's stop
                t_lit = time.time()
                assert (await answer(watch, {"id": "lit", "scene": {"effect": "solid", "color": [255, 255, 255]}}))["ok"]
                await pod.leds.wait_for(lambda f: min(f.rgb) > 200, timeout=10)
                await asyncio.sleep(1.0)  # some recording before the stop
                t_stop = time.time()
                t0 = time.monotonic()
                r = await answer(watch, {"id": "stop", "stop": True})
                assert r == {"id": "stop", "ok": True, "ack": "ok"}
                await asyncio.sleep(3.0)
                frames = pod.leds.since(t0)
                glow = frames[-1].rgb
                assert max(glow) <= 40 and len(set(frames[-1].pixels())) == 1, frames[-1].pixels()[:3]
                held = len(frames)
                while held and frames[held - 1].rgb == glow:  # the glow from there on, to the end
                    held -= 1
                reached = frames[held].host_time - t0
                print(f"stop: the safe glow {tuple(glow[:3])} reached {reached:.2f} s after the command was sent")
                assert reached <= 2.0, f"safe glow reached after {reached:.2f} s"
                assert frames[-1].host_time - frames[held].host_time > 0.9, "the glow is not held"
                await wait_until(lambda: scene(watch).get("brightness", 255) < 40, what="the glow in the pod state")

                hostd.proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(hostd.proc.wait, 15) == 0
            finally:
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()
    # the marker, in the recording, where the stop was asked
    files = list(rec.glob("*.bdf"))
    assert len(files) == 1, files
    raw = mne.io.read_raw_bdf(files[0], preload=False, verbose="error")
    notes = dict(zip(raw.annotations.description, raw.annotations.onset))
    assert "marker: stop" in notes, sorted(notes)
    lit = [onset for d, onset in zip(raw.annotations.description, raw.annotations.onset)
           if d.startswith("scene: solid brightness 1 color [255, 255, 255]")]
    assert lit, sorted(notes)
    # on the recording's time axis as on the wall clock, from the scene before it
    assert abs((notes["marker: stop"] - lit[-1]) - (t_stop - t_lit)) < 0.3, (notes["marker: stop"], lit, t_stop - t_lit)
