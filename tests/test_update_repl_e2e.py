"""Updating a pod whose firmware predates updates over the link, end to end on real parts:
`hypnolum update` -> a private mosquitto -> hostd (a subprocess) -> an emulated board.

The board (emulator/board.py: the S3's native USB, the REPL's tty and the pod
link's own, and a sysfs tree describing them) holds the firmware released
before HELLO carried a message table (other_firmware.BEFORE_TABLE): no slots,
no update key, its app at the filesystem root, compiled for the emulator's
32-bit MicroPython. hostd serves the link's tty only (as udev names it) and
finds the REPL's beside it through sysfs (HYPNOLUM_SYSFS_ROOT); it asks the pod
into safe mode (SAFE_MODE), writes this checkout's firmware through its REPL
with the flash tool's upload, gives it its update key, and confirms the new
build once it is back: online, the update messages supported, pod.json kept.
A second old pod, without a board around it, stays silent in safe mode: no
REPL answers, the update ends in an error saying where the pod is left, nothing
is written, and a reset brings its old firmware back.
"""
from __future__ import annotations

import asyncio
import json
import sys

import pytest
from helpers import other_firmware
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until
from hypnolum.emulator.board import EmulatedBoard
from hypnolum.emulator.esp_rom import FlashFile
from hypnolum.emulator.pod import EmulatedPod
from hypnolum.protocol import messages
from hypnolum.protocol.pod_json import PodJson

from hypnolum import paths
from hypnolum.flash import bundle, updatekey

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods"
KEY = bytes(range(100, 132))
POD_JSON = PodJson(pod_id="pod-old1", led_count=12, brightness_max=180, night_brightness_max=40).to_json()


def _old_board(emu, old_app: bundle.Bundle) -> EmulatedBoard:
    """A board as a flash tool of the old firmware's time left it: the app at the root, pod.json."""
    board = EmulatedBoard("pod-old1", emu, seed=3)
    fs = board.fs_dir
    for f in old_app.root + old_app.slot:  # before slots: hal and pod/ at the root
        (fs / f.path).parent.mkdir(parents=True, exist_ok=True)
        (fs / f.path).write_bytes(f.data)
    (fs / "pod.json").write_text(POD_JSON)
    flash = FlashFile(board.dir / "flash.bin")
    flash.write(0, b"\xe9")  # an image header where an ESP32-S3's starts: MicroPython boots
    flash.close()
    return board


async def _update(config, *args) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hypnolum", "update", "--config", str(config), "--app-format", "x86", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode, out.decode()


