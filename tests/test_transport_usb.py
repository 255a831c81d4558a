"""USB transport end to end: hostd's pyusb transport opens the firmware's own vendor interface.

Emulated pods with ``usb_link: "vendor"`` run the real firmware, whose pod/usbvendor.py
gives machine.USBDevice its descriptors; the emulator presents that device on usb.sock and
tests/helpers/fake_usb.py is the libusb layer under pyusb (enumeration, strings, claims,
reset, bulk transfers at full-speed timing). hostd's own session, hub and MQTT bridge run
unchanged against mosquitto.
"""
from __future__ import annotations

import asyncio

import pytest

from hypnolum.emulator.pod import EmulatedPod
from hypnolum.emulator.runner import Emulator

from helpers.fake_usb import UsbBus
from helpers.mqtt_watch import Watcher
from helpers.usb_hostd import UsbHostd, usb_config
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.timeout(120)]
P = "hypnolum/v1/pods"


async def test_vendor_pod_is_found_by_vid_pid_serial_served_unplugged_and_replugged_losing_no_eeg(tmp_path, mosquitto):
    async with Emulator(2, tmp_path / "emu", seed=5, led_count=16, usb_link="vendor") as emu:
        await emu.wait_links(20)
        bus = UsbBus(tmp_path / "emu")
        try:
            async with UsbHostd(usb_config(mosquitto.port, "usb-host", serial="pod-01"), bus.backend()) as hostd, \
                    Watcher(mosquitto.port) as watch:
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20,
                                 what="online over USB")
                dev = bus.devices["pod-01"]
                assert watch.json(f"{P}/pod-01/state")["port"] == f"usb:1-{dev.address}"
                assert dev.resets == 1 and dev.claims.keys() == {2}  # reset on open, the vendor interface claimed
                assert list(hostd.scanner.active) == [f"1-{dev.address}"]  # pod-02's serial is not in the config
                await wait_until(lambda: len(watch.history[f"{P}/pod-01/eeg"]) >= 5, timeout=10, what="EEG over USB")
                await watch.publish(f"{P}/pod-01/set", {"id": "u1", "scene": {"effect": "solid", "color": [0, 150, 0]}})
                await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=10, what="result")
                assert watch.json(f"{P}/pod-01/set/result") == {"id": "u1", "ok": True, "ack": "ok"}
                await emu["pod-01"].leds.wait_for(
                    lambda f: all(g > 0 and r == 0 and b == 0 for r, g, b in f.pixels()), timeout=5)

                # unplug: the session ends, the pod goes offline and keeps its EEG; replugged, the
                # device is enumerated again (a new address) and the gap is replayed
                stream = hostd.hub.eeg.streams["pod-01"]
                bus.unplug("pod-01")
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10,
                                 what="offline")
                await wait_until(lambda: not hostd.scanner.active, timeout=5, what="session ended")
                before = stream.stats.samples
                await asyncio.sleep(1.0)
                bus.replug("pod-01")
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20,
                                 what="replugged")
                again = bus.devices["pod-01"]
                assert again is not dev and again.address > dev.address
                assert watch.json(f"{P}/pod-01/state")["port"] == f"usb:1-{again.address}"
                await wait_until(lambda: stream.stats.samples > before + 2 * 250, timeout=10, what="EEG again")
                await wait_until(lambda: stream.stats.gaps_filled >= 1, timeout=10, what="the gap replayed")
                st = stream.stats
                assert st.samples_replayed >= 250 and st.samples_lost == 0 and st.gaps_unfilled == 0, st
                assert st.discontinuities == 0, st  # the pod did not reboot: the same stream
                assert "pod-02" not in hostd.hub.pods
                assert dev.lost_bytes == 0 and again.lost_bytes == 0  # no bulk read timed out holding data
        finally:
            bus.close()


async def test_a_second_host_or_transport_to_the_same_pod_is_refused_with_the_reason(tmp_path, mosquitto):
    async with Emulator(1, tmp_path / "emu", seed=6, led_count=8, usb_link="vendor") as emu:
        # the same pod id again, on a CDC link (the serial transport): a second way to "pod-01"
        twin = EmulatedPod("pod-01", tmp_path / "twin" / "pod-01", seed=7, led_count=8)
        await twin.start()
        await asyncio.gather(emu.wait_links(20), twin.wait_link(20))
        bus = UsbBus(tmp_path / "emu")
        try:
            async with UsbHostd(usb_config(mosquitto.port, "host-a"), bus.backend()) as a, \
                    Watcher(mosquitto.port) as watch:
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20,
                                 what="online over USB")
                port = watch.json(f"{P}/pod-01/state")["port"]
                assert port.startswith("usb:")

                # another transport on the same host: refused by hostd's claims, and said in its state
                serial = asyncio.create_task(a.hub.serve_port(str(twin.tty_path)))
                reason = f"pod id pod-01 is already connected on {port}"
                await wait_until(lambda: a.hub.refused.get(str(twin.tty_path)) == reason, timeout=10,
                                 what="the serial twin refused")
                await wait_until(lambda: (watch.json("hypnolum/v1/hosts/host-a/state") or {})
                                 .get("refused_links", {}).get(str(twin.tty_path)) == reason,
                                 timeout=5, what="host state says so")
                assert a.hub.pods["pod-01"].transport.name == port  # the first holder keeps it
                serial.cancel()
                await asyncio.gather(serial, return_exceptions=True)

                # another program (a second hostd) on the same bus: the interface is claimed
                async with UsbHostd(usb_config(mosquitto.port, "host-b"), bus.backend()) as b:
                    await wait_until(lambda: b.hub.refused.get(port),
                                     timeout=10, what="host-b refused")
                    assert "claimed by another program" in b.hub.refused[port]
                    assert bus.devices["pod-01"].resets == 1  # host-b never reset a pod it could not claim
                    await wait_until(lambda: (watch.json("hypnolum/v1/hosts/host-b/state") or {})
                                     .get("refused_links", {}).get(port), timeout=5, what="host-b state")
                    assert not b.hub.pods
                assert watch.text(f"{P}/pod-01/availability") == "online"
                assert a.hub.pods["pod-01"].transport.name == port
        finally:
            bus.close()
            await twin.stop()


async def test_a_pulled_cable_is_seen_by_the_pod_at_once_and_the_replugged_device_enumerates(tmp_path):
    # nothing in flight when the cable goes: no transfer of the host's would tell the pod
    async with Emulator(1, tmp_path / "emu", seed=8, led_count=8, usb_link="vendor") as emu:
        await emu.wait_links(20)
        bus = UsbBus(tmp_path / "emu")
        try:
            (first,) = await asyncio.to_thread(bus.scan)
            bus.unplug("pod-01")
            bus.replug("pod-01")
            again = await asyncio.wait_for(asyncio.to_thread(bus.scan), 30)
            assert [d.pod_id for d in again] == ["pod-01"]
            assert again[0] is not first and again[0].address > first.address
            assert first.gone and not again[0].gone
        finally:
            bus.close()
