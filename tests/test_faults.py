"""Fault suite: hostd against the emulated firmware survives broker restarts, unplugging, its own
SIGKILL, pod reboots and bit errors on the link, and recovers every time: pods online again,
EEG flowing, commands acknowledged, counters sane."""
from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from hypnolum.emulator.runner import Emulator

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods"
PODS = ("pod-01", "pod-02")
FRAME_ERRORS = {"crc", "cobs", "short", "oversize", "version", "unknown_type", "payload", "value"}


class Rig:
    def __init__(self, emu, hostd, broker):
        self.emu, self.hostd, self.broker = emu, hostd, broker

    async def recovered(self, watch: Watcher, pods=PODS, timeout: float = 30) -> None:
        """Online, EEG flowing, a command acknowledged and the LEDs showing it, counters sane."""
        for pod in pods:
            await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "online", timeout=timeout,
                             what=f"{pod} online")
            n = len(watch.history[f"{P}/{pod}/eeg"])
            await wait_until(lambda: len(watch.history[f"{P}/{pod}/eeg"]) >= n + 5, timeout=10, what=f"{pod} EEG")
            color = [random.randrange(1, 60), 0, random.randrange(1, 60)]
            cmd_id = uuid.uuid4().hex[:12]
            await watch.publish(f"{P}/{pod}/set", {"id": cmd_id, "scene": {"effect": "solid", "color": color}})

            def result():
                return next((r for r in watch.all_json(f"{P}/{pod}/set/result") if r["id"] == cmd_id), None)

            res = await wait_until(result, timeout=10, what=f"{pod} command result")
            assert res["ok"], res
            await self.emu[pod].leds.wait_for(lambda f: f.pixels() and all(g == 0 and r > 0 and b > 0 for r, g, b in f.pixels()),
                                              timeout=5)
            state = await wait_until(lambda: (s := watch.json(f"{P}/{pod}/state")) and s["scene"] and s["scene"]["color"] == color
                                     and s, what=f"{pod} state with the new scene")
            assert state["link"] == "online"
            host = state["counters"]["host"]
            assert set(host["frames_bad"]) <= FRAME_ERRORS
            assert all(v >= 0 for v in host.values() if isinstance(v, int))
            assert host["eeg_samples"] > 0 and host["frames_rx"] > host["eeg_batches"]
        assert "Traceback" not in self.hostd.log_text(), self.hostd.log_text()[-3000:]


@pytest.fixture
async def rig(tmp_path, mosquitto):
    async with Emulator(2, tmp_path / "emu", seed=11, led_count=12) as emu:
        await emu.wait_links(20)
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        hostd.start()
        try:
            yield Rig(emu, hostd, mosquitto)
        finally:
            hostd.kill()


async def test_broker_restart(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
    rig.broker.stop()
    await asyncio.sleep(1.5)  # hostd is cut off for a while, retrying with backoff
    rig.broker.start()  # same port, empty (no persistence): hostd must republish everything
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        assert watch.text("hypnolum/v1/hosts/test-host/availability") == "online"
    assert "retrying" in rig.hostd.log_text()


async def test_pod_unplug_and_replug(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        pod = rig.emu["pod-01"]
        pod.unplug()
        await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="offline")
        n = len(watch.history[f"{P}/pod-02/eeg"])
        await asyncio.sleep(1.0)
        assert len(watch.history[f"{P}/pod-02/eeg"]) > n  # the other pod never noticed
        pod.replug()
        await rig.recovered(watch)


async def test_hostd_sigkill_and_restart_with_a_command_queued_meanwhile(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        rig.hostd.kill()
        for pod in PODS:
            await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "offline", timeout=10, what="will")
        # the broker holds hostd's persistent session: a QoS 1 command sent now is delivered after the restart
        await watch.publish(f"{P}/pod-02/set", {"id": "while-dead", "scene": {"effect": "solid", "color": [0, 99, 0]}})
        rig.hostd.start()
        await wait_until(lambda: any(r["id"] == "while-dead" for r in watch.all_json(f"{P}/pod-02/set/result")),
                         timeout=20, what="the queued command carried out")
        assert next(r for r in watch.all_json(f"{P}/pod-02/set/result") if r["id"] == "while-dead")["ok"]
        await rig.emu["pod-02"].leds.wait_for(lambda f: f.pixels() and all(g > 0 and r == 0 for r, g, b in f.pixels()),
                                              timeout=5)
        await rig.recovered(watch)


async def test_pod_reboot(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        boots = rig.emu["pod-01"].counters.boots
        await rig.emu["pod-01"].reboot()
        assert rig.emu["pod-01"].counters.boots == boots + 1
        await wait_until(lambda: watch.json(f"{P}/pod-01/state")["counters"]["host"]["reboots"] >= 1, timeout=20,
                         what="reboot seen by hostd")
        assert watch.json(f"{P}/pod-01/state")["scene"] is None  # the rebooted pod no longer shows the old scene
        await rig.recovered(watch)
        assert watch.json(f"{P}/pod-02/state")["counters"]["host"]["reboots"] == 0


class BitErrors:
    """Flip each bit with probability ``ber`` (independently), counting the flips."""

    def __init__(self, ber: float, seed: int):
        self.ber = ber
        self.rng = random.Random(seed)
        self.bits = 0
        self.flips = 0
        self._next = self.rng.expovariate(ber)  # bits until the next error

    def __call__(self, data: bytes) -> bytes:
        out = None
        n_bits = len(data) * 8
        while self._next < n_bits:
            pos = int(self._next)
            out = out or bytearray(data)
            out[pos // 8] ^= 1 << (pos % 8)
            self.flips += 1
            self._next += 1 + self.rng.expovariate(self.ber)
        self._next -= n_bits
        self.bits += n_bits
        return bytes(out) if out is not None else data


async def test_bit_errors_at_1e_4(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        filters = []
        for i, pod in enumerate(PODS):
            up, down = BitErrors(1e-4, seed=i), BitErrors(1e-4, seed=100 + i)
            rig.emu[pod].to_host_filter, rig.emu[pod].to_pod_filter = up, down
            filters += [up, down]
        # under errors: still online, EEG flowing, commands acknowledged (re-sent when a frame is hit)
        await asyncio.sleep(4.0)
        await rig.recovered(watch)
        assert sum(f.flips for f in filters) >= 10, [(f.bits, f.flips) for f in filters]
        bad = {pod: watch.json(f"{P}/{pod}/state")["counters"]["host"]["frames_bad"] for pod in PODS}
        assert any(sum(b.values()) for b in bad.values()), bad  # the damage was seen and counted
        for pod in PODS:
            rig.emu[pod].to_host_filter = rig.emu[pod].to_pod_filter = None
        await rig.recovered(watch)
