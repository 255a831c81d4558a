"""BLE transport at its OS boundary: hostd (Hub, PodSession, BleTransport) talks to the real
firmware in the emulator through a Nordic-UART GATT service on bumble's in-process BLE link."""
from __future__ import annotations

import asyncio
import json

import pytest
from bumble.link import LocalLink

from hypnolum.emulator.runner import Emulator
from hypnolum.host.config import parse
from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.transport.ble import ATT_HEADER, BleTransport, supervise

from helpers.ble_peer import BlePodBridge, BumbleGattLink
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]
P = "hypnolum/v1/pods"


def config(port: int, **ble):
    return parse({
        "host": {"id": "ble-host"},
        "mqtt": {"port": port, "keepalive": 5, "discovery": False},
        "ble": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 5, **ble},
        "pods": {"heartbeat_timeout_s": 1.5, "ping_interval_s": 0.2, "connect_interval_s": 0.1,
                 "command_timeout_s": 0.5, "command_retries": 3},
    })


@pytest.fixture
async def emu(tmp_path):
    async with Emulator(1, tmp_path / "emu", seed=3, led_count=16) as emu:
        await emu.wait_links(20)
        yield emu


@pytest.mark.parametrize("mtu", [None, 185])  # the default ATT MTU (23) and a negotiated one
async def test_pod_over_ble_goes_online_streams_eeg_and_takes_commands(emu, mosquitto, mtu):
    link = LocalLink()
    pod = BlePodBridge(link, emu.ports["pod-01"])
    await pod.start()
    cfg = config(mosquitto.port)
    bridge = MqttBridge(cfg)
    hub = Hub(cfg, bridge)
    transports: list[BleTransport] = []

    async def serve(transport):
        transports.append(transport)
        await hub.serve(transport)

    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(hub.serve_commands()),
             asyncio.create_task(supervise(str(pod.address), cfg.ble, serve,
                                           lambda addr: BumbleGattLink(link, pod.address, want_mtu=mtu)))]
    try:
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="online over BLE")
            state = watch.json(f"{P}/pod-01/state")
            assert state["port"] == f"ble:{pod.address}" and state["link"] == "online"
            await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) >= 5, timeout=30, what="EEG over BLE")
            seqs = [b["seq"] for b in watch.all_json(f"{P}/pod-01/eeg")]
            assert seqs == sorted(seqs)
            await watch.publish(f"{P}/pod-01/set", {"id": "b1", "scene": {"effect": "solid", "color": [0, 0, 200]}})
            await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=10, what="result")
            assert watch.json(f"{P}/pod-01/set/result") == {"id": "b1", "ok": True, "ack": "ok"}
            emu_pod = emu["pod-01"]
            await emu_pod.leds.wait_for(lambda f: all(b > 0 and r == 0 for r, g, b in f.pixels()), timeout=5)
            # MTU-aware chunking: no ATT write over MTU - 3, and frames longer than that were split
            limit = (mtu or 23) - ATT_HEADER
            assert max(len(w) for w in pod.writes) <= limit
            assert max(pod.notifications) == limit  # the pod's telemetry frames are longer than one packet
            frames_sent = sum(w.count(0) for w in pod.writes) // 2  # each frame: leading and trailing delimiter
            if mtu is None:
                assert len(pod.writes) > frames_sent  # at MTU 23 the CONNECT frame takes two writes
            # every chunk the transport wrote reached the pod (pings keep flowing: compare at a quiet moment)
            await wait_until(lambda: transports[-1].chunks_written == len(pod.writes), timeout=5,
                             what="every written chunk at the pod")
            assert transports[-1].notifications_dropped == 0
            # the radio link drops: the pod goes offline, and hostd reconnects by itself
            await pod.drop_link()
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="offline")
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="reconnected")
            assert len(transports) >= 2
            n = len(watch.history[f"{P}/pod-01/eeg"])
            await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) > n + 3, timeout=10, what="EEG again")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await pod.stop()


async def test_unreachable_pod_is_retried_with_backoff(mosquitto):
    link = LocalLink()
    cfg = config(mosquitto.port, connect_timeout_s=0.3)
    attempts = []

    async def serve(transport):
        attempts.append(asyncio.get_running_loop().time())
        with pytest.raises(Exception) as info:
            await transport.open()
        assert "ble:" in str(info.value)

    task = asyncio.create_task(supervise("F0:F0:F0:F0:F0:09", cfg.ble, serve,
                                         lambda addr: BumbleGattLink(link, "F0:F0:F0:F0:F0:09/P")))
    try:
        await wait_until(lambda: len(attempts) >= 3, timeout=10, what="three attempts")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[1] > gaps[0] * 1.3  # backoff grows
