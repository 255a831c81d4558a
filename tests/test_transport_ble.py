"""BLE end to end at its OS boundary: hostd (Hub, PodSession, BleTransport) and the emulated
pod's own firmware (pod/ble.py: GATT service, advertising, bonding; pod/ports.py: the one link)
over bumble's in-process link. The pod's radio is a bumble Device driven by the firmware's
bluetooth calls (emulator/ble_radio.py); hostd's central stands in for BlueZ."""
from __future__ import annotations

import asyncio

import pytest
from bumble.link import LocalLink

from hypnolum.emulator.pod import EmulatedPod, PodConfig
from hypnolum.host.config import parse
from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.transport import TransportError
from hypnolum.host.transport.ble import ATT_HEADER, NUS_RX, NUS_TX, BleTransport, supervise

from helpers.ble_peer import BumbleGattLink, CentralKeyStore
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.timeout(90)]
P = "hypnolum/v1/pods"


def config(port: int, **ble):
    return parse({
        "host": {"id": "ble-host"},
        "mqtt": {"port": port, "keepalive": 5, "discovery": False},
        "ble": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 5, **ble},
        "pods": {"heartbeat_timeout_s": 1.5, "ping_interval_s": 0.2, "connect_interval_s": 0.1,
                 "command_timeout_s": 0.5, "command_retries": 3},
    })


def ble_pod(tmp_path, link: LocalLink, *, pairing: bool, **cfg) -> EmulatedPod:
    """An emulated pod with BLE enabled in its pod.json; ``pairing``: the pairing window is
    open at its first boot (the flag file on its flash)."""
    d = tmp_path / "pod-01"
    d.mkdir(parents=True)
    if pairing:
        (d / "ble_pair.flag").write_bytes(b"1")
    return EmulatedPod("pod-01", d, seed=3, ble_link=link,
                       config=PodConfig(pod_id="pod-01", led_count=16, ble=True, **cfg))


async def test_bonded_host_streams_eeg_and_takes_commands_and_a_stranger_is_refused(tmp_path, mosquitto):
    link = LocalLink()
    pod = ble_pod(tmp_path, link, pairing=True)
    await pod.start()
    pod.unplug(detach=True)  # on a power bank: no USB host, so BLE carries the link
    cfg = config(mosquitto.port)
    bridge = MqttBridge(cfg)
    hub = Hub(cfg, bridge)
    keys = CentralKeyStore()  # hostd's bonds (BlueZ keeps them across connections)
    links: list[BumbleGattLink] = []
    transports: list[BleTransport] = []

    def central(_addr):
        links.append(BumbleGattLink(link, pod.ble.address, want_mtu=247, keystore=keys))
        return links[-1]

    async def serve(transport):
        transports.append(transport)
        await hub.serve(transport)

    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(hub.serve_commands()),
             asyncio.create_task(supervise(pod.ble.address, cfg.ble, serve, central))]
    try:
        # the firmware's advertising: its pod id as the name, the service UUID in the scan response
        await wait_until(lambda: pod.ble.advertising is not None, timeout=20, what="advertising")
        adv, resp = pod.ble.advertising
        assert b"\x07\x09pod-01" in adv and resp[2:] == bytes.fromhex("6e400001b5a3f393e0a9e50e24dcca9e")[::-1]
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=30,
                             what=f"online over BLE; pod log:\n{pod.tail()}")
            assert watch.json(f"{P}/pod-01/state")["port"] == f"ble:{pod.ble.address}"
            assert (tmp_path / "pod-01" / "ble_bonds.bin").stat().st_size > 0  # the pod stored the bond
            assert not (tmp_path / "pod-01" / "ble_pair.flag").exists()  # the window's flag is consumed
            await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) >= 5, timeout=30, what="EEG over BLE")
            await watch.publish(f"{P}/pod-01/set", {"id": "b1", "scene": {"effect": "solid", "color": [0, 0, 200]}})
            await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=10, what="result")
            assert watch.json(f"{P}/pod-01/set/result") == {"id": "b1", "ok": True, "ack": "ok"}
            await pod.leds.wait_for(lambda f: all(b > 0 and r == 0 for r, g, b in f.pixels()), timeout=5)
            # notifications as large as the negotiated MTU allows, never larger
            assert links[-1].mtu == 247 and max(len(w) for w in pod.ble.writes) <= 247 - ATT_HEADER
            assert pod.ble.notified_max == 247 - ATT_HEADER  # an EEG frame (~260 B) takes two
            assert transports[-1].notifications_dropped == 0

            # a reboot closes the pairing window (no flag any more); the bonded host comes back
            await pod.reboot()
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="offline")
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=30,
                             what=f"the bonded host back after a reboot; pod log:\n{pod.tail()}")
            n = len(watch.history[f"{P}/pod-01/eeg"])
            await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) > n + 3, timeout=10, what="EEG again")

            # a stranger's central: pairing outside the window is refused, and nothing flows
            tasks[-1].cancel()  # the host lets the pod go, so the stranger finds it free
            await asyncio.gather(tasks[-1], return_exceptions=True)
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="let go")
            await stranger_is_refused(link, pod)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await pod.stop()


async def stranger_is_refused(link: LocalLink, pod: EmulatedPod) -> None:
    refused = pod.ble.bonds_refused
    # pairs (Just Works) with a pod whose window is closed: the pod refuses to store the bond
    # and drops the link
    stranger = BumbleGattLink(link, pod.ble.address, address="F0:F0:F0:F0:F0:0B")
    got: list[bytes] = []
    dropped = asyncio.Event()
    stranger.on_disconnect(dropped.set)
    try:
        try:
            await asyncio.wait_for(stranger.connect(5), 10)
            await stranger.subscribe(NUS_TX, got.append)
            await stranger.write(NUS_RX, b"\x00\x01\x02\x00")
        except (TransportError, TimeoutError):  # the pod may drop it at any step
            dropped.set()
        await asyncio.wait_for(dropped.wait(), 8)
    finally:
        await stranger.disconnect()
    await wait_until(lambda: pod.ble.connection is None, timeout=5, what="the pod's radio without the stranger")
    assert pod.ble.bonds_refused == refused + 1
    assert got == []  # not one notification reached it
    # a central that never secures the link: its writes are refused by the stack, and the pod
    # drops it once the time to secure the link is up
    idle = BumbleGattLink(link, pod.ble.address, address="F0:F0:F0:F0:F0:0C", pair=False)
    dropped = asyncio.Event()
    idle.on_disconnect(dropped.set)
    writes = len(pod.ble.writes)
    try:
        await asyncio.wait_for(idle.connect(5), 10)
        await idle.subscribe(NUS_TX, got.append)
        with pytest.raises(Exception):  # noqa: B017  (insufficient encryption, from the stack)
            await idle._chars[NUS_RX].write_value(b"\x00\x01\x02\x00", with_response=True)
        await asyncio.wait_for(dropped.wait(), 8)
    finally:
        await idle.disconnect()
    assert len(pod.ble.writes) == writes and got == []


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
