"""The SAFE_MODE command and the sensors, end to end on one emulated pod: the
real firmware under MicroPython, driven through its pty as hostd drives a board."""
import asyncio
import time

import pytest

from hypnolum.emulator.pod import EmulatedPod
from hypnolum.protocol import messages

from helpers.pty_host import PtyHost

pytestmark = pytest.mark.micropython


Host = PtyHost


@pytest.fixture
async def pod(tmp_path):
    p = EmulatedPod("pod-s", tmp_path / "emu" / "pod-s", seed=3, led_count=10)
    await p.start()
    await p.wait_link(15)
    yield p
    await p.stop()


async def test_safe_mode_command_resets_into_safe_mode_once(pod):
    host = PtyHost(pod.tty_path)
    try:
        host.connect()
        hello = await host.wait_for(lambda f: f.name == "hello", what="HELLO")
        seq = host.send("scene", {"effect": "solid", "brightness": 255, "color": [255, 255, 255], "transition_ms": 0,
                                  "period_ms": 0, "palette": "warm", "flags": 0, "params": []})
        assert (await host.answer(seq)).name == "ack"
        await pod.leds.wait_for(lambda f: max(f.rgb) > 100, timeout=10)

        nack = await host.answer(host.send("safe_mode", {"confirm": 1}))  # without the confirm value: refused
        assert nack.name == "nack" and str(nack.fields["reason"]) == "bad_param"
        assert pod.counters.boots == 1

        t_cmd = time.monotonic()
        ack = await host.answer(host.send("safe_mode", {"confirm": messages.SAFE_MODE_CONFIRM}))
        assert ack.name == "ack"  # answered before the reset
        await pod.wait_boots(2)
        deadline = time.monotonic() + 10
        while "safe mode, firmware not started" not in pod.tail():
            assert time.monotonic() < deadline, pod.tail()
            await asyncio.sleep(0.05)
        # safe mode: dark, no firmware on the link, the interpreter stays up (a board's REPL)
        dark = await pod.leds.wait_for(lambda f: f.host_time > t_cmd and not any(f.rgb), timeout=5)
        assert dark.count == 10
        host.connect()
        with pytest.raises(AssertionError):
            await host.wait_for(lambda f: f.name == "hello" and f.fields["boot_id"] != hello.fields["boot_id"],
                                timeout=3)
        assert pod.running and not pod.link_connected
        assert pod.counters.crashes == 0 and pod.counters.reset_requests == 1
        assert not (pod.dir / "safe_mode.flag").exists()  # consumed

        await pod.reboot()  # one-shot: the next reset runs the firmware again
        await pod.wait_link(15)
        host.connect()
        again = await host.wait_for(lambda f: f.name == "hello" and f.fields["boot_id"] != hello.fields["boot_id"],
                                    what="HELLO after the safe-mode boot")
        assert again.fields["pod_id"] == "pod-s"
    finally:
        host.close()


async def test_power_telemetry_follows_the_emulated_sensors(pod):
    host = PtyHost(pod.tty_path)
    try:
        host.connect()
        await host.wait_for(lambda f: f.name == "hello", what="HELLO")
        p = await host.wait_for(lambda f: f.name == "power" and f.fields["temp_c16"] == 25 * 16, what="POWER at 25 C")
        full = p.fields["full_ma"]
        assert full == 2400 and p.fields["limit_ma"] == full and p.fields["flags"] == 0
        assert p.fields["vin_mv"] == 5000
        pod.set_sensors(temp_c=60)
        p = await host.wait_for(lambda f: f.name == "power" and f.fields["temp_c16"] == 60 * 16, what="POWER at 60 C")
        assert p.fields["limit_ma"] == full - (full - full // 4) // 2
        assert p.fields["flags"] & messages.POWER_FLAG_THERMAL
        pod.set_sensors(temp_c=None)  # the thermometer stops answering: the floor within a few seconds
        p = await host.wait_for(lambda f: f.name == "power" and f.fields["flags"] & messages.POWER_FLAG_TEMP_FAULT,
                                what="POWER with TEMP_FAULT")
        assert p.fields["limit_ma"] == full // 4
        log = await host.wait_for(lambda f: f.name == "log" and "LED power" in f.fields["text"], what="LOG")
        assert str(log.fields["level"]) == "warning"
        pod.set_sensors(temp_c=25, vin_mv=4200)
        p = await host.wait_for(lambda f: f.name == "power" and f.fields["flags"] & messages.POWER_FLAG_VIN_CUTOFF,
                                what="POWER with VIN_CUTOFF")
        assert p.fields["limit_ma"] == 0 and p.fields["vin_mv"] == 4200
    finally:
        host.close()


@pytest.mark.broker
async def test_mqtt_safe_mode_via_hostd(tmp_path, mosquitto):
    """hostd turns {"safe_mode": true} into SAFE_MODE; its state shows the pod's POWER frames."""
    from hypnolum.emulator.runner import Emulator

    from helpers.hostd import Hostd
    from helpers.mqtt_watch import Watcher
    from helpers.wait import wait_until

    P = "hypnolum/v1/pods/pod-01"
    async with Emulator(1, tmp_path / "emu") as emu:
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            try:
                await wait_until(lambda: watch.text(f"{P}/availability") == "online", timeout=20, what="online")
                state = await wait_until(lambda: (watch.json(f"{P}/state") or {}).get("power"), timeout=10,
                                         what="power in the pod's state")
                assert state["full_ma"] == 2400 and state["vin_mv"] == 5000
                pod = emu["pod-01"]
                await watch.publish(f"{P}/set", {"id": "sm1", "safe_mode": True})
                result = await wait_until(lambda: watch.json(f"{P}/set/result"), timeout=10, what="set result")
                assert result == {"id": "sm1", "ok": True, "ack": "ok"}
                await pod.wait_boots(2)
                await wait_until(lambda: "safe mode, firmware not started" in pod.tail(), timeout=10,
                                 what="safe-mode boot")
                await wait_until(lambda: watch.text(f"{P}/availability") == "offline", timeout=15,
                                 what="offline while in safe mode")
            finally:
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()
