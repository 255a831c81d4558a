"""The heap at the heaviest configuration, on the board-faithful emulator: 300 LEDs,
16 channels at 125 Hz (the Cyton with its Daisy), circle traffic (pings, group
values, frame phases, scheduled scenes) and scene changes, for 20 s at the
firmware's committed heap. The pod's STATUS mem_free never falls below the floor
(25 % of the budget). bench/pod_heap.py runs the same for 10 minutes through hostd."""
import asyncio
import time

import pytest

from hypnolum.emulator import image
from hypnolum.emulator.pod import EmulatedPod

from helpers.pty_host import PtyHost

pytestmark = pytest.mark.micropython

EFFECTS = ("aurora", "candle", "tide", "alpha_bloom", "circle", "palette_drift")
SCENE = {"brightness": 200, "color": [255, 160, 80], "transition_ms": 800, "period_ms": 6000, "palette": "aurora",
         "flags": 0, "params": []}


async def test_heaviest_configuration_stays_above_the_heap_floor(tmp_path):
    floor = image.heap_budget() // 4
    pod = EmulatedPod("pod-h", tmp_path / "emu" / "pod-h", seed=9, led_count=300, eeg_channels=16)
    await pod.start()
    host = None
    try:
        await pod.wait_link(20)
        host = PtyHost(pod.tty_path)
        host.connect()
        await host.wait_for(lambda f: f.name == "hello", what="HELLO")
        end = time.monotonic() + 20
        i = 0
        pong = None
        while time.monotonic() < end:
            i += 1
            host.send("ping", {"nonce": i, "host_time_us": i})
            host.send("group_value", {"group_id": 1, "value": (i * 977) & 0xFFFF})
            if i % 25 == 0:
                pong = await host.wait_for(lambda f: f.name == "pong" and f.fields["nonce"] == i, what="PONG")
                t = pong.fields["pod_tx_us"]
                host.send("frame_phase", {"anchor_us": t, "period_us": 16667})
                scene = dict(SCENE, effect=EFFECTS[(i // 25) % len(EFFECTS)], at_us=(t + 200000) & 0xFFFFFFFF)
                await host.answer(host.send("scene_at", scene))
            await asyncio.sleep(0.02)
        statuses = [f.fields for f in host.frames if f.name == "status"]
        assert len(statuses) >= 15, len(statuses)
        low = min(s["mem_free"] for s in statuses)
        assert low >= floor, (low, floor)
        assert pod.counters.boots == 1 and pod.counters.crashes == 0, pod.tail()
        assert statuses[-1]["eeg_samples"] > statuses[0]["eeg_samples"]  # the headset streamed throughout
    finally:
        if host is not None:
            host.close()
        await pod.stop()
