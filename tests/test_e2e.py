"""The walking skeleton end to end, on real parts only.

A private mosquitto, two pods running the real firmware under the real
micropython interpreter (emulator, in this process), and hostd as a
subprocess that reaches the pods through their ptys.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from hypnolum.emulator.runner import Emulator

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods"
PODS = ("pod-01", "pod-02")


@pytest.fixture
async def rig(tmp_path, mosquitto):
    """Emulator with two pods + hostd + an MQTT watcher, all on loopback."""
    async with Emulator(2, tmp_path / "emu") as emu:
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            try:
                for pod in PODS:
                    await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "online", timeout=20,
                                     what=f"{pod} online")
                yield emu, hostd, watch
            finally:
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()


def _eeg(watch, pod):
    return watch.all_json(f"{P}/{pod}/eeg")


async def test_eeg_streams_with_contiguous_sequence_numbers(rig):
    emu, hostd, watch = rig
    start = {pod: len(_eeg(watch, pod)) for pod in PODS}
    await asyncio.sleep(5.0)  # the span we observe, not a wait for a condition
    for pod in PODS:
        batches = _eeg(watch, pod)[start[pod]:]
        assert batches, f"no EEG from {pod}"
        seqs = [(b["seq"], b["n"]) for b in batches]
        for (s0, n0), (s1, _) in zip(seqs, seqs[1:]):
            assert s1 == s0 + n0, f"{pod}: sample {s0 + n0} expected, got {s1}"
        samples = sum(n for _, n in seqs)
        # 5 s at 250 Hz, minus batching at the edges of the window
        assert samples >= 5.0 * 250 * 0.8, f"{pod}: only {samples} samples in 5 s"
        assert all(b["channels"] == 8 and len(b["samples"]) == b["n"] for b in batches)
        assert not any(b["gap"] for b in batches)
    state = watch.json(f"{P}/pod-01/state")
    assert state["link"] == "online" and state["capabilities"]["sample_rate_hz"] == 250


async def test_set_changes_only_that_pods_leds_and_gets_its_result(rig):
    emu, hostd, watch = rig
    other_before = emu["pod-02"].leds.last_rgb()
    t0 = time.monotonic()
    await watch.publish(f"{P}/pod-01/set", {"id": "c1", "scene": {"effect": "solid", "color": [255, 0, 0],
                                                                    "brightness": 1.0}})
    result = await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=5, what="set result")
    assert result == {"id": "c1", "ok": True, "ack": "ok"}
    await emu["pod-01"].leds.wait_for(lambda f: f.all((255, 0, 0)), timeout=5)
    # the other pod kept rendering, and never showed the new colour
    assert emu["pod-02"].leds.since(t0), "pod-02 stopped rendering"
    assert not any(f.all((255, 0, 0)) for f in emu["pod-02"].leds.since(t0))
    assert emu["pod-02"].leds.last_rgb() == other_before


async def test_bad_command_names_the_field_and_hostd_keeps_running(rig):
    emu, hostd, watch = rig
    await watch.publish(f"{P}/pod-01/set", {"id": "bad1", "scene": {"effect": "strobe-party"}})
    result = await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), what="error result")
    assert result["id"] == "bad1" and result["ok"] is False and "effect" in result["field"]
    await watch.publish(f"{P}/pod-01/set", {"id": "c2", "scene": {"effect": "breathe", "color": [0, 0, 255],
                                                                    "brightness": 0.5, "period_ms": 2000}})
    await wait_until(lambda: (watch.json(f"{P}/pod-01/set/result") or {}).get("id") == "c2", what="next result")
    assert watch.json(f"{P}/pod-01/set/result")["ok"] is True


async def test_killing_hostd_turns_pods_offline_through_the_will(rig):
    emu, hostd, watch = rig
    hostd.kill()
    for pod in PODS:
        await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "offline", timeout=10,
                         what=f"{pod} offline by will")


async def test_unplug_and_replug_reconnects(rig):
    emu, hostd, watch = rig
    pod = emu["pod-02"]
    pod.unplug()
    await wait_until(lambda: watch.text(f"{P}/pod-02/availability") == "offline", timeout=10, what="offline")
    assert watch.text(f"{P}/pod-01/availability") == "online"
    seen = len(_eeg(watch, "pod-02"))
    pod.replug()
    await wait_until(lambda: watch.text(f"{P}/pod-02/availability") == "online", timeout=10, what="back online")
    await wait_until(lambda: len(_eeg(watch, "pod-02")) > seen, timeout=10, what="EEG after replug")
