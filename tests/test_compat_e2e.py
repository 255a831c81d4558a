"""Per-message compatibility end to end, on real parts: a private mosquitto, hostd as
a subprocess, and two emulated pods that do not run this checkout's firmware:

* ``pod-old`` runs the firmware exactly as released before HELLO carried a message
  table (git archive of other_firmware.BEFORE_TABLE): hostd finds its schema by fingerprint in
  protocol/known_schemas.json; it streams EEG into a recording and takes a scene.
* ``pod-var`` runs this firmware generated from definitions in which POWER and
  NIGHT_MODE are laid out otherwise: it is online, those two messages are
  unsupported with their reasons, its POWER frames are dropped undecoded (counted,
  logged once), a night command fails at once, and the rest works.
"""
from __future__ import annotations

import asyncio
import re

import pytest

from hypnolum.emulator.pod import EmulatedPod
from hypnolum.protocol import compat, messages, schema

from helpers import other_firmware
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods"
VARIANT = {'"temp_c16" / Int16sl,': '"temp_c16" / Int32sl,', '"start_min" / Int16ul,': '"start_min" / Int32ul,'}
RED = {"effect": "solid", "color": [255, 0, 0], "brightness": 1.0}


def _fingerprint(firmware) -> int:
    return int(re.search(r"^FINGERPRINT = const\((0x[0-9a-f]+)\)", (firmware / "pod" / "wire.py").read_text(),
                         re.M).group(1), 16)


def _state(watch, pod_id: str) -> dict:
    return watch.json(f"{P}/{pod_id}/state") or {}


async def _takes_a_scene(watch, pod: EmulatedPod, cmd_id: str) -> None:
    await watch.publish(f"{P}/{pod.pod_id}/set", {"id": cmd_id, "scene": RED})
    result = await wait_until(lambda: (watch.json(f"{P}/{pod.pod_id}/set/result") or {}).get("id") == cmd_id
                              and watch.json(f"{P}/{pod.pod_id}/set/result"), timeout=10, what=f"{cmd_id} result")
    assert result == {"id": cmd_id, "ok": True, "ack": "ok"}
    await pod.leds.wait_for(lambda f: f.all((255, 0, 0)), timeout=5)
    # the pod's own report of what it shows (SCENE_SHOWN)
    await wait_until(lambda: (_state(watch, pod.pod_id).get("scene") or {}).get("effect") == "solid", timeout=5,
                     what=f"{pod.pod_id} reporting its scene")
    assert _state(watch, pod.pod_id)["scene"]["color"] == [255, 0, 0]


async def test_an_old_pod_and_a_pod_with_other_layouts_work_with_this_host(tmp_path, mosquitto):
    old = other_firmware.released_tree(other_firmware.BEFORE_TABLE, tmp_path / "old")
    var = other_firmware.variant_tree(tmp_path / "var", VARIANT)
    old_fp = _fingerprint(old / "firmware")
    assert old_fp != schema.FINGERPRINT and old_fp in compat.known()
    assert b"MESSAGE_TABLE" not in (old / "firmware" / "pod" / "wire.py").read_bytes()  # no table in its HELLO
    _, var_layouts = other_firmware.layouts_of(var / "protocol")
    var_hash = {name: h for name, h in var_layouts.values()}
    host_hash = {m.name: m.layout_hash for m in schema.MESSAGES}

    emu = tmp_path / "emu"
    pods = [EmulatedPod("pod-old", emu / "pod-old", seed=1, micropypath=other_firmware.micropypath(old / "firmware")),
            EmulatedPod("pod-var", emu / "pod-var", seed=2, micropypath=other_firmware.micropypath(var / "firmware"))]
    rec = tmp_path / "rec"
    hostd = Hostd(tmp_path, mosquitto.port, pods_dir=emu,
                  extra=f'[recorder]\nenabled = true\ndir = "{rec}"\nparticipant = "P001"\n')
    try:
        await asyncio.gather(*(p.start() for p in pods))
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            for pod in pods:
                await wait_until(lambda: watch.text(f"{P}/{pod.pod_id}/availability") == "online", timeout=30,
                                 what=f"{pod.pod_id} online")

            # the old pod: known by its fingerprint, every message usable but the update ones it predates
            s = _state(watch, "pod-old")
            assert s["link"] == "online" and s["fingerprint"] == f"{old_fp:#010x}"
            assert s["unsupported"] == {n: "not known to the pod" for n in messages.UPDATE_MESSAGES}, s["unsupported"]
            await wait_until(lambda: (_state(watch, "pod-old").get("eeg") or {}).get("recording", {}).get("seconds", 0)
                             >= 2, timeout=15, what="two seconds of pod-old's EEG recorded")
            assert list(rec.glob("*pod-old*.bdf")), list(rec.iterdir())
            await _takes_a_scene(watch, pods[0], "old-1")
            assert _state(watch, "pod-old")["counters"]["host"]["frames_unsupported"] == {}

            # the pod with other layouts: online, two messages unsupported, named with both hashes
            s = _state(watch, "pod-var")
            assert s["link"] == "online" and s["reason"] == ""
            assert s["unsupported"] == {
                name: f"layout differs: pod {var_hash[name]:#06x}, host {host_hash[name]:#06x}"
                for name in ("power", "night_mode")
            }
            # its POWER frames (one a second) are dropped undecoded, counted, logged once
            await wait_until(lambda: _state(watch, "pod-var")["counters"]["host"]["frames_unsupported"].get("power", 0)
                             >= 3, timeout=10, what="pod-var's POWER frames dropped")
            assert _state(watch, "pod-var")["power"] is None  # never read with the wrong layout
            assert hostd.log_text().count("pod pod-var: dropping frames of power (layout differs") == 1, hostd.log_text()
            # a command that needs night_mode fails at once, naming pod, message and reason; nothing is sent
            sent = _state(watch, "pod-var")["counters"]["host"]["commands_sent"]
            await watch.publish(f"{P}/pod-var/set", {"id": "var-night", "night": {"mode": "on"}})
            result = await wait_until(lambda: (watch.json(f"{P}/pod-var/set/result") or {}).get("id") == "var-night"
                                      and watch.json(f"{P}/pod-var/set/result"), timeout=10, what="night result")
            assert result["ok"] is False
            assert result["error"] == f"pod pod-var: night_mode is unsupported: {s['unsupported']['night_mode']}"
            assert _state(watch, "pod-var")["counters"]["host"]["commands_sent"] == sent
            # the rest works: EEG streams, a scene is taken
            before = (_state(watch, "pod-var").get("eeg") or {}).get("samples", 0)
            await wait_until(lambda: (_state(watch, "pod-var").get("eeg") or {}).get("samples", 0) >= before + 250,
                             timeout=10, what="pod-var's EEG")
            await _takes_a_scene(watch, pods[1], "var-1")
    finally:
        hostd.kill()
        await asyncio.gather(*(p.stop() for p in pods))
    log = hostd.log_text()
    assert "Traceback" not in log, log
    for pod in pods:
        assert (pod.counters.crashes, pod.counters.watchdog_resets) == (0, 0), pod.tail()