async def test_an_old_pod_is_updated_through_its_repl_and_confirmed(tmp_path, mosquitto):
    old = other_firmware.released_tree(other_firmware.BEFORE_TABLE, tmp_path / "old")
    old_app = bundle.build(old / "firmware", "x86")
    new = bundle.build(paths.FIRMWARE, "x86")
    emu = tmp_path / "emu"
    board = _old_board(emu, old_app)
    keys = tmp_path / "update-keys"  # the flash tool's and hostd's: the old pod has no key in it yet
    # and a pod without a board around it: in safe mode its port stays silent, no REPL answers there
    silent = EmulatedPod("pod-old3", emu / "pod-old3", seed=5, micropypath=other_firmware.micropypath(old / "firmware"))
    hostd = Hostd(tmp_path, mosquitto.port, pods_dir=emu, ports=[str(silent.tty_path), f"{emu}/hypnolum/pod-*"],
                  env={"HYPNOLUM_SYSFS_ROOT": str(board.sysfs_root)},
                  extra=f'[updates]\nkeys_dir = "{keys}"\nrepl_timeout_s = 5\n')
    state = f"{P}/pod-old1/state"
    try:
        await board.start(download=False)
        await silent.start()
        assert board.mode == "firmware"
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            await wait_until(lambda: (watch.json(state) or {}).get("link") == "online", timeout=30, what="online")
            s = watch.json(state)
            assert s["unsupported"] == {n: "not known to the pod" for n in messages.UPDATE_MESSAGES}, s["unsupported"]
            assert s["build_hash"] != f"0x{new.build_hash:08x}"

            code, text = await _update(hostd.config, "--pod", "pod-old1", "--update-keys", str(keys), "--new-key",
                                       str(paths.FIRMWARE))
            assert code == 0, text + hostd.log_text()[-3000:]
            assert f"pod-old1: made its update key {keys / 'pod-old1.key'}" in text, text
            assert f"pod-old1: ok, build 0x{new.build_hash:08x} in " in text and "through its REPL" in text, text
            # the command has its answer; this watcher's copy of it may still be on its way
            result = await wait_until(lambda: watch.json(f"{P}/pod-old1/update/result"), timeout=10, what="result")
            assert (result["result"], result["path"], result["reason"]) == ("ok", "repl", None), result
            steps = [m["state"] for m in watch.all_json(f"{P}/pod-old1/update/progress")]
            assert steps[0] == "safe_mode" and "upload" in steps, steps
            assert "repl" in board.counters.resets  # it went through safe mode's REPL

            # back with the new build: the update messages known, confirmed, pod.json as it was
            await wait_until(lambda: (watch.json(state)["update"] or {}).get("state") == "confirmed", what="confirmed")
            s = watch.json(state)
            assert s["link"] == "online" and s["build_hash"] == f"0x{new.build_hash:08x}", s
            assert not set(s["unsupported"]) & set(messages.UPDATE_MESSAGES), s["unsupported"]
            assert s["capabilities"]["led_count"] == 12
            fs = board.fs_dir
            assert (fs / "pod.json").read_text() == POD_JSON
            assert (fs / "update.key").read_bytes() == updatekey.read(keys / "pod-old1.key")  # made by --new-key
            slots = json.loads((fs / "slots.json").read_text())
            assert (slots["active"], slots["trial"]) == ("a", 0), slots
            assert {f.path: (fs / "a" / f.path).read_bytes() for f in new.slot} == {f.path: f.data for f in new.slot}
            assert not (fs / "hal.mpy").exists() and not (fs / "pod").exists()  # the old app is gone
            assert "update of pod pod-old1 through its REPL (USB device 1-1)" in hostd.log_text()  # sysfs's
            assert board.link_port is not None and str(board.port) not in hostd.log_text()  # never served the REPL
            # the new build runs: EEG flows
            n = (s["eeg"] or {}).get("samples", 0)
            await wait_until(lambda: (watch.json(state)["eeg"] or {}).get("samples", 0) > n + 250, timeout=15,
                             what="EEG from the new build")

            # no REPL answers after SAFE_MODE: an error saying where the pod is left; nothing written
            other = f"{P}/pod-old3/state"
            await wait_until(lambda: (watch.json(other) or {}).get("link") == "online", timeout=10, what="pod-old3")
            build = watch.json(other)["build_hash"]
            code, text = await _update(hostd.config, "--pod", "pod-old3", "--update-keys", str(keys), "--new-key",
                                       str(paths.FIRMWARE))
            assert code == 1, text
            result = watch.json(f"{P}/pod-old3/update/result")
            assert (result["result"], result["path"]) == ("error", "repl"), result
            assert result["reason"] == (
                f"pod pod-old3: asked into safe mode, but no MicroPython REPL answered on {emu / 'pod-old3.tty'} "
                "within 5 s; nothing was written: the pod is in safe mode (LEDs dark) with its old firmware, which "
                "runs again at its next reset (RESET or power)"), result
            assert not (silent.dir / "a").exists() and not (silent.dir / "update.key").exists()
            await silent.reboot()  # RESET: its old firmware again, and hostd serves its port again
            await wait_until(lambda: watch.json(other)["link"] == "online", timeout=15, what="pod-old3 back")
            assert watch.json(other)["build_hash"] == build
    finally:
        hostd.kill()
        await board.stop()
        await silent.stop()
    assert "Traceback" not in hostd.log_text(), hostd.log_text()
