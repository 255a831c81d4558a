"""tools/flash.py end to end against emulated boards: real esptool, real mpremote, real firmware.

Each board is an emulated ESP32-S3 that starts in download mode with a blank
16 MB flash and an empty filesystem. The tool runs as a subprocess exactly as a technician runs it
(``--emulator``: no DTR/RTS on a pty, ROM loader without stub, x86 .mpy).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import serial
from serial.tools import list_ports

from hypnolum import paths
from hypnolum.emulator import esp_rom
from hypnolum.emulator.board import EmulatedBoard
from hypnolum.flash import bundle, flashlog, updatekey, verify
from hypnolum.host import repl_port
from hypnolum.protocol import codec

TOOL = [sys.executable, str(paths.ROOT / "tools" / "flash.py")]


@pytest.fixture(autouse=True)
def _bench(tmp_path, monkeypatch):
    # the technician's working directory: the flash log and update-keys/ land here
    monkeypatch.chdir(tmp_path)
    # the emulated boards' USB devices, as the tool reads sysfs (emulator/usb_sysfs.py)
    monkeypatch.setenv("HYPNOLUM_SYSFS_ROOT", str(tmp_path / "sys"))


async def flash(*args: str, timeout: float = 90) -> tuple[int, str]:
    env = dict(os.environ, COLUMNS="250")
    proc = await asyncio.create_subprocess_exec(*TOOL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, cwd=os.getcwd())
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "ESP32_GENERIC_S3-SPIRAM_OCT-20260101-v1.28.0.bin"
    path.write_bytes(esp_rom.make_image(150_000, seed=1))
    return path


@pytest.fixture(scope="module")
def app_x86():
    return bundle.build(paths.FIRMWARE, "x86")


@pytest.fixture
async def boards(tmp_path):
    made: list[EmulatedBoard] = []

    async def make(n: int = 1, wrong_chip: int = 0) -> list[EmulatedBoard]:
        for i in range(1, n + 1):
            b = EmulatedBoard(f"board-{i}", tmp_path, seed=i, chip="esp32" if i == wrong_chip else "esp32s3")
            await b.start(download=True)
            made.append(b)
        return made

    yield make
    for b in made:
        await b.stop()


async def test_one_board_flashed_provisioned_and_verified(boards, image, app_x86, tmp_path):
    (board,) = await boards(1)
    log = tmp_path / "flash-log.jsonl"
    # what MicroPython's first boot leaves in a new filesystem (ports/esp32/modules/inisetup.py:47-55):
    # not the pod firmware, nothing to restart in safe mode
    (board.fs_dir / "boot.py").write_text("# This file is executed on every boot (including wake-boot from deepsleep)\n"
                                          "#import esp\n#esp.osdebug(None)\n#import webrepl\n#webrepl.start()\n")
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(image), "--pod-id", "pod-07",
                          "--led-count", "12", "--psu-ma", "3000", "--ble-pair", "--log", str(log))
    assert rc == 0, out
    assert "safe mode" not in out and board.counters.resets == ["download", "repl", "firmware"], out
    assert re.search(r"1 ok, 0 failed", out)
    assert (board.fs_dir / "ble_pair.flag").read_bytes() == b"1"  # a pod with ble on opens its pairing window at boot
    assert board.flash.read(0x0, image.stat().st_size) == image.read_bytes()  # the S3 offset
    assert board.mode == "firmware"
    # every app file went into the board's filesystem, whole, with no temp file left behind
    for f in app_x86.files:
        assert (board.fs_dir / f.path).read_bytes() == f.data
    assert not list(board.fs_dir.rglob("*.tmp"))
    # the app in slot a, active and confirmed; the pod's own update key, kept for hostd
    assert {p.name for p in board.fs_dir.iterdir() if p.is_dir()} == {"a"}
    state = json.loads((board.fs_dir / "slots.json").read_text())  # as boot.py rewrote it, booting
    assert (state["active"], state["trial"], state["safe"]) == ("a", 0, 0)
    assert (board.fs_dir / "update.key").read_bytes() == updatekey.read(tmp_path / "update-keys" / "pod-07.key")
    (rec,) = flashlog.read(log)
    assert rec["result"] == "ok" and rec["pod_id"] == "pod-07" and rec["port"] == str(board.port)
    assert "notes" not in rec
    assert rec["mac"] == board.mac_text and rec["chip"] == "ESP32-S3"
    assert rec["app_hash"] == f"{app_x86.build_hash:#010x}" and rec["app_format"] == "x86"
    assert rec["fingerprint"] == f"{codec.FINGERPRINT:#010x}"
    assert len(rec["image_sha256"]) == 64 and rec["time"].endswith("+00:00")
    # the pod link is its own tty beside the REPL's, found as the tool found it; the pod there
    # is what was uploaded, and its LEDs run with the provisioned count
    assert board.link_port is not None
    assert repl_port.link_finder(str(board.port))() == os.path.realpath(board.link_port)
    hello = await asyncio.to_thread(verify.hello, str(board.link_port), 10)
    assert (hello["pod_id"], hello["build_hash"], hello["led_count"]) == ("pod-07", app_x86.build_hash, 12)
    frame = await board.pod.leds.wait_frames(1)
    assert board.pod.leds.last_rgb() is not None and len(board.pod.leds.last_rgb()) == 12 * 3, frame

    # verify-only passes on the untouched board ...
    rc, out = await flash("--emulator", "--verify-only", "--port", str(board.port), "--pod-id", "pod-07",
                          "--led-count", "12", "--log", str(log))
    assert rc == 0, out
    # ... and fails once a file on the board is not what was uploaded (the pod hashes its own files)
    with open(board.fs_dir / "a" / "pod" / "render.mpy", "ab") as f:
        f.write(b"# edited on the board\n")
    await board.reset()
    rc, out = await flash("--emulator", "--verify-only", "--port", str(board.port), "--pod-id", "pod-07",
                          "--led-count", "12", "--log", str(log))
    assert rc == 1, out
    last = flashlog.read(log)[-1]
    assert last["result"] == "failed" and last["kind"] == "verify-mismatch" and last["step"] == "verify"
    assert f"expected {app_x86.build_hash:#010x}" in last["error"] and "build_hash is" in last["error"]


async def test_mismatched_firmware_build_fails_verify(boards, image, tmp_path):
    """Firmware speaking another protocol build uploads fine and is refused at verify."""
    (board,) = await boards(1)
    fw = tmp_path / "firmware"
    shutil.copytree(paths.FIRMWARE, fw)
    wire = fw / "pod" / "wire.py"
    text, n = re.subn(r"FINGERPRINT = const\((0x[0-9a-fA-F]+)\)", "FINGERPRINT = const(0x12345678)", wire.read_text())
    assert n == 1
    wire.write_text(text)
    log = tmp_path / "log.jsonl"
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(image), "--firmware", str(fw),
                          "--app-format", "x86", "--log", str(log))
    assert rc == 1, out
    (rec,) = flashlog.read(log)
    assert rec["kind"] == "verify-mismatch"
    assert "fingerprint is 0x12345678" in rec["error"] and "build_hash" not in rec["error"]
    assert rec["pod_id"] == "pod-" + board.mac.hex()  # the default id comes from the MAC


async def test_batch_one_failure_does_not_stop_the_others(boards, image, app_x86, tmp_path):
    made = await boards(3, wrong_chip=2)
    log = tmp_path / "log.jsonl"
    args = [a for b in made for a in ("--port", str(b.port))]
    rc, out = await flash("--emulator", *args, "--image", str(image), "--log", str(log), timeout=150)
    assert rc == 1, out
    assert "2 ok, 1 failed" in out
    recs = {r["port"]: r for r in flashlog.read(log)}
    assert len(recs) == 3
    bad = recs[str(made[1].port)]
    assert bad["result"] == "failed" and bad["kind"] == "wrong-chip"
    assert "this board is an ESP32, pods use an ESP32-S3" in bad["error"], bad
    for b in (made[0], made[2]):
        r = recs[str(b.port)]
        assert r["result"] == "ok" and r["pod_id"] == "pod-" + b.mac.hex(), r
        assert b.mode == "firmware"
    assert made[1].mode == "download"


async def test_clear_errors(boards, image, tmp_path):
    (board,) = await boards(1)
    log = tmp_path / "log.jsonl"
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(tmp_path / "nope.bin"))
    assert rc == 2 and "nope.bin: image not found" in out, out
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"PK\x03\x04 not an image")
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(junk))
    assert rc == 2 and "not an ESP image" in out, out
    esp32 = tmp_path / "ESP32_GENERIC-v1.28.0.bin"  # the old pods' image: chip id 0
    esp32.write_bytes(esp_rom.make_image(4000, chip="esp32"))
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(esp32))
    assert rc == 2 and "chip id 0 (ESP32), not an ESP32-S3 (9)" in out, out
    rc, out = await flash("--emulator", "--port", str(tmp_path / "ttyUSB9"), "--image", str(image))
    assert rc == 2 and "ttyUSB9: no such port" in out, out
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(image), "--led-order", "XYZ")
    assert rc == 2 and "led_order" in out, out
    assert not log.exists()  # nothing was attempted, nothing written to any board
    assert board.counters.host_bytes == {}

    holder = serial.Serial(str(board.port), exclusive=True)  # hostd, or a serial monitor left open
    try:
        rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(image), "--log", str(log))
    finally:
        holder.close()
    assert rc == 1 and "port busy" in out, out
    assert flashlog.read(log)[-1]["kind"] == "port-busy"


async def test_no_board_found():
    if [p for p in list_ports.comports() if p.vid is not None]:
        pytest.skip("USB serial devices are attached; not probing real hardware from a test")
    rc, out = await flash("--all", "--image", "/nonexistent.bin", "--no-image")
    assert rc == 2 and "no board found" in out, out


async def test_a_running_pod_is_restarted_in_safe_mode_and_reflashed(boards, image, tmp_path):
    """Re-provisioning a board whose firmware runs: the tool's Ctrl-C stops the app, and it restarts
    the board in safe mode (no watchdog to reset it mid-upload) before writing; a board whose REPL
    never answers still gets the safe-mode advice."""
    (board,) = await boards(1)
    rc, out = await flash("--emulator", "--port", str(board.port), "--image", str(image), "--watchdog-ms", "3000",
                          "--log", str(tmp_path / "a.jsonl"))
    assert rc == 0, out
    assert board.mode == "firmware"
    # an app from an update in slot b, and the layout before slots: the re-flash leaves neither
    (board.fs_dir / "b" / "pod").mkdir(parents=True)
    (board.fs_dir / "b" / "pod" / "app.mpy").write_bytes(b"M")
    (board.fs_dir / "pod").mkdir()
    (board.fs_dir / "pod" / "old.mpy").write_bytes(b"M")
    (board.fs_dir / "hal.mpy").write_bytes(b"M")
    fleet = tmp_path / "fleet.key"
    fleet.write_text("ab" * 32 + "\n")
    pod, log = board.pod, tmp_path / "b.jsonl"
    rc, out = await flash("--emulator", "--no-image", "--port", str(board.port), "--pod-id", "pod-99",
                          "--update-key", str(fleet), "--log", str(log))
    assert rc == 0, out
    assert f"{board.port}: the firmware was running: restarted it in safe mode" in out, out
    assert board.counters.interrupts == 1 and pod.counters.keyboard_interrupts == 1
    # then the safe-mode boot's REPL (no watchdog armed: pod.json's 3 s did not reset it
    # mid-upload), and the new build after the tool's reset
    assert board.counters.resets[-3:] == ["firmware", "repl", "firmware"], board.counters.resets
    assert pod.counters.watchdog_resets == 0
    rec = flashlog.read(log)[-1]
    assert rec["result"] == "ok" and rec["pod_id"] == "pod-99", rec
    assert rec["notes"] == ["the firmware was running: restarted it in safe mode"], rec
    assert not (board.fs_dir / "safe_mode.flag").exists()
    assert json.loads((board.fs_dir / "pod.json").read_text())["pod_id"] == "pod-99"
    assert (board.fs_dir / "update.key").read_bytes() == bytes.fromhex("ab" * 32)
    assert not (board.fs_dir / "b").exists() and not (board.fs_dir / "pod").exists()
    assert not (board.fs_dir / "hal.mpy").exists()
    fleet.write_text("not a key\n")
    rc, out = await flash("--emulator", "--no-image", "--port", str(board.port), "--update-key", str(fleet))
    assert rc == 2 and "fleet.key: not an update key" in out, out

    # SAFE held at reset: nothing runs, the REPL answers; the tool cannot tell, and restarts it all the same
    await board.reset(safe_mode=True)
    rc, out = await flash("--emulator", "--no-image", "--port", str(board.port), "--pod-id", "pod-99", "--log", str(log))
    assert rc == 0, out
    assert flashlog.read(log)[-1]["notes"] == ["the pod firmware is on the board: restarted it in safe mode "
                                               "(no watchdog there)"]
    assert board.counters.interrupts == 1

    # a board whose REPL never answers (its image erased: the ROM prints "invalid header", no MicroPython)
    board.flash.erase(0, 1)
    await board.reset()
    assert board.mode == "no-image"
    rc, out = await flash("--emulator", "--no-image", "--port", str(board.port), "--boot-timeout", "2",
                          "--log", str(log))
    assert rc == 1, out
    rec = flashlog.read(log)[-1]
    assert rec["step"] == "upload" and "no MicroPython REPL" in rec["error"] and "safe mode" in rec["error"], rec


async def test_interrupted_upload_leaves_only_whole_files(boards, image, app_x86, tmp_path):
    """The cable goes at the 5th chunk: every file under its real name is whole (old or new), never half."""
    from hypnolum.flash import upload
    from hypnolum.flash.image import flash_image, load_image

    (board,) = await boards(1)
    await asyncio.to_thread(flash_image, str(board.port), load_image(image), before="no-reset",
                            after="soft-reset", stub=False)
    await board.wait_mode("repl")
    chunks = 0

    class Unplugged(Exception):
        pass

    def cut(stage: str, done: int, total: int) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 5:
            raise Unplugged

    with pytest.raises(Unplugged):
        await asyncio.to_thread(upload.upload, str(board.port), app_x86, lambda mac: b"{}", progress=cut)
    by_path = {f.path: f.data for f in app_x86.files}
    written = [p for p in board.fs_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".tmp" for p in written)  # the interrupted one
    finals = [p for p in written if p.suffix != ".tmp"]
    assert finals  # some files made it before the cut
    for p in finals:
        assert p.read_bytes() == by_path[str(p.relative_to(board.fs_dir))], p
