"""Boot order on an emulated pod: the LEDs go dark and the watchdog is armed
before the app is imported, so a start-up that hangs is reset, dark.

The firmware tree is a copy of firmware/ whose pod/app.py hangs at import (as
an app stuck in a driver would), compiled as every emulated pod's is.
"""
import shutil

import pytest

from hypnolum import paths
from hypnolum.emulator import image
from hypnolum.emulator.pod import EmulatedPod

from helpers.wait import wait_until

pytestmark = pytest.mark.micropython


@pytest.fixture
def hanging_firmware(tmp_path):
    fw = tmp_path / "firmware"
    shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "pod" / "app.py").write_text("while True:\n    pass\n")
    return image.build([paths.EMULATOR_SHIMS, fw], cache=tmp_path / "image") + [".frozen"]


async def test_a_start_up_that_hangs_is_dark_and_reset_by_the_watchdog(tmp_path, hanging_firmware):
    pod = EmulatedPod("pod-01", tmp_path / "emu" / "pod-01", seed=3, led_count=30, micropypath=hanging_firmware)
    await pod.start()
    try:
        # boot.py's first frame: the strip pod.json describes, dark
        await pod.leds.wait_for(lambda f: f.count == 30 and not any(f.rgb), timeout=20)
        await wait_until(lambda: pod.wdt_timeout_ms is not None, timeout=10, what="the watchdog armed by boot.py")
        assert pod.wdt_timeout_ms == 10000
        await wait_until(lambda: pod.counters.watchdog_resets >= 1, timeout=30,
                         what="the watchdog resetting the hung start-up")
        await wait_until(lambda: pod.counters.boots >= 2, timeout=10, what="the pod booting again")
    finally:
        await pod.stop()


async def test_the_real_firmware_shows_the_dark_boot_frame_first(tmp_path):
    pod = EmulatedPod("pod-02", tmp_path / "emu" / "pod-02", seed=4, led_count=30)
    await pod.start()
    try:
        await pod.leds.wait_for(lambda f: f.count == 30, timeout=20)
        first = pod.leds.history[0]
        assert first.count == 30 and not any(first.rgb)
        # the app re-arms it with pod.json's watchdog_ms once everything runs
        await wait_until(lambda: pod.wdt_timeout_ms == 5000, timeout=10, what="the app's watchdog")
    finally:
        await pod.stop()
