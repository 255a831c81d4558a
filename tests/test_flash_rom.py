"""The fake ESP32 ROM loader against the real esptool, and the emulated board's REPL against the real mpremote."""
from __future__ import annotations

import asyncio
import struct
import sys

import pytest

from hypnolum.emulator import esp_rom
from hypnolum.emulator.board import EmulatedBoard

ESPTOOL = [sys.executable, "-m", "esptool", "--before", "no-reset", "--after", "no-reset", "--no-stub"]


async def _run(*cmd: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def board(tmp_path):
    b = EmulatedBoard("b1", tmp_path, mac=bytes.fromhex("246f28a1b2c3"))
    await b.start(download=True)
    yield b
    await b.stop()


async def test_esptool_detects_esp32_and_reads_mac(board):
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "read-mac")
    assert rc == 0, out
    assert "Detecting chip type... ESP32" in out
    assert "MAC:                24:6f:28:a1:b2:c3" in out


@pytest.mark.parametrize("compress", ["--compress", "--no-compress"])
async def test_esptool_writes_and_verifies_the_image(board, tmp_path, compress):
    image = esp_rom.make_image(70_000, seed=3)
    path = tmp_path / "fw.bin"
    path.write_bytes(image)
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "write-flash", compress, "0x1000", str(path))
    assert rc == 0, out
    assert "Hash of data verified." in out
    assert board.flash.read(0x1000, len(image)) == image
    assert board.flash.read(0x1000 + len(image), 16) == b"\xff" * 16
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "verify-flash", "0x1000", str(path))
    assert rc == 0 and "Verification successful (digest matched)" in out, out
    # a different file must fail the same MD5 check
    path.write_bytes(image[:-1] + bytes([image[-1] ^ 1]))
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "verify-flash", "0x1000", str(path))
    assert rc != 0 and "digest mismatch" in out.lower(), out


async def test_wrong_chip_is_reported_by_esptool(tmp_path):
    b = EmulatedBoard("odd", tmp_path, chip="esp8266")
    await b.start(download=True)
    try:
        rc, out = await _run(*ESPTOOL, "-p", str(b.port), "read-mac")
    finally:
        await b.stop()
    assert "ESP8266" in out


def test_rom_refuses_a_block_with_a_bad_checksum(tmp_path):
    flash = esp_rom.FlashFile(tmp_path / "flash.bin")
    rom = esp_rom.FakeEspRom(flash, bytes(6))

    def request(op: int, data: bytes, chk: int = 0) -> bytes:
        rom.feed(esp_rom.slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data))
        return rom.take()

    assert request(esp_rom.FLASH_BEGIN, struct.pack("<IIII", 4096, 1, 1024, 0x1000)).endswith(b"\x00" * 4 + b"\xc0")
    block = bytes(range(256)) * 4
    bad = request(esp_rom.FLASH_DATA, struct.pack("<IIII", len(block), 0, 0, 0) + block, chk=0x00)
    assert bad[-5:-1] == b"\x01\x07\x00\x00"  # checksum error status
    good = request(esp_rom.FLASH_DATA, struct.pack("<IIII", len(block), 0, 0, 0) + block,
                   chk=esp_rom.xor_checksum(block))
    assert good[-5:-1] == b"\x00\x00\x00\x00"
    assert flash.read(0x1000, len(block)) == block
    assert rom.counters.errors == 1
    flash.close()


async def test_mpremote_uses_the_emulated_repl(tmp_path):
    """The real mpremote CLI: exec, fs cp, soft reset (the board restarts its REPL without main.py)."""
    b = EmulatedBoard("r1", tmp_path, mac=bytes.fromhex("246f28000001"))
    await b.start(download=True)
    b.flash.write(0x1000, esp_rom.make_image(1000))  # an image, so reset leaves the ROM
    await b.reset()
    assert b.mode == "repl"
    src = tmp_path / "hello.txt"
    src.write_bytes(b"written through the raw REPL\n")
    mpremote = [sys.executable, "-m", "mpremote", "connect", str(b.port)]
    try:
        rc, out = await _run(*mpremote, "exec", "import machine,binascii; print(binascii.hexlify(machine.unique_id()))")
        assert rc == 0 and "246f28000001" in out, out
        rc, out = await _run(*mpremote, "fs", "cp", str(src), ":hello.txt", "+", "fs", "ls")
        assert rc == 0 and "hello.txt" in out, out
        assert (b.fs_dir / "hello.txt").read_bytes() == src.read_bytes()
        rc, out = await _run(*mpremote, "soft-reset", "+", "exec", "print(6*7)")
        assert rc == 0 and "42" in out, out
        assert b.counters.soft_reboots >= 1 and b.mode == "repl"
    finally:
        await b.stop()
