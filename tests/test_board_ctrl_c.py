"""Ctrl-C on the REPL's port of an emulated board whose firmware runs, as an ESP32-S3 behaves.

The board (emulator/board.py) boots the real firmware from its filesystem, laid out
as the flash tool leaves it. A Ctrl-C on its REPL's tty stops main.py with a
KeyboardInterrupt, whose traceback the port shows, and the REPL answers there; the
watchdog the app armed (pod.json's watchdog_ms) is fed no more and resets the
board, and the app boots again. Other bytes sent while the app runs are dropped.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import serial
from helpers.wait import wait_until

from hypnolum import paths
from hypnolum.emulator.board import EmulatedBoard
from hypnolum.emulator.esp_rom import FlashFile
from hypnolum.emulator.flashed import lay_out
from hypnolum.flash import bundle, verify
from hypnolum.host import repl_port
from hypnolum.protocol.pod_json import PodJson

pytestmark = [pytest.mark.micropython, pytest.mark.timeout(90)]

WATCHDOG_MS = 3000


def _provisioned(workdir) -> EmulatedBoard:
    """A board as the flash tool leaves it: MicroPython's image, the app in slot a, pod.json."""
    board = EmulatedBoard("board-1", workdir, seed=1)
    lay_out(board.fs_dir, bundle.build(paths.FIRMWARE, "x86"), bytes(range(32)))
    (board.fs_dir / "pod.json").write_text(PodJson(pod_id="pod-cc", led_count=8, watchdog_ms=WATCHDOG_MS).to_json())
    flash = FlashFile(board.dir / "flash.bin")
    flash.write(0, b"\xe9")  # an image header where an ESP32-S3's starts: MicroPython boots
    flash.close()
    return board


async def _hear(port: serial.Serial, heard: bytearray, want: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while want not in heard:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {want!r} on the port within {timeout} s; heard {bytes(heard[-600:])!r}")
        heard += port.read(4096)
        await asyncio.sleep(0.02)


async def test_ctrl_c_stops_the_app_the_repl_answers_and_the_watchdog_boots_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPNOLUM_SYSFS_ROOT", str(tmp_path / "sys"))  # the board's USB device, as hosts read it
    board = _provisioned(tmp_path)
    await board.start(download=False)
    port = None
    try:
        assert board.mode == "firmware"
        pod = board.pod
        await wait_until(lambda: board.link_port is not None, timeout=20, what="the app's link")
        port = serial.Serial(str(board.port), timeout=0)
        # bytes other than Ctrl-C are dropped: nothing reads the REPL while the app runs
        dropped = board.counters.dropped_bytes
        port.write(b"print('no')\r")
        await wait_until(lambda: board.counters.dropped_bytes >= dropped + 12, what="bytes dropped")
        assert board.mode == "firmware" and pod.counters.keyboard_interrupts == 0

        # Ctrl-C and a line for the REPL at once: the CDC keeps what follows the Ctrl-C
        heard = bytearray()
        boots, resets = pod.counters.boots, pod.counters.watchdog_resets
        port.write(b"\x03print(6 * 7)\r")
        sent = time.monotonic()
        await _hear(port, heard, b"42")
        text = heard.decode(errors="replace")
        assert "Traceback (most recent call last):" in text and "KeyboardInterrupt" in text, text
        assert "launch.py" not in text and "[emulator]" not in text, text  # the board's output only
        assert text.index("KeyboardInterrupt") < text.index(">>> ") < text.index("42"), text
        assert board.mode == "repl" and board.counters.interrupts == 1 and pod.counters.keyboard_interrupts == 1
        assert pod.running and pod.counters.boots == boots  # stopped, not reset
        assert board.link_port is not None  # the app's USB function stays enumerated until a reset

        # nobody feeds the app's watchdog now: after its timeout it resets the board, the app boots again
        await board.wait_mode("firmware", timeout=10)
        elapsed = time.monotonic() - sent
        assert pod.counters.watchdog_resets == resets + 1 and pod.counters.boots == boots + 1
        assert board.counters.resets[-1] == "firmware"
        assert WATCHDOG_MS / 1000 - 0.5 < elapsed < 9, elapsed  # pod.json's timeout, not boot.py's 10 s
        hello = await asyncio.to_thread(verify.hello, repl_port.link_finder(str(board.port)), 20)
        assert hello["pod_id"] == "pod-cc"
        # and the REPL is gone with the reset: the port drops bytes again
        dropped = board.counters.dropped_bytes
        port.write(b"print('gone')\r")
        await wait_until(lambda: board.counters.dropped_bytes >= dropped + 14, what="bytes dropped again")
        assert board.mode == "firmware"
    finally:
        if port is not None:
            port.close()
        await board.stop()
