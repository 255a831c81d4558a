"""USB transport at its OS boundary: pyusb over a fake libusb backend whose virtual device's
bulk endpoints carry the emulated firmware's pod link; hostd's own session and hub run unchanged."""
from __future__ import annotations

import asyncio

import pytest

from hypnolum.emulator.runner import Emulator
from hypnolum.host.config import parse
from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.transport.usb import UsbScanner

from helpers.fake_usb import FakeBackend, VirtualPodDevice
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]
P = "hypnolum/v1/pods"


@pytest.fixture
async def emu(tmp_path):
    async with Emulator(2, tmp_path / "emu", seed=5, led_count=16) as emu:
        await emu.wait_links(20)
        yield emu


async def test_usb_pods_are_discovered_by_vid_pid_serial_reset_and_served(emu, mosquitto):
    ours = VirtualPodDevice(emu.ports["pod-01"], 0x303A, 0x4001, "A1", address=5)
    other_serial = VirtualPodDevice(emu.ports["pod-02"], 0x303A, 0x4001, "ZZ", address=6)  # not in the config
    stranger = VirtualPodDevice("/dev/null", 0x1234, 0x5678, "X", address=7)  # another product
    backend = FakeBackend([ours, other_serial, stranger])
    cfg = parse({
        "host": {"id": "usb-host"},
        "mqtt": {"port": mosquitto.port, "keepalive": 5, "discovery": False},
        "usb": {"devices": [{"vid": 0x303A, "pid": 0x4001, "serial": "A1"}], "scan_interval_s": 0.1},
        "pods": {"heartbeat_timeout_s": 1.0, "ping_interval_s": 0.2, "connect_interval_s": 0.1,
                 "command_timeout_s": 0.5, "command_retries": 3},
    })
    bridge = MqttBridge(cfg)
    hub = Hub(cfg, bridge)
    scanner = UsbScanner(cfg.usb, hub.serve, backend=backend)
    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(hub.serve_commands()),
             asyncio.create_task(scanner.run())]
    try:
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="online over USB")
            assert watch.json(f"{P}/pod-01/state")["port"] == "usb:1-5"
            assert ours.resets == 1 and ours.claimed == {0} and ours.configuration == 1
            assert other_serial.resets == 0 and stranger.resets == 0 and list(scanner.active) == ["1-5"]
            await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) >= 5, timeout=10, what="EEG over USB")
            await watch.publish(f"{P}/pod-01/set", {"id": "u1", "scene": {"effect": "solid", "color": [0, 150, 0]}})
            await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=10, what="result")
            assert watch.json(f"{P}/pod-01/set/result") == {"id": "u1", "ok": True, "ack": "ok"}
            await emu["pod-01"].leds.wait_for(lambda f: all(g > 0 and r == 0 and b == 0 for r, g, b in f.pixels()),
                                              timeout=5)
            # unplug: the session ends and the pod goes offline; replugged, it is found again without a restart
            ours.unplug()
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="offline")
            await wait_until(lambda: not scanner.active, timeout=5, what="session ended")
            ours.replug(address=9)
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="replugged")
            assert watch.json(f"{P}/pod-01/state")["port"] == "usb:1-9" and ours.resets == 2
            assert "pod-02" not in hub.pods
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        for d in (ours, other_serial):
            d.close()
