"""USB -> BLE fallback end to end: an emulated pod linked over USB (its CDC port, hostd's serial
transport) loses its cable; its link moves to the bonded BLE host that stood by (pod/ports.py),
hostd's session there goes online within 5 s, and the EEG stream goes on: the hole the move
left is replayed from the pod's ring, 0 samples lost. One transport drives the pod at a time."""
from __future__ import annotations

import asyncio
import time

import pytest
from bumble.link import LocalLink

from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.transport.ble import supervise

from helpers.ble_peer import BumbleGattLink, CentralKeyStore
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until
from test_transport_ble import P, ble_pod, config

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.timeout(90)]


async def test_pod_that_loses_usb_comes_back_over_ble_with_no_sample_lost(tmp_path, mosquitto):
    link = LocalLink()
    pod = ble_pod(tmp_path, link, pairing=True)
    await pod.start()
    cfg = config(mosquitto.port)
    bridge = MqttBridge(cfg)
    hub = Hub(cfg, bridge)
    keys = CentralKeyStore()
    ble_sessions = []

    async def serve_ble(transport):
        ble_sessions.append(transport)
        await hub.serve(transport)

    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(hub.serve_commands()),
             asyncio.create_task(hub.serve_port(str(pod.tty_path)))]
    try:
        async with Watcher(mosquitto.port) as watch:
            state = lambda: watch.json(f"{P}/pod-01/state") or {}  # noqa: E731
            await wait_until(lambda: state().get("link") == "online" and state().get("port") == str(pod.tty_path),
                             timeout=30, what="online over USB")
            # the USB link came up first and keeps the pod (pod/ports.py); the BLE host comes later
            tasks.append(asyncio.create_task(supervise(
                pod.ble.address, cfg.ble, serve_ble,
                lambda _a: BumbleGattLink(link, pod.ble.address, want_mtu=247, keystore=keys))))
            # the BLE host bonds and stands by: connected, secured, but the link stays on USB
            await wait_until(lambda: (tmp_path / "pod-01" / "ble_bonds.bin").exists() and ble_sessions
                             and pod.ble.connection is not None, timeout=20, what="the BLE host bonded")
            await wait_until(lambda: hub.eeg.streams.get("pod-01") and hub.eeg.streams["pod-01"].stats.samples > 500,
                             timeout=20, what="EEG over USB")
            assert hub.pods["pod-01"].transport.name == str(pod.tty_path)  # one session holds the pod
            assert state()["port"] == str(pod.tty_path)

            # the standing-by BLE session never took the pod: every state said so far names USB
            assert {st["port"] for st in watch.all_json(f"{P}/pod-01/state")} == {str(pod.tty_path)}
            stream = hub.eeg.streams["pod-01"]
            before = stream.stats.samples
            # the cable fails: for half a second nothing reaches the host, then it is out; what
            # the pod sent meanwhile is lost on the way, a hole the ring must fill
            pod.to_host_filter = lambda _data: b""
            await asyncio.sleep(0.5)
            pulled = time.monotonic()
            pod.unplug(detach=True)
            await wait_until(lambda: state().get("link") == "online" and state().get("port", "").startswith("ble:"),
                             timeout=10, what=f"online over BLE; pod log:\n{pod.tail()}")
            took = time.monotonic() - pulled
            assert took < 5.0, f"back over BLE after {took:.1f} s"
            assert hub.pods["pod-01"].transport.name == f"ble:{pod.ble.address}"
            assert hub.pods["pod-01"].state.counters.frames_bad == {}  # the move cut no frame
            # the stream goes on: two more seconds of samples, the hole replayed, nothing lost
            await wait_until(lambda: stream.stats.samples > before + 3 * 250 and stream.stats.held == 0
                             and stream.stats.replays_requested >= 1, timeout=20,
                             what=f"EEG over BLE with the hole replayed: {stream.stats}")
            s = stream.stats
            assert (s.samples_lost, s.gaps_unfilled, s.discontinuities) == (0, 0, 0), s
            assert s.samples_replayed >= 0.4 * 250 and s.gaps_filled >= 1, s  # the half second came back
            assert hub.eeg.streams["pod-01"] is stream  # the same stream across the two transports
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await pod.stop()
    print(f"USB -> BLE fallback: online over BLE {took:.2f} s after the cable was pulled; "
          f"{s.samples_replayed} samples replayed, {s.samples_lost} lost")
